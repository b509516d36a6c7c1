"""Defaults that several entry points share, defined once (a leaf module: no imports).

The adapter, `dllm-eval generate`, `eval-all`, the synth evaluator and the schedulers' own
parameter dataclasses read these names instead of repeating the numbers.
"""

SCHEDULER = "fast_dllm"  # the adapter's scheduler when model_args names none
SEED = 1234  # the adapter's and the matrix's seed when none is given
GEN_LENGTH = 128  # a scheduler's canvas when the caller gives no length (lm-eval passes max_gen_toks)
BLOCK_LENGTH = 32  # Fast-dLLM's and LLaDA's evaluation block; also the synth tasks' block
MAX_GEN_TOKS = 256  # lm-eval's own default when a task sets no max_gen_toks

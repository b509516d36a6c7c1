"""Synthetic, seed-generated evaluation tasks with difficulty tiers (`synth_math`, `synth_code`).

They need no download, so the embedded tiny model can be evaluated offline end to end. Each
module exposes lm-eval hooks (`load`, `doc_to_text`, `process_results`) used by tasks/synth/,
plus `stream(seed)`, the endless training stream of `dllm-eval train-tiny`.
"""

TASK_MODULES = ("dllm_eval.synth.synth_math", "dllm_eval.synth.synth_code")

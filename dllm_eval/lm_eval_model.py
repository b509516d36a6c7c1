"""`dllm_adaptive`: the lm-eval model adapter for diffusion LMs.

    lm_eval --model dllm_adaptive \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,scheduler=fast_dllm,cache=dual,threshold=0.9 \\
        --tasks gsm8k

Every scheduler parameter is a model argument. Arguments are checked against the chosen
scheduler *before* any weights load, so a typo costs a second, not a model load.

Generation follows Fast-dLLM's `eval_llada.py`, with its known problems fixed:
- instruct models get the whole (few-shot) prompt as one user turn of the chat template
  (auto-detected from the name, which catches LLaDA-1.5 too; override with chat_template=);
- `max_gen_toks` becomes `gen_length`, rounded up to a whole block, unless gen_length is given;
- the canvas is always decoded in full; stop strings are applied afterwards: decode with special
  tokens, cut at the first stop string (EOS included), re-tokenize, decode without specials;
- batches are left-padded *with an attention mask*, so batch size never changes the output.

Each request's trace (NFE, commits per step, confidences, adaptation events, latency) is written
as one JSONL line to `<trace_dir>/traces_<task>.jsonl`, keyed by (task, doc_id, repeat). Without
trace_dir the traces go to `<output_path>/traces/` when run from the lm_eval CLI.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections import defaultdict
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences
from tqdm import tqdm

from dllm_eval import __version__, defaults
from dllm_eval.errors import UserError
from dllm_eval.frontend import load_front_end
from dllm_eval.models import EMBEDDED_MODEL_DIR
from dllm_eval.schedulers import SCHEDULERS, get_scheduler, param_fields
from dllm_eval.settings import coerce
from dllm_eval.trace_row import TraceRow, append_trace_rows, trace_file

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
ADAPTER_ARGS = ("pretrained", "scheduler", "dtype", "seed", "trace_dir", "chat_template", "mc_num",
                "mc_batch_size", "mc_cfg_scale", "max_length")


def output_path_from_argv(argv: list[str]) -> str | None:
    """The stock lm_eval CLI does not tell the model where results go; read --output_path from argv."""
    for i, arg in enumerate(argv):
        if arg in ("--output_path", "-o") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output_path="):
            return arg.split("=", 1)[1]
    return None


@register_model("dllm_adaptive")
class DiffusionLM(LM):
    """lm-eval model for LLaDA-format diffusion LMs with a pluggable decoding scheduler."""

    def __init__(
        self,
        pretrained: str | None = None,
        scheduler: str = defaults.SCHEDULER,
        dtype: str = "auto",
        seed: int = defaults.SEED,
        trace_dir: str | None = None,
        chat_template: str | bool = "auto",
        mc_num: int = 128,
        mc_batch_size: int = 32,
        mc_cfg_scale: float = 0.0,
        max_length: int | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        **scheduler_args: Any,
    ) -> None:
        super().__init__()
        # ---- validate everything before touching the weights --------------------------------
        if scheduler not in SCHEDULERS:
            raise UserError(f"model_args scheduler={scheduler!r} is unknown; choose one of: {', '.join(sorted(SCHEDULERS))}")
        valid = param_fields(scheduler)
        unknown = sorted(set(scheduler_args) - set(valid))
        if unknown:
            raise UserError(
                f"model_args {', '.join(unknown)} not understood by scheduler {scheduler!r}; valid keys: "
                f"{', '.join(sorted(set(valid) | set(ADAPTER_ARGS)))} (pass batch_size/device as --batch_size/--device)"
            )
        self.scheduler_name = scheduler
        self.scheduler_args = {k: coerce(v, valid[k], k) for k, v in scheduler_args.items()}
        self.fixed_gen_length = self.scheduler_args.get("gen_length")
        # the unit gen_length is rounded up to; schedulers without blocks (dream) take max_gen_toks as is
        self.block_length = int(self.scheduler_args.get("block_length", valid["block_length"]) or 1)
        # Build once with a representative gen_length so invalid combinations fail now.
        probe_len = self.fixed_gen_length or self.block_length * max(1, math.ceil(defaults.MAX_GEN_TOKS / self.block_length))
        get_scheduler(scheduler, **{**self.scheduler_args, "gen_length": probe_len})
        if isinstance(batch_size, str) and batch_size.startswith("auto"):
            raise UserError("--batch_size auto is not supported by dllm_adaptive; pass an integer such as 8")
        try:
            self.batch_size_per_gpu = int(batch_size)
        except (TypeError, ValueError):
            raise UserError(f"--batch_size must be an integer, got {batch_size!r}") from None
        if self.batch_size_per_gpu < 1:
            raise UserError(f"--batch_size must be >= 1, got {batch_size}")
        if dtype != "auto" and dtype not in DTYPES:
            raise UserError(f"model_args dtype={dtype!r}; choose auto, {', '.join(DTYPES)}")
        if chat_template not in ("auto", True, False, "true", "false"):
            raise UserError(f"model_args chat_template={chat_template!r}; choose auto, true or false")
        self.mc_num, self.mc_batch_size, self.mc_cfg_scale = int(mc_num), int(mc_batch_size), float(mc_cfg_scale)
        if self.mc_num < 1 or self.mc_batch_size < 1 or self.mc_num % self.mc_batch_size:
            raise UserError(f"mc_num={mc_num} must be a positive multiple of mc_batch_size={mc_batch_size}")

        self._device = self._pick_device(device)
        pretrained = pretrained or self._embedded_default()
        self.pretrained = str(pretrained)
        self.seed = int(seed)
        self.trace_dir = Path(trace_dir) if trace_dir else self._default_trace_dir()
        self._trace_files: set[Path] = set()

        # ---- load -----------------------------------------------------------------------------
        torch_dtype = None if dtype == "auto" else DTYPES[dtype]
        self.front = load_front_end(self.pretrained, device=self._device, dtype=torch_dtype, chat=chat_template,
                                    max_length=int(max_length) if max_length else None)
        self.model, self.tokenizer = self.front.model, self.front.tokenizer
        self.max_length = int(max_length or self.model.config.max_sequence_length)
        self.front.max_length = self.max_length
        self.generator = torch.Generator(device=self._device).manual_seed(self.seed)
        self.totals: dict[str, float] = defaultdict(float)

    # ---- setup helpers --------------------------------------------------------------------------
    @staticmethod
    def _pick_device(device: str | None) -> torch.device:
        if device is None or device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("dllm_adaptive: --device %s requested but CUDA is unavailable; using the CPU", device)
            return torch.device("cpu")
        return torch.device(device)

    @staticmethod
    def _embedded_default() -> Path:
        if not (EMBEDDED_MODEL_DIR / "config.json").is_file():
            raise UserError(f"no pretrained= given and the embedded model is missing at {EMBEDDED_MODEL_DIR}")
        return EMBEDDED_MODEL_DIR

    @staticmethod
    def _default_trace_dir() -> Path | None:
        out = output_path_from_argv(sys.argv)
        if out is None:
            return None
        out_path = Path(out)
        return (out_path.parent if out_path.suffix == ".json" else out_path) / "traces"

    # ---- lm-eval properties -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def eot_token_id(self) -> int:
        return int(self.model.config.eos_token_id)

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Used by lm-eval's --apply_chat_template; our own templating is then skipped."""
        self.front.templated_elsewhere = True
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) if chat_template else None

    def get_model_info(self) -> dict[str, Any]:
        """Merged into results['config']: what decoded, with which settings, and run totals."""
        totals = dict(self.totals)
        if totals.get("wall_s"):
            totals["tokens_per_s"] = totals.get("gen_tokens", 0.0) / totals["wall_s"]
        if totals.get("requests"):
            totals["mean_nfe"] = totals.get("nfe", 0.0) / totals["requests"]
        return {
            "dllm_eval": {
                "version": __version__,
                "pretrained": self.pretrained,
                "scheduler": self.scheduler_name,
                "scheduler_args": self.scheduler_args,
                "resolved_params": self._resolved_params(self.fixed_gen_length or self.block_length),
                "dtype": str(self.model.dtype).removeprefix("torch."),
                "device": str(self._device),
                "seed": self.seed,
                "chat_template_applied": self.front.use_chat and not self.front.templated_elsewhere,
                "trace_dir": str(self.trace_dir) if self.trace_dir else None,
                "torch_version": torch.__version__,
                "totals": totals,
            }
        }

    def _resolved_params(self, gen_length: int) -> dict[str, Any]:
        sched = get_scheduler(self.scheduler_name, **{**self.scheduler_args, "gen_length": gen_length})
        return {f.name: getattr(sched.params, f.name) for f in fields(sched.params)}

    # ---- generation -------------------------------------------------------------------------------
    def _gen_length(self, max_gen_toks: int) -> int:
        if self.fixed_gen_length:
            return int(self.fixed_gen_length)
        return self.block_length * max(1, math.ceil(max_gen_toks / self.block_length))

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        repeat_counter: dict[tuple[str, Any], int] = defaultdict(int)
        keyed = []
        for req in requests:
            task, doc_id = (req.metadata[0], req.metadata[1]) if req.metadata else ("unknown", req.idx)
            repeat = repeat_counter[(task, doc_id)]
            repeat_counter[(task, doc_id)] += 1
            keyed.append((req.args[0], req.args[1], task, doc_id, repeat))

        collator = Collator(keyed, sort_fn=lambda x: (-len(x[0]), x[0]), group_fn=lambda x: x[1], group_by="gen_kwargs")
        results: list[str] = []
        traces_by_task: dict[str, list[TraceRow]] = defaultdict(list)
        bar = tqdm(total=len(keyed), disable=disable_tqdm or self.rank != 0, desc=f"dllm_adaptive[{self.scheduler_name}]")
        for batch_id, chunk in enumerate(collator.get_batched(n=self.batch_size, batch_fn=None)):
            contexts, gen_kwargs = [c[0] for c in chunk], dict(chunk[0][1])
            until = handle_stop_sequences(gen_kwargs.pop("until", None), self.tokenizer.decode([self.eot_token_id]))
            max_gen_toks = next((int(gen_kwargs[k]) for k in ("max_gen_toks", "max_new_tokens", "max_tokens")
                                 if gen_kwargs.get(k) is not None), defaults.MAX_GEN_TOKS)
            gen_length = self._gen_length(max_gen_toks)
            extra = {}
            if gen_kwargs.get("do_sample") and float(gen_kwargs.get("temperature", 0.0)) > 0 and "temperature" not in self.scheduler_args:
                extra["temperature"] = float(gen_kwargs["temperature"])
            sched = get_scheduler(self.scheduler_name, **{**self.scheduler_args, **extra, "gen_length": gen_length})
            decoded = self.front.generate(contexts, sched, until, generator=self.generator)
            out = decoded.output
            config = {f.name: getattr(sched.params, f.name) for f in fields(sched.params)}
            for row, item in enumerate(chunk):
                text, n_tokens, trace = decoded.texts[row], decoded.gen_tokens[row], out.traces[row]
                results.append(text)
                self.cache_hook.add_partial("generate_until", (item[0], item[1]), text)
                self.totals["requests"] += 1
                self.totals["nfe"] += trace["nfe"]
                self.totals["gen_tokens"] += n_tokens
                traces_by_task[item[2]].append(TraceRow(
                    task=item[2], doc_id=item[3], repeat=item[4], scheduler=self.scheduler_name, config=config,
                    seed=self.seed, nfe=trace["nfe"], batch_nfe=out.batch_nfe, gen_tokens=n_tokens,
                    gen_length=gen_length, latency_s=round(out.wall_s, 6), batch_id=batch_id, batch_size=len(chunk),
                    batch_wall_s=round(out.wall_s, 6), prompt_tokens=decoded.prompt_tokens[row], rank=self.rank,
                    steps=trace["steps"], events=trace["events"], metrics=trace["metrics"]))
            self.totals["batch_nfe"] += out.batch_nfe
            self.totals["wall_s"] += out.wall_s
            bar.update(len(chunk))
        bar.close()
        self._write_traces(traces_by_task)
        return collator.get_original(results)

    def _write_traces(self, traces_by_task: dict[str, list[TraceRow]]) -> None:
        if self.trace_dir is None or self.rank != 0:
            return
        for task, rows in traces_by_task.items():
            path = trace_file(self.trace_dir, task)
            append_trace_rows(path, rows, fresh=path not in self._trace_files)  # a new run replaces an old file
            self._trace_files.add(path)

    # ---- likelihood ----------------------------------------------------------------------------------
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        trailing = len(context) - len(context.rstrip())
        if trailing:
            continuation, context = context[-trailing:] + continuation, context[:-trailing]
        whole = self.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        ctx = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        return ctx, whole[len(ctx):]

    @torch.inference_mode()
    def _mc_loglikelihood(self, prefix: list[int], target: list[int]) -> float:
        """LLaDA's Monte-Carlo estimate of log p(target | prefix) (a lower bound, the ELBO).

        Each of mc_num samples masks exactly x of the L target tokens, with x stratified over
        the batch; loss = sum of masked-token cross-entropies / (x / L). The prompt is never masked.
        """
        if not target:
            return 0.0
        mask_id = self.model.config.mask_token_id
        seq = torch.tensor(prefix + target, device=self._device)
        plen, tlen, b = len(prefix), len(target), self.mc_batch_size
        losses = []
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        for _ in range(self.mc_num // b):
            k = int(torch.randint(1, tlen + 1, (1,), generator=gen))
            counts = torch.linspace(k, k + (b - 1) * tlen / b, b).round().long()
            counts = ((counts - 1) % tlen) + 1
            noisy = seq.repeat(b, 1)
            masked = torch.zeros((b, plen + tlen), dtype=torch.bool, device=self._device)
            for row, count in enumerate(counts.tolist()):
                picks = torch.randperm(tlen, generator=gen)[:count] + plen
                masked[row, picks.to(self._device)] = True
            noisy[masked] = mask_id
            logits = self.model(noisy).float()
            if self.mc_cfg_scale > 0:
                uncond = noisy.clone()
                uncond[:, :plen] = mask_id
                un = self.model(uncond).float()
                logits = un + (self.mc_cfg_scale + 1) * (logits - un)
            ce = torch.nn.functional.cross_entropy(logits[masked], seq.repeat(b, 1)[masked], reduction="none")
            p_mask = (counts.to(self._device).float() / tlen).repeat_interleave(masked.sum(dim=1))
            losses.append(float((ce / p_mask).sum() / b))
        return -sum(losses) / len(losses)

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from dllm_eval.models.registry import family_of

        if family_of(self.model).name != "llada":
            raise UserError(f"dllm_adaptive: log-likelihood (multiple-choice) requests are implemented for LLaDA only "
                            f"(LLaDA's Monte-Carlo estimate); {family_of(self.model).name} checkpoints need their own "
                            "estimator, so use generate_until tasks with this model")
        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="dllm_adaptive loglikelihood"):
            prefix, target = self._encode_pair(*req.args)
            if len(prefix) + len(target) > self.max_length:
                raise UserError(f"loglikelihood request of {len(prefix) + len(target)} tokens exceeds max_length={self.max_length}")
            out.append((self._mc_loglikelihood(prefix, target), False))
        return out

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "dllm_adaptive: rolling log-likelihood (perplexity tasks) has no diffusion estimator here; "
            "use generate_until tasks or loglikelihood (multiple-choice) tasks"
        )


def describe_model_args() -> str:
    """Human-readable list of adapter and scheduler arguments (for docs and errors)."""
    lines = [f"adapter: {', '.join(ADAPTER_ARGS)}"]
    for name, spec in sorted(SCHEDULERS.items()):
        params = asdict(spec.cls.Params())
        params.update(spec.preset)
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    return "\n".join(lines)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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

Scale-out (see README "Running on a cluster"):
- `accelerate launch -m lm_eval --model dllm_adaptive ...` runs data parallel the way lm-eval's
  HFLM does: lm-eval stripes documents over ranks, this adapter supplies rank, world size, a
  device per rank and the collectives; trace rows are gathered to rank 0, which writes the one
  trace file per task. lm-eval pads short ranks with copies of their last request; the adapter
  never decodes those copies and strips their answers in `barrier()` (which lm-eval calls right
  after appending them), so they reach neither traces, totals nor logged samples.
- every request draws from its own random stream, seeded by (seed, task, doc_id, repeat)
  (`request_seed`), so sampled outputs do not depend on batch size, batch mates or rank count;
- each finished batch is appended to a per-rank journal (`<trace_dir>/journal/`); with
  `resume=true` (default: $DLLM_EVAL_RESUME, which eval-all sets), requests found there (same model, settings, prompt and key) are not decoded
  again, and their trace rows are reused, so an interrupted long run continues where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
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
from dllm_eval.cell_record import sandbox_min_isolation
from dllm_eval.data import data_dir
from dllm_eval.errors import UserError
from dllm_eval.frontend import load_front_end
from dllm_eval.models import EMBEDDED_MODEL_DIR
from dllm_eval.schedulers import SCHEDULERS, get_scheduler, param_fields
from dllm_eval.settings import coerce
from dllm_eval.trace_row import JOURNAL_DIR, TraceRow, append_trace_rows, trace_file

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
ADAPTER_ARGS = ("pretrained", "scheduler", "dtype", "seed", "trace_dir", "chat_template", "mc_num",
                "mc_batch_size", "mc_cfg_scale", "max_length", "resume", "compile")


def request_seed(seed: int, task: str, doc_id: Any, repeat: int) -> int:
    """The seed of one request's random stream: a stable hash of (seed, task, doc_id, repeat).

    Why a hash per request rather than one generator per run: a shared stream hands each request
    whatever draws its batch mates left, so sampled answers would change with batch size, batch
    composition, the number of ranks and the order of requests.
    """
    digest = hashlib.sha256(f"{int(seed)}|{task}|{doc_id}|{int(repeat)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def padding_mask(requests: Sequence[Instance]) -> list[bool]:
    """Which entries are lm-eval's rank padding: copies of an Instance beyond its `repeats`.

    Under data parallelism the evaluator lists each Instance `repeats` times, then appends
    further copies of the last Instance to even out the ranks (evaluator.py, "padding_requests").
    """
    seen: dict[int, int] = defaultdict(int)
    out = []
    for req in requests:
        seen[id(req)] += 1
        out.append(seen[id(req)] > max(1, int(getattr(req, "repeats", None) or 1)))
    return out


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
        resume: bool | str | None = None,
        compile: str = "auto",
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
        data_dir()  # a set-but-missing DLLM_EVAL_DATA_DIR fails now, not when the run's record is written
        self.mc_num, self.mc_batch_size, self.mc_cfg_scale = int(mc_num), int(mc_batch_size), float(mc_cfg_scale)
        if self.mc_num < 1 or self.mc_batch_size < 1 or self.mc_num % self.mc_batch_size:
            raise UserError(f"mc_num={mc_num} must be a positive multiple of mc_batch_size={mc_batch_size}")

        self.accelerator = None
        self._device = self._pick_device(device)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self._setup_distributed()
        pretrained = pretrained or self._embedded_default()
        self.pretrained = str(pretrained)
        self.seed = int(seed)
        self.trace_dir = Path(trace_dir) if trace_dir else self._default_trace_dir()
        self._trace_files: set[Path] = set()
        # default from the environment: eval-all sets DLLM_EVAL_RESUME=1 for its cells
        self.resume = coerce(resume if resume is not None else os.environ.get("DLLM_EVAL_RESUME", "0"), False, "resume")
        self._journal: dict[str, dict[str, Any]] | None = None  # key -> {"text", "trace"}, read lazily
        self._journal_fresh = not self.resume  # a run without resume starts its rank's journal anew
        self._padded: list[Instance] = []

        # ---- load -----------------------------------------------------------------------------
        torch_dtype = None if dtype == "auto" else DTYPES[dtype]
        self.front = load_front_end(self.pretrained, device=self._device, dtype=torch_dtype, chat=chat_template,
                                    max_length=int(max_length) if max_length else None, compile=str(compile))
        self.compile_mode = self.front.compile_mode  # none | graphs | inductor (models.graphs)
        self.model, self.tokenizer = self.front.model, self.front.tokenizer
        self.max_length = int(max_length or self.model.config.max_sequence_length)
        self.front.max_length = self.max_length
        self.generator = torch.Generator(device=self._device).manual_seed(self.seed)
        self.totals: dict[str, float] = defaultdict(float)

    # ---- setup helpers --------------------------------------------------------------------------
    def _setup_distributed(self) -> None:
        """Data parallel under `accelerate launch` (HFLM's pattern): one process per device,
        the global process index as rank (lm-eval stripes documents by it), the device accelerate
        assigned to this process (the CLI --device is ignored, as HFLM does)."""
        from datetime import timedelta

        from accelerate import Accelerator, InitProcessGroupKwargs

        accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])
        if accelerator.num_processes > 1:
            self.accelerator = accelerator
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes
            dev = accelerator.device  # "cpu:0" under MULTI_CPU, which safetensors refuses
            self._device = torch.device("cpu") if dev.type == "cpu" else torch.device(str(dev))
            log.info("dllm_adaptive: rank %d of %d on %s", self._rank, self._world_size, self._device)
        else:  # every process would evaluate every document and write the same files
            raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but accelerate set up one process "
                            f"({accelerator.distributed_type}); without GPUs launch with ACCELERATE_USE_CPU=1 "
                            "accelerate launch --multi_gpu --num_processes N (gloo)")

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

    # ---- collectives (lm-eval's evaluator calls these when world_size > 1) -----------------------
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.accelerator is None else self.accelerator.gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if self.world_size == 1:
            return [obj]
        result: list[Any] | None = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        """lm-eval calls this right after it appended each response to its Instance's `resps`;
        rank padding copies appended answers to the last real Instance, so drop them here."""
        for req in self._padded:
            del req.resps[max(1, int(req.repeats or 1)):]
        self._padded = []
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

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
        decoded_tokens = totals.pop("decoded_gen_tokens", 0.0)
        if totals.get("wall_s"):  # summed over ranks; resumed requests did not run here
            totals["tokens_per_s"] = decoded_tokens / totals["wall_s"]
        if totals.get("requests"):
            totals["mean_nfe"] = totals.get("nfe", 0.0) / totals["requests"]
        info: dict[str, Any] = {
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
                # the code sandbox's floor, when a user lowered it for this run (see dllm_eval.scoring)
                "sandbox_min_isolation": sandbox_min_isolation(),
                "totals": totals,
            }
        }
        if self.rank == 0:
            info["dllm_eval"]["record"] = self._cell_record(info["dllm_eval"])
        return info

    def _cell_record(self, info: dict[str, Any]) -> dict[str, Any]:
        """What else than the scheduler could change this run's numbers (`dllm_eval.cell_record`):
        eval-all copies it to <cell>/record.json and the report refuses to compare cells that differ."""
        from dllm_eval.cell_record import build_record

        return build_record(
            pretrained=self.pretrained, dtype=info["dtype"], device_type=self._device.type,
            compile_mode=str(getattr(self, "compile_mode", "none")),
            sandbox_min_isolation=info["sandbox_min_isolation"],
            scheduler={"scheduler": self.scheduler_name, "scheduler_args": self.scheduler_args, "seed": self.seed,
                       "trace_dir": info["trace_dir"]},
        )

    def _resolved_params(self, gen_length: int) -> dict[str, Any]:
        sched = get_scheduler(self.scheduler_name, **{**self.scheduler_args, "gen_length": gen_length})
        return {f.name: getattr(sched.params, f.name) for f in fields(sched.params)}

    # ---- generation -------------------------------------------------------------------------------
    def _gen_length(self, max_gen_toks: int) -> int:
        if self.fixed_gen_length:
            return int(self.fixed_gen_length)
        return self.block_length * max(1, math.ceil(max_gen_toks / self.block_length))

    def _request_key(self, context: str, gen_kwargs: dict[str, Any], task: str, doc_id: Any, repeat: int) -> str:
        """Identity of one request's decode for the resume journal: everything its answer depends on."""
        ident = [__version__, self.pretrained, self.scheduler_name, self.scheduler_args, str(self.model.dtype),
                 self.max_length, self.front.use_chat and not self.front.templated_elsewhere, self.seed,
                 task, doc_id, repeat, context, gen_kwargs]
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def _request_generators(self, chunk: list[tuple[Any, ...]]) -> list[torch.Generator]:
        """One generator per row, seeded by `request_seed` (see the module docstring)."""
        return [torch.Generator(device=self._device).manual_seed(request_seed(self.seed, item[2], item[3], item[4]))
                for item in chunk]

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        if self.world_size > 1 and getattr(self.cache_hook, "dbdict", None) is not None:
            raise UserError("dllm_adaptive: lm_eval --use_cache is not supported under accelerate (a rank whose "
                            "requests are all cached would skip the trace gather); use model_args resume=true")
        padded = padding_mask(requests) if self.world_size > 1 else [False] * len(requests)
        repeat_counter: dict[tuple[str, Any], int] = defaultdict(int)
        keyed = []
        for req, pad in zip(requests, padded):
            if pad:
                continue
            task, doc_id = (req.metadata[0], req.metadata[1]) if req.metadata else ("unknown", req.idx)
            repeat = repeat_counter[(task, doc_id)]
            repeat_counter[(task, doc_id)] += 1
            key = self._request_key(req.args[0], req.args[1], task, doc_id, repeat)
            keyed.append((req.args[0], req.args[1], task, doc_id, repeat, key))
        self._padded += [req for req, pad in zip(requests, padded) if pad]

        # requests an interrupted earlier run finished (resume=true) are not decoded again
        journal = self._read_journal()
        answers: dict[str, str] = {}
        rows: list[TraceRow] = []
        calls = {"requests": 0.0, "nfe": 0.0, "gen_tokens": 0.0, "batch_nfe": 0.0, "wall_s": 0.0,
                 "decoded_gen_tokens": 0.0, "resumed_requests": 0.0}
        for item in keyed:
            entry = journal.get(item[5])
            if entry is not None and item[5] not in answers:
                answers[item[5]] = entry["text"]
                row = TraceRow.from_dict(entry["trace"])
                rows.append(row)
                calls["requests"] += 1
                calls["resumed_requests"] += 1
                calls["nfe"] += row.nfe
                calls["gen_tokens"] += row.gen_tokens
        todo = [item for item in keyed if item[5] not in answers]
        if journal:
            print(f"dllm_adaptive: rank {self.rank} resumes {len(keyed) - len(todo)} finished request(s), "
                  f"{len(todo)} left", file=sys.stderr, flush=True)

        collator = Collator(todo, sort_fn=lambda x: (-len(x[0]), x[0]), group_fn=lambda x: x[1], group_by="gen_kwargs")
        bar = tqdm(total=len(keyed), initial=len(keyed) - len(todo), disable=disable_tqdm or self.rank != 0,
                   desc=f"dllm_adaptive[{self.scheduler_name}]")
        for batch_id, chunk in enumerate(collator.get_batched(n=self.batch_size, batch_fn=None)):
            # a deep copy: handle_stop_sequences appends EOS to the `until` list in place, which would
            # change the logged arguments of whichever request happened to lead its batch
            contexts, gen_kwargs = [c[0] for c in chunk], copy.deepcopy(chunk[0][1])
            until = handle_stop_sequences(gen_kwargs.pop("until", None), self.tokenizer.decode([self.eot_token_id]))
            max_gen_toks = next((int(gen_kwargs[k]) for k in ("max_gen_toks", "max_new_tokens", "max_tokens")
                                 if gen_kwargs.get(k) is not None), defaults.MAX_GEN_TOKS)
            gen_length = self._gen_length(max_gen_toks)
            extra = {}
            if gen_kwargs.get("do_sample") and float(gen_kwargs.get("temperature", 0.0)) > 0 and "temperature" not in self.scheduler_args:
                extra["temperature"] = float(gen_kwargs["temperature"])
            sched = get_scheduler(self.scheduler_name, **{**self.scheduler_args, **extra, "gen_length": gen_length})
            # Greedy decoding draws nothing and keeps the run's generator as before; sampling gets
            # one stream per request.
            sampling = sched.params.temperature > 0 or sched.params.remasking == "random"
            generator = self._request_generators(chunk) if sampling else self.generator
            decoded = self.front.generate(contexts, sched, until, generator=generator)
            out = decoded.output
            config = {f.name: getattr(sched.params, f.name) for f in fields(sched.params)}
            batch_rows = []
            for row, item in enumerate(chunk):
                text, n_tokens, trace = decoded.texts[row], decoded.gen_tokens[row], out.traces[row]
                answers[item[5]] = text
                self.cache_hook.add_partial("generate_until", (item[0], item[1]), text)
                calls["requests"] += 1
                calls["nfe"] += trace["nfe"]
                calls["gen_tokens"] += n_tokens
                calls["decoded_gen_tokens"] += n_tokens
                batch_rows.append(TraceRow(
                    task=item[2], doc_id=item[3], repeat=item[4], scheduler=self.scheduler_name, config=config,
                    seed=self.seed, nfe=trace["nfe"], batch_nfe=out.batch_nfe, gen_tokens=n_tokens,
                    gen_length=gen_length, latency_s=round(out.wall_s, 6), batch_id=f"{self.rank}:{batch_id}"
                    if self.world_size > 1 else batch_id, batch_size=len(chunk),
                    batch_wall_s=round(out.wall_s, 6), prompt_tokens=decoded.prompt_tokens[row], rank=self.rank,
                    steps=trace["steps"], events=trace["events"], metrics=trace["metrics"]))
            self._append_journal([(item[5], answers[item[5]], r) for item, r in zip(chunk, batch_rows)])
            rows += batch_rows
            calls["batch_nfe"] += out.batch_nfe
            calls["wall_s"] += out.wall_s
            bar.update(len(chunk))
        bar.close()
        self._collect(rows, calls)
        by_request = {item[5]: answers[item[5]] for item in keyed}
        # padding copies answer like the request they copy (lm-eval drops them; see barrier())
        out_texts, real = [], iter(keyed)
        last = ""
        for pad in padded:
            if not pad:
                last = by_request[next(real)[5]]
            out_texts.append(last)
        return out_texts

    def _collect(self, rows: list[TraceRow], calls: dict[str, float]) -> None:
        """Bring every rank's trace rows and totals to rank 0, which writes one trace file per task."""
        parts = self.gather_object((rows, calls), dst=0) if self.world_size > 1 else [(rows, calls)]
        if self.rank != 0 or parts is None:
            return
        traces_by_task: dict[str, list[TraceRow]] = defaultdict(list)
        for part_rows, part_calls in parts:
            for key, value in part_calls.items():
                self.totals[key] += value
            for row in part_rows:
                traces_by_task[row.task].append(row)
        for task_rows in traces_by_task.values():
            task_rows.sort(key=lambda r: (str(type(r.doc_id)), r.doc_id, r.repeat))
        self._write_traces(traces_by_task)

    # ---- the resume journal ------------------------------------------------------------------------
    def _journal_path(self) -> Path | None:
        return None if self.trace_dir is None else self.trace_dir / JOURNAL_DIR / f"rank{self.rank}.jsonl"

    def _read_journal(self) -> dict[str, dict[str, Any]]:
        """Finished requests of earlier attempts, from every rank's journal (any world size).

        A line cut short by a kill is skipped; its request is simply decoded again.
        """
        if self._journal is None:
            self._journal = {}
            if self.resume and self.trace_dir is not None and (self.trace_dir / JOURNAL_DIR).is_dir():
                for path in sorted((self.trace_dir / JOURNAL_DIR).glob("rank*.jsonl")):
                    for line in path.read_text(encoding="utf-8").splitlines():
                        try:
                            entry = json.loads(line)
                            self._journal[entry["key"]] = {"text": entry["text"], "trace": entry["trace"]}
                        except (json.JSONDecodeError, KeyError, TypeError):
                            continue
        return self._journal

    def _append_journal(self, entries: list[tuple[str, str, TraceRow]]) -> None:
        path = self._journal_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w" if self._journal_fresh else "a", encoding="utf-8") as fh:
            for key, text, row in entries:
                fh.write(json.dumps({"key": key, "text": text, "trace": asdict(row)}, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._journal_fresh = False

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
        padded = padding_mask(requests) if self.world_size > 1 else [False] * len(requests)
        self._padded += [req for req, pad in zip(requests, padded) if pad]
        out: list[tuple[float, bool]] = []
        for req, pad in tqdm(list(zip(requests, padded)), disable=disable_tqdm or self.rank != 0,
                             desc="dllm_adaptive loglikelihood"):
            if pad:  # rank padding: answer like the copied request, dropped in barrier()
                out.append(out[-1])
                continue
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

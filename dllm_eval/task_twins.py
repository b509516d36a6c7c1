"""Stock lm-eval task names and their dllm_* twins under tasks/: one-line hints instead of tracebacks.

Why: a new user types `lm_eval --model dllm_adaptive --tasks gsm8k`. With the hub reachable that
works unchanged. Offline it used to end in a 50-line traceback ("Couldn't reach 'openai/gsm8k' on
the Hub") although `dllm_gsm8k` is the same task reading $DLLM_EVAL_DATA_DIR. And stock
`humaneval`/`mbpp` run model-written code through lm-eval's `code_eval`, outside dllm-eval's
sandbox, which nothing pointed out.

`install()` runs at interpreter start (from `_lmeval_register`, the .pth hook), so it serves both
`lm_eval` and `python -m dllm_eval.lm_eval_cli`. It costs nothing unless the command line names
`--tasks`; then it
  * prints one line when `--model dllm_adaptive` runs a stock code task, naming the sandboxed twin;
  * chains a `sys.excepthook` that, for an uncaught hub/download failure while a stock task with
    a twin was requested, prints one line naming the twin (and exits 1 as any uncaught error),
    and hands every other exception to the previous hook untouched.
Only the standard library is imported here: this module loads in every Python process.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from types import TracebackType

from dllm_eval.settings import cli_option

PREFIX = "dllm-eval:"

# stock lm-eval task -> the task under tasks/ with the same prompt and scoring, offline-capable
TWINS: dict[str, str] = {
    "gsm8k": "dllm_gsm8k",
    "humaneval": "dllm_humaneval",
    "humaneval_instruct": "dllm_humaneval_instruct",
    "mbpp": "dllm_mbpp",
    "minerva_math": "dllm_minerva_math",
    "minerva_math500": "dllm_math500_4shot",
    **{
        f"minerva_math_{s}": f"dllm_minerva_math_{s}"
        for s in ("algebra", "counting_and_prob", "geometry", "intermediate_algebra", "num_theory", "prealgebra", "precalc")
    },
}
# hub dataset id (as it appears in a download error) -> twin, for errors that name the dataset
DATASET_TWINS: dict[str, str] = {
    "openai/gsm8k": "dllm_gsm8k",
    "gsm8k": "dllm_gsm8k",
    "openai/openai_humaneval": "dllm_humaneval",
    "openai_humaneval": "dllm_humaneval",
    "google-research-datasets/mbpp": "dllm_mbpp",
    "mbpp": "dllm_mbpp",
    "EleutherAI/hendrycks_math": "dllm_minerva_math",
    "HuggingFaceH4/MATH-500": "dllm_math500_4shot",
}
# stock code tasks (run through lm-eval's code_eval) -> the twin scored in dllm-eval's sandbox
SANDBOXED_TWINS: dict[str, str] = {"humaneval": "dllm_humaneval", "mbpp": "dllm_mbpp"}

_DOWNLOAD_ERROR_NAMES = {
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "MaxRetryError",
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "DatasetNotFoundError",
    "HfHubHTTPError",
    "GatedRepoError",
}
_DOWNLOAD_ERROR_TEXT = re.compile(r"Couldn't reach|on the Hub|offline mode|Failed to resolve|Max retries exceeded", re.I)
_QUOTED = re.compile(r"'([\w.\-]+(?:/[\w.\-]+)?)'")


def requested_tasks(argv: Sequence[str]) -> list[str]:
    """The names given to `--tasks`, in order."""
    raw = cli_option(argv, "--tasks") or ""
    return [t.strip() for t in raw.split(",") if t.strip()]


def sandbox_notice(tasks: Sequence[str]) -> str | None:
    """One line naming the sandboxed twins of the stock code tasks among `tasks`, or None."""
    hits = {t: twin for t in tasks for stock, twin in SANDBOXED_TWINS.items() if t == stock or t.startswith(stock + "_")}
    if not hits:
        return None
    stock = ", ".join(f"`{t}`" for t in hits)
    twins = ", ".join(f"`{t}`" for t in dict.fromkeys(hits.values()))
    return (
        f"{PREFIX} stock {stock} execute generated code with lm-eval's code_eval, outside dllm-eval's sandbox; "
        f"the sandboxed twins are {twins} (--tasks {','.join(dict.fromkeys(hits.values()))} --include_path tasks)"
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 20:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def is_download_failure(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it came from) says the hub or the network could not be reached."""
    return any(
        type(e).__name__ in _DOWNLOAD_ERROR_NAMES or bool(_DOWNLOAD_ERROR_TEXT.search(str(e))) for e in _chain(exc)
    )


def offline_twin_line(exc: BaseException, tasks: Sequence[str]) -> str | None:
    """One line naming the offline twin of the stock task whose download failed, or None."""
    if not is_download_failure(exc):
        return None
    named = [DATASET_TWINS[q] for e in _chain(exc) for q in _QUOTED.findall(str(e)) if q in DATASET_TWINS]
    twins = list(dict.fromkeys([TWINS[t] for t in tasks if t in TWINS and (not named or TWINS[t] in named)]))
    if not twins:
        return None
    stock = ", ".join(f"`{t}`" for t in tasks if t in TWINS and TWINS[t] in twins)
    cause = next((e for e in _chain(exc) if _DOWNLOAD_ERROR_TEXT.search(str(e))), exc)
    first = (str(cause).splitlines() or [type(cause).__name__])[0][:160]
    return (
        f"{PREFIX} could not download the data of stock {stock} ({first}). Offline, run its twin: "
        f"--tasks {','.join(twins)} --include_path tasks, with DLLM_EVAL_DATA_DIR pointing at the local data "
        "(see README)"
    )


def make_excepthook(
    previous: Callable[[type[BaseException], BaseException, TracebackType | None], object],
    tasks: Sequence[str],
    stream=None,
) -> Callable[[type[BaseException], BaseException, TracebackType | None], None]:
    """An excepthook that prints `offline_twin_line` when it applies and defers to `previous` otherwise."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        line = None
        try:
            line = offline_twin_line(exc, tasks)
        except Exception:  # a hint must never hide the real error
            line = None
        if line is None:
            previous(exc_type, exc, tb)
            return
        print(line, file=stream or sys.stderr)

    return hook


def install(argv: Sequence[str] | None = None, stream=None) -> None:
    """Print the sandbox notice and chain the offline-twin excepthook, if `--tasks` is on the command line."""
    argv = list(sys.argv if argv is None else argv)
    tasks = requested_tasks(argv)
    if not tasks:
        return
    if cli_option(argv, "--model") == "dllm_adaptive":
        notice = sandbox_notice(tasks)
        if notice:
            print(notice, file=stream or sys.stderr)
    if any(t in TWINS for t in tasks):
        sys.excepthook = make_excepthook(sys.excepthook, tasks, stream)

"""`python -m dllm_eval.lm_eval_cli ARGS` (or `dllm-eval lm-eval ARGS`): lm_eval's own CLI, faster to start.

Why: lm-eval 0.4.x builds its task index by parsing every YAML file it ships (about 14,000)
at every start, which takes ~14 s on a 2-core laptop, longer than evaluating the embedded model
on a few dozen documents. `make eval-all` starts lm_eval once per matrix cell, so that cost
would be paid a dozen times.

This entry point runs lm-eval's unmodified `cli_evaluate` with one change: when every task
named in `--tasks` is defined under `--include_path`, the index holds only that folder
(`TaskManager(include_defaults=False)`). Anything else (a built-in task such as `gsm8k`, a
group, `--tasks list`) gets the full index, exactly as plain `lm_eval` would. Arguments,
evaluation, logging and outputs are lm_eval's; the command lines are interchangeable.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dllm_eval.settings import cli_option


def install_local_first_index(argv: Sequence[str]) -> bool:
    """Make lm_eval's TaskManager index only --include_path when that folder has every task.

    Returns whether the shortcut applies. lm_eval imports `TaskManager` from `lm_eval.tasks`
    when it needs one, so replacing that attribute is enough.
    """
    tasks, include = cli_option(argv, "--tasks"), cli_option(argv, "--include_path")
    if not tasks or not include:
        return False
    wanted = {t.strip() for t in tasks.split(",") if t.strip()}
    import lm_eval.tasks

    stock = lm_eval.tasks.TaskManager
    local = stock(include_path=include, include_defaults=False)
    if not wanted or not wanted <= set(local.all_tasks):
        return False

    class LocalFirstTaskManager(stock):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["include_defaults"] = False
            super().__init__(*args, **kwargs)

    lm_eval.tasks.TaskManager = LocalFirstTaskManager
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    install_local_first_index(args)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *args]
    result = cli_evaluate()
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

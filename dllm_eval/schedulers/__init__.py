"""Schedulers, one file each, registered by name. Importing this package registers them all.

`base` is the decode-step vocabulary (propose, select, commit, trace); `blocks` is the shared
block loop (windows, KV cache, forward accounting); `registry` builds schedulers by name. Each
other module is one method, reading top to bottom as "how this method picks tokens".
"""

from dllm_eval.schedulers import (  # noqa: F401  (registration side effects)
    adaptive,
    dream,
    drs,
    drs_v2,
    eb_sampler,
    fast_dllm,
    hierarchy,
    klass,
    llada,
    prophet,
    wino,
)
from dllm_eval.schedulers.base import GenerationOutput
from dllm_eval.schedulers.registry import SCHEDULERS, Scheduler, get_scheduler, param_fields

__all__ = ["SCHEDULERS", "GenerationOutput", "Scheduler", "get_scheduler", "param_fields"]

"""Schedulers, one file each, registered by name. Importing this package registers them all."""

from dllm_eval.schedulers import adaptive, dream, drs, fast_dllm, llada  # noqa: F401  (registration side effects)
from dllm_eval.schedulers.base import SCHEDULERS, GenerationOutput, Scheduler, get_scheduler, param_fields

__all__ = ["SCHEDULERS", "GenerationOutput", "Scheduler", "get_scheduler", "param_fields"]

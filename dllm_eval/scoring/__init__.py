"""Execution-based scoring: a hardened sandbox, code postprocessing and pass@k.

Public interface (other packages code against it):
    ExecResult, run_program, check_asserts, run_many, pass_at_k, isolation_level,
    isolation_floor, isolation_banner (a report-header line when code was scored below the floor)
"""

from dllm_eval.scoring.passk import pass_at_k
from dllm_eval.scoring.sandbox import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    ISOLATION_LEVELS,
    STATUSES,
    CodeJob,
    ExecResult,
    Limits,
    available_isolation_levels,
    check_asserts,
    isolation_banner,
    isolation_floor,
    isolation_level,
    run_job,
    run_many,
    run_program,
)

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT",
    "ISOLATION_LEVELS",
    "STATUSES",
    "CodeJob",
    "ExecResult",
    "Limits",
    "available_isolation_levels",
    "check_asserts",
    "isolation_banner",
    "isolation_floor",
    "isolation_level",
    "pass_at_k",
    "run_job",
    "run_many",
    "run_program",
]

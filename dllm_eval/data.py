"""Benchmark data: the local copies under $DLLM_EVAL_DATA_DIR when set, the Hugging Face ids otherwise.

Task YAMLs call these through `custom_dataset: !function dllm_eval.data.<name>`; lm-eval passes
its metadata (model_args included) as keyword arguments, which the loaders ignore.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from dllm_eval.errors import UserError

DATA_DIR_ENV = "DLLM_EVAL_DATA_DIR"
_FILES_READ: dict[str, Path] = {}


def data_dir() -> Path | None:
    """The local data folder, or None to use the hub. A set-but-missing folder is an error."""
    raw = os.environ.get(DATA_DIR_ENV)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise UserError(f"{DATA_DIR_ENV}={raw} is not a directory; unset it to use the Hugging Face hub")
    return path


def _local_file(relative: str) -> Path | None:
    root = data_dir()
    if root is None:
        return None
    path = root / relative
    if not path.is_file():
        raise UserError(f"{path} is missing; lay out {DATA_DIR_ENV} as shared/data (see its README)")
    _FILES_READ[str(path)] = path  # hashed into the cell's record (dllm_eval.cell_record)
    return path


def files_read() -> list[Path]:
    """The local data files this process has loaded so far."""
    return list(_FILES_READ.values())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _as_dataset_dict(splits: dict[str, list[dict[str, Any]]]):
    import datasets

    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


def gsm8k(**_: Any):
    """openai/gsm8k (main): train and test splits."""
    test = _local_file("gsm8k/test.jsonl")
    if test is None:
        import datasets

        return datasets.load_dataset("openai/gsm8k", "main")
    train = _local_file("gsm8k/train.jsonl")
    return _as_dataset_dict({"train": read_jsonl(train), "test": read_jsonl(test)})


def humaneval(**_: Any):
    """openai/openai_humaneval: the 164-problem test split."""
    path = _local_file("humaneval/HumanEval.jsonl.gz")
    if path is None:
        import datasets

        return datasets.load_dataset("openai/openai_humaneval")
    return _as_dataset_dict({"test": read_jsonl(path)})


MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def mbpp(**_: Any):
    """google-research-datasets/mbpp (full): prompt/test/validation/train split by task_id, as on the hub."""
    path = _local_file("mbpp/mbpp.jsonl")
    if path is None:
        import datasets

        return datasets.load_dataset("google-research-datasets/mbpp", "full")
    rows = read_jsonl(path)
    return _as_dataset_dict(
        {name: [r for r in rows if lo <= r["task_id"] <= hi] for name, (lo, hi) in MBPP_SPLITS.items()}
    )


def mbpp_sanitized(**_: Any):
    """google-research-datasets/mbpp (sanitized), split by the same task_id ranges."""
    path = _local_file("mbpp/sanitized-mbpp.json")
    if path is None:
        import datasets

        return datasets.load_dataset("google-research-datasets/mbpp", "sanitized")
    rows = json.loads(path.read_text())
    return _as_dataset_dict(
        {name: [r for r in rows if lo <= r["task_id"] <= hi] for name, (lo, hi) in MBPP_SPLITS.items()}
    )


MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def math_subject_config(subject_type: str) -> str:
    """MATH's `type` ("Counting & Probability") as the hub config name ("counting_and_probability")."""
    return subject_type.lower().replace(" & ", "_and_").replace(" ", "_")


def hendrycks_math(subject: str | None = None, **_: Any):
    """EleutherAI/hendrycks_math: the test split of one subject config (all 5,000 problems if None).

    The local file holds all seven subjects; a subject task passes `dataset_kwargs: {subject: ...}`.
    """
    if subject is not None and subject not in MATH_SUBJECTS:
        raise UserError(f"unknown MATH subject {subject!r}; choose one of: {', '.join(MATH_SUBJECTS)}")
    path = _local_file("math/test.jsonl")
    if path is None:
        import datasets

        subjects = [subject] if subject else list(MATH_SUBJECTS)
        parts = [datasets.load_dataset("EleutherAI/hendrycks_math", s, split="test") for s in subjects]
        return datasets.DatasetDict({"test": datasets.concatenate_datasets(parts)})
    rows = read_jsonl(path)
    if subject is not None:
        rows = [r for r in rows if math_subject_config(r["type"]) == subject]
    return _as_dataset_dict({"test": rows})


def math500(**_: Any):
    """HuggingFaceH4/MATH-500: the 500-problem test split (OpenAI's PRM800K subset of MATH test)."""
    path = _local_file("math/math500.jsonl")
    if path is None:
        import datasets

        return datasets.load_dataset("HuggingFaceH4/MATH-500")
    return _as_dataset_dict({"test": read_jsonl(path)})

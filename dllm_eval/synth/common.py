"""Shared plumbing of the synthetic tasks: the train/test partition, tier interleaving, datasets.

Why a partition by hash: the generators sample from one problem space for both training and
evaluation, so disjointness cannot come from separate seeds alone (two seeds can draw the same
problem). Each problem has a *skeleton* (its tier, operations and numbers, not its wording); a
stable hash of the skeleton puts it in the test bucket or the train bucket, and each generator
only keeps problems from its own bucket. A test problem's skeleton therefore never appears in
training, whatever seed or worker produced the training stream.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

TIERS = (1, 2, 3, 4)
TEST_BUCKETS = 8  # one skeleton in TEST_BUCKETS is reserved for evaluation

Doc = dict[str, Any]


def skeleton_hash(skeleton: object) -> int:
    """A hash of the skeleton that is stable across processes and Python versions (unlike hash())."""
    digest = hashlib.blake2b(repr(skeleton).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def is_test_skeleton(skeleton: object) -> bool:
    return skeleton_hash(skeleton) % TEST_BUCKETS == 0


def skeleton_key(skeleton: object) -> str:
    """The hash as hex, stored in each doc as `key` so that disjointness can be checked on docs."""
    return f"{skeleton_hash(skeleton):016x}"


def interleaved_docs(
    make: Callable[[random.Random, int], tuple[Doc, object]],
    n: int,
    seed: int,
    split: str,
) -> list[Doc]:
    """`n` docs of one split, tiers cycling 1,2,3,4,1,... in doc order.

    Interleaving means that `--limit k` takes the first k docs and still covers every tier
    about equally. Problems whose question text repeats are skipped, so every doc is distinct.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    want_test = split == "test"
    rng = random.Random(f"{split}:{seed}")
    docs: list[Doc] = []
    seen: set[str] = set()
    while len(docs) < n:
        tier = TIERS[len(docs) % len(TIERS)]
        doc, skeleton = make(rng, tier)
        if is_test_skeleton(skeleton) != want_test or doc["question"] in seen:
            continue
        seen.add(doc["question"])
        doc["id"] = len(docs)
        doc["key"] = skeleton_key(skeleton)
        docs.append(doc)
    return docs


def training_stream(
    make: Callable[[random.Random, int], tuple[Doc, object]],
    seed: int,
    tier_weights: tuple[float, ...],
) -> Iterator[Doc]:
    """An endless stream of training problems (never from the test bucket), tiers drawn by weight."""
    rng = random.Random(f"stream:{seed}")
    while True:
        tier = rng.choices(TIERS, weights=tier_weights)[0]
        doc, skeleton = make(rng, tier)
        if not is_test_skeleton(skeleton):
            doc["key"] = skeleton_key(skeleton)
            yield doc


def as_dataset_dict(splits: dict[str, list[Doc]]):
    """lm-eval wants a `datasets.DatasetDict`; imported lazily so the generators need no `datasets`."""
    import datasets

    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


TIERS = (1, 2, 3, 4)


def tier_metrics(name: str, value: float, tier: int) -> dict[str, float | None]:
    """The overall metric plus a per-tier copy (`<name>_tier<k>`), so lm-eval's table shows tiers.

    Every document reports every tier key (None outside its own tier) and the YAML aggregates
    those keys with `mean_of_present`: under data parallelism lm-eval gathers the metric names
    rank 0 saw, so the names must not depend on which documents a rank got.
    """
    return {name: value, **{f"{name}_tier{k}": (value if k == tier else None) for k in TIERS}}


def mean_of_present(values: list[float | None]) -> float:
    """lm-eval aggregation for the per-tier keys: the mean over the documents of that tier."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")

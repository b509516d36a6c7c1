"""Per-request random streams (issue 12, item 4): with sampling on, an answer depends only on
(seed, task, doc_id, repeat), not on batch size, batch mates or the order requests come in."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from lm_eval.api.instance import Instance

from dllm_eval.lm_eval_model import DiffusionLM, padding_mask, request_seed
from dllm_eval.schedulers.base import add_gumbel_noise, propose
from dllm_eval.trace_row import PLACEMENT_FIELDS

SAMPLED = {"until": ["\n\n"], "do_sample": True, "temperature": 1.2, "max_gen_toks": 32}
PROMPTS = ["Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:",
           "Question: 12 - 5 = ?\nAnswer:",
           "Question: A box holds 6 eggs. How many eggs are in 3 boxes?\nAnswer:",
           "Question: 7 + 8 = ?\nAnswer:",
           "Question: Sue reads 10 pages a day. How many pages in 4 days?\nAnswer:"]


def _requests(gen_kwargs: dict, repeats: int = 2) -> list[Instance]:
    """Like lm-eval's evaluator: each Instance listed `repeats` times in a row."""
    out = []
    for doc_id, prompt in enumerate(PROMPTS):
        inst = Instance("generate_until", {}, (prompt, dict(gen_kwargs)), doc_id, ("t", doc_id, repeats))
        out += [inst] * repeats
    return out


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in PLACEMENT_FIELDS}


def same_trace_rows(a: dict, b: dict, tol: float = 1e-4) -> bool:
    """Trace rows (by key, placement fields removed) equal, step confidences to `tol`: a float32
    forward of a padded batch differs from batch 1 in the last digits, so a row's commit
    confidences do too; its tokens, commits per step, NFE and events are compared exactly."""
    def split(rows):
        exact = {k: {f: v for f, v in r.items() if f != "steps"} for k, r in rows.items()}
        steps = {k: [(s["block"], s["committed"]) for s in r["steps"]] for k, r in rows.items()}
        conf = {k: [s[c] for s in r["steps"] for c in ("conf_min", "conf_mean", "conf_max")] for k, r in rows.items()}
        return exact, steps, conf

    (ea, sa, ca), (eb, sb, cb) = split(a), split(b)
    return ea == eb and sa == sb and all(ca[k] == pytest.approx(cb[k], abs=tol) for k in ca)


def _run(lm: DiffusionLM, requests: list[Instance], batch: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict]:
    rows = []
    monkeypatch.setattr(lm, "_write_traces", lambda by_task: rows.extend(r for rs in by_task.values() for r in rs))
    monkeypatch.setattr(lm, "batch_size_per_gpu", batch)
    texts = lm.generate_until(requests, disable_tqdm=True)
    return texts, {(r.doc_id, r.repeat): _strip(asdict(r)) for r in rows}


def test_request_seed_is_stable_and_distinct() -> None:
    seeds = {request_seed(1234, "t", d, r) for d in range(50) for r in range(3)}
    assert len(seeds) == 150
    assert request_seed(1234, "t", 3, 1) == request_seed(1234, "t", 3, 1)
    assert request_seed(1234, "t", 3, 1) != request_seed(1235, "t", 3, 1) != request_seed(1234, "u", 3, 1)


def test_a_rows_noise_does_not_depend_on_its_batch_mates() -> None:
    logits = torch.randn(3, 4, 11, generator=torch.Generator().manual_seed(0))
    masked = torch.ones(3, 4, dtype=torch.bool)
    masked[1] = False  # row 1 has nothing to decode: it must not draw

    def gens():
        return [torch.Generator().manual_seed(100 + r) for r in range(3)]

    batch = add_gumbel_noise(logits, 0.7, gens(), need=masked.any(dim=1))
    alone = add_gumbel_noise(logits[2:], 0.7, [torch.Generator().manual_seed(102)])
    assert torch.equal(batch[2], alone[0]) and not torch.equal(batch[0], batch[2])
    # `rows`: logits for rows 0 and 2 only draw from those rows' generators
    sub = propose(logits[[0, 2]], masked, temperature=0.7, generator=gens(), rows=torch.tensor([0, 2]))
    full = propose(logits, masked, temperature=0.7, generator=gens())
    assert torch.equal(sub.tokens[[0, 2]], full.tokens[[0, 2]])
    # greedy ignores the generators entirely
    assert torch.equal(propose(logits, masked, generator=gens()).tokens, propose(logits, masked).tokens)


@pytest.fixture(scope="module")
def lms() -> dict[str, DiffusionLM]:
    return {name: DiffusionLM(scheduler=name, device="cpu", **params) for name, params in
            (("fast_dllm", {"threshold": 0.9}), ("llada", {"steps": 8}), ("dream", {"alg": "origin", "steps": 8}))}


@pytest.mark.parametrize("scheduler", ["fast_dllm", "llada", "dream"])
def test_sampled_answers_do_not_depend_on_batch_size_or_order(lms, scheduler, monkeypatch) -> None:
    lm = lms[scheduler]
    b1_texts, b1_rows = _run(lm, _requests(SAMPLED), 1, monkeypatch)
    b4_texts, b4_rows = _run(lm, _requests(SAMPLED), 4, monkeypatch)
    assert b4_texts == b1_texts and same_trace_rows(b4_rows, b1_rows)
    assert len(b1_rows) == 10
    # repeats are different draws (not one answer copied), and sampling is really on
    assert any(b1_texts[2 * d] != b1_texts[2 * d + 1] for d in range(5))
    greedy_texts, _ = _run(lm, _requests({**SAMPLED, "do_sample": False, "temperature": 0.0}), 4, monkeypatch)
    assert greedy_texts != b1_texts
    # a later look at a subset (other batch mates, other order) gives the same answers
    reqs = _requests(SAMPLED)
    later = reqs[6:8] + reqs[2:4]  # docs 3 and 1, repeats 0 and 1 each
    texts, rows = _run(lm, later, 3, monkeypatch)
    assert texts == b1_texts[6:8] + b1_texts[2:4]
    assert same_trace_rows(rows, {k: b1_rows[k] for k in rows})


def test_padding_mask_marks_copies_beyond_repeats() -> None:
    a = Instance("generate_until", {}, ("a", {}), 0, ("t", 0, 2))
    b = Instance("generate_until", {}, ("b", {}), 1, ("t", 1, 1))
    assert padding_mask([a, a, b, b, b]) == [False, False, False, True, True]

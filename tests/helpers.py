"""Small shared fixtures for the model/scheduler tests."""

from __future__ import annotations

import torch

from dllm_eval.models.llada import LLaDAConfig, LLaDAModelLM, build_model

MASK, EOS = 260, 257


def tiny_config(**overrides) -> LLaDAConfig:
    base = dict(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=300,
                embedding_size=300, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
    base.update(overrides)
    return LLaDAConfig(**base)


def peaky_model(seed: int = 0, dtype: torch.dtype = torch.float64) -> LLaDAModelLM:
    """Random weights with enough scale that predictions vary by position and confidences spread
    over (0, 1): the selection rules then have real choices to make."""
    model = build_model(tiny_config(), seed=seed, dtype=dtype, std=0.5)
    model.model.transformer.ff_out.weight.mul_(2.0)
    model.model.transformer.ff_out.weight[MASK] = 0.0  # like a trained model, never predict the mask
    return model


def random_prompt(length: int, seed: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 250, (batch, length), generator=gen)


def assert_batch_equals_rows_alone(scheduler, model, lengths=(12, 5, 9), seed: int = 10):
    """Random prompts of `lengths`, left-padded into one batch, decode exactly as each row alone
    (tokens, NFE, trace metrics); returns the batch's output for the caller's own checks."""
    rows = [random_prompt(n, seed + i)[0] for i, n in enumerate(lengths)]
    width = max(lengths)
    batch = torch.full((len(rows), width), EOS)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, width - len(row):], mask[i, width - len(row):] = row, 1
    together = scheduler.generate(model, batch, attention_mask=mask)
    for i, row in enumerate(rows):
        alone = scheduler.generate(model, row[None])
        assert torch.equal(together.tokens[i], alone.tokens[0]), f"row {i}"
        assert together.traces[i]["nfe"] == alone.traces[0]["nfe"], f"row {i}"
        assert together.traces[i]["metrics"] == alone.traces[0]["metrics"], f"row {i}"
    return together


def decode_batch_and_rows(name: str, model, rows: list[list[int]], pad_id: int, **params):
    """Decode `rows` as one left-padded batch and each row alone with scheduler `name`; assert that
    every row's tokens, NFE and trace events are those it gets alone. Returns the batch output."""
    from dllm_eval.frontend import left_pad
    from dllm_eval.schedulers import get_scheduler

    ids, mask = left_pad(rows, pad_id)
    batch = get_scheduler(name, **params).generate(model, ids, attention_mask=mask)
    for r, row in enumerate(rows):
        alone = get_scheduler(name, **params).generate(model, torch.tensor([row]))
        assert batch.tokens[r].tolist() == alone.tokens[0].tolist(), (name, r)
        assert batch.traces[r]["nfe"] == alone.traces[0]["nfe"], (name, r)
        assert batch.traces[r]["events"] == alone.traces[0]["events"], (name, r)
    return batch

"""Tiny random Dream models for the tests (GQA, biases, untied head, RoPE theta 1e6)."""

from __future__ import annotations

import torch

from dllm_eval.models.dream import DreamConfig, DreamModel, build_model

D_MASK, D_EOS = 260, 257


def tiny_dream_config(**overrides) -> DreamConfig:
    base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=300, max_position_embeddings=512, rope_theta=1e6,
                mask_token_id=D_MASK, eos_token_id=D_EOS, pad_token_id=D_EOS, bos_token_id=258)
    base.update(overrides)
    return DreamConfig(**base)


def peaky_dream(seed: int = 0, dtype: torch.dtype = torch.float64, **overrides) -> DreamModel:
    """Random weights scaled so predictions vary by position and confidences spread over (0, 1);
    the mask token is never predicted (as for a trained model)."""
    model = build_model(tiny_dream_config(**overrides), seed=seed, dtype=dtype, std=0.5)
    model.lm_head.weight.mul_(2.0)
    model.lm_head.weight[D_MASK] = 0.0
    return model


def prompt(length: int, seed: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 250, (batch, length), generator=gen)

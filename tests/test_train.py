"""`dllm-eval train-tiny`: tokenizer, data layout, LLaDA's SFT objective, and a tiny CPU run."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from dllm_eval import train
from dllm_eval.errors import UserError
from dllm_eval.synth import synth_code, synth_math

ASSETS = Path(__file__).resolve().parents[1] / "dllm_eval" / "assets" / "tiny_llada"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """A tokenizer learned on a small corpus (the real one uses 20k problems per task)."""
    out = tmp_path_factory.mktemp("tok")
    train.build_tokenizer(out, seed=0, n_per_task=1500)
    return out


def test_tokenizer_keeps_digits_single_and_round_trips(tok_dir):
    from transformers import AutoTokenizer

    vocab = json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert not [t for t in vocab if re.search(r"[0-9]", t) and len(t) > 1 and not t.startswith("<|")]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    for doc in synth_math.test_docs(n=8) + synth_code.test_docs(n=8):
        text = (synth_math if "target" in doc else synth_code).doc_to_answer(doc)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()] == re.findall(r"\d", text)
    assert tok.mask_token == "<|mdm_mask|>" and tok.pad_token_id == tok.eos_token_id
    assert len(tok) % train.VOCAB_MULTIPLE == 0


def test_tokenizer_is_deterministic(tok_dir, tmp_path):
    train.build_tokenizer(tmp_path, seed=0, n_per_task=1500)
    assert (tmp_path / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_chat_format_equals_the_tokenizer_chat_template(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    prompt = synth_math.doc_to_text(synth_math.test_docs(n=1)[0])
    rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
    assert rendered == train.render_prompt(prompt, "chat")
    assert train.render_prompt(prompt, "raw") == prompt


def test_batches_layout_prompt_then_answer_then_eos(tok_dir):
    vocab = train.Vocab(tok_dir)
    batch = next(train.make_batches(str(tok_dir), seed=0, batch_size=16, math_frac=0.5, worker=0))
    ids, valid, ans = batch["ids"], batch["valid"], batch["ans"]
    assert ids.shape == (16, train.SEQ_LEN) and ans.shape == (16, train.MAX_GEN)
    gens = set()
    for row in range(16):
        start = int(valid[row].argmax())
        assert valid[row, start:].all() and not valid[row, :start].any()  # left padding only
        gen = int(ans[row].sum())
        gens.add(gen)
        answer = ids[row, -gen:].tolist()
        assert answer[-1] == vocab.eos  # answers are padded with EOS up to the generation length
        first_eos = answer.index(vocab.eos)
        assert all(t == vocab.eos for t in answer[first_eos:])
        assert vocab.mask not in ids[row].tolist()
    assert gens <= {synth_math.GEN_LENGTH, synth_code.GEN_LENGTH}


class _Recorder(torch.nn.Module):
    """Stands in for the model: records its input and returns fixed logits."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.seen: torch.Tensor | None = None

    def forward(self, input_ids, attention_mask=None, logits_positions=None):
        self.seen = input_ids
        width = len(range(*logits_positions.indices(input_ids.shape[1])))
        return torch.zeros(input_ids.shape[0], width, self.vocab_size)


def test_sft_loss_masks_only_answer_tokens_and_scales_by_one_over_p(tok_dir):
    vocab = train.Vocab(tok_dir)
    batch = {k: torch.as_tensor(v) for k, v in
             next(train.make_batches(str(tok_dir), seed=1, batch_size=64, math_frac=0.5, worker=0)).items()}
    rec = _Recorder(vocab.size)
    loss, stats = train.sft_loss(rec, batch, vocab.mask, torch.Generator().manual_seed(0))
    masked = rec.seen == vocab.mask
    prompt_part = masked[:, :-train.MAX_GEN]
    assert not prompt_part.any()  # the prompt is never masked
    answer_masked = masked[:, -train.MAX_GEN:]
    assert not (answer_masked & ~batch["ans"]).any()
    assert answer_masked.any()
    # Uniform logits: CE = log V on every masked token, so the loss is log V * E[#masked/(p*len)] ~ log V.
    assert stats["masked_ce"].item() == pytest.approx(torch.log(torch.tensor(float(vocab.size))).item(), rel=1e-5)
    assert 0.5 * stats["masked_ce"].item() < loss.item() < 2.0 * stats["masked_ce"].item()


def test_bad_arguments_are_user_errors(tmp_path):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    for argv in ([], ["--steps", "5", "--time-budget", "3"], ["--steps", "0"],
                 ["--steps", "5", "--d-model", "30", "--n-heads", "4"], ["--steps", "5", "--init", str(tmp_path)]):
        with pytest.raises(UserError):
            train.run(parser.parse_args([*argv, "--out", str(tmp_path / "o"), "--log-dir", str(tmp_path / "l")]))


def test_tiny_cpu_run_reduces_the_loss_and_writes_a_checkpoint(tok_dir, tmp_path):
    from dllm_eval.models.llada import load_llada

    out, logs = tmp_path / "ckpt", tmp_path / "logs"
    argv = ["--out", str(out), "--log-dir", str(logs), "--tokenizer", str(tok_dir), "--steps", "40",
            "--batch-size", "8", "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--mlp", "64",
            "--workers", "0", "--warmup", "5", "--lr", "3e-3", "--log-every", "5", "--device", "cpu"]
    assert train.main(argv) == 0
    records = [json.loads(line) for line in (logs / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2
    model = load_llada(out)
    assert model.config.mask_token_id == train.Vocab(out).mask
    assert json.loads((logs / "train_meta.json").read_text())["steps"] == 40


@pytest.mark.slow
def test_training_is_reproducible_from_the_seed(tok_dir, tmp_path):
    def losses(tag: str) -> list[float]:
        logs = tmp_path / tag
        train.main(["--out", str(tmp_path / f"c{tag}"), "--log-dir", str(logs), "--tokenizer", str(tok_dir),
                    "--steps", "6", "--batch-size", "4", "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
                    "--mlp", "64", "--workers", "0", "--warmup", "2", "--log-every", "2", "--device", "cpu"])
        return [json.loads(x)["loss"] for x in (logs / "train_log.jsonl").read_text().splitlines()]

    assert losses("a") == losses("b")


def test_quick_decoder_solves_with_the_embedded_model():
    """The training-time decoder and the shipped model agree on easy problems (sanity of both)."""
    if not (ASSETS / "config.json").is_file():
        pytest.skip("embedded model not built")
    from dllm_eval.models.llada import load_llada

    model = load_llada(ASSETS)
    vocab = train.Vocab(ASSETS)
    docs = [d for d in synth_math.test_docs(n=16) if d["tier"] == 1][:3]
    res = train.evaluate(model, vocab, "math", docs, threshold=0.9)
    assert res["acc"] == 1.0 and res["nfe"] < synth_math.GEN_LENGTH

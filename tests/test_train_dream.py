"""`dllm-eval train-tiny --arch dream`: Dream's tokenizer layout, prompt rendering, a tiny CPU run
whose checkpoint loads and decodes through the real schedulers and the adapter, the model card,
and resolving the embedded names `tiny_llada` / `tiny_dream`."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from dllm_eval import train
from dllm_eval.errors import UserError
from dllm_eval.models import EMBEDDED_MODEL_DIR, EMBEDDED_MODELS
from dllm_eval.models import tokenizer as T
from dllm_eval.synth import synth_code, synth_math

TINY = ["--d-model", "32", "--n-layers", "1", "--n-heads", "4", "--kv-heads", "2", "--mlp", "64",
        "--workers", "0", "--device", "cpu"]


def _docs() -> list[tuple[object, dict]]:
    return [(synth_math, d) for d in synth_math.test_docs(n=12)] + [(synth_code, d) for d in synth_code.test_docs(n=12)]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """A Dream tokenizer learned on a small corpus (the real one uses 20k problems per task)."""
    out = tmp_path_factory.mktemp("dream_tok")
    train.build_tokenizer(out, seed=0, n_per_task=1500, arch="dream")
    return out


@pytest.fixture(scope="module")
def trained(tok_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A 40-step CPU run of a 1-layer Dream model, with one periodic quick evaluation (as the GPU
    run's --eval-every): (checkpoint dir, log dir)."""
    root = tmp_path_factory.mktemp("dream_run")
    out, logs = root / "ckpt", root / "logs"
    argv = ["--arch", "dream", "--out", str(out), "--log-dir", str(logs), "--tokenizer", str(tok_dir),
            "--steps", "40", "--batch-size", "8", "--warmup", "5", "--lr", "3e-3", "--log-every", "5",
            "--eval-every", "40", "--eval-docs", "4", *TINY]
    assert train.main(argv) == 0
    return out, logs


# --------------------------------------------------------------------------------------------
# Tokenizer and prompts
# --------------------------------------------------------------------------------------------


def test_tokenizer_is_written_in_dreams_layout(tok_dir):
    from transformers import Qwen2Tokenizer

    assert not (tok_dir / "tokenizer.json").exists()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tok_dir / name).is_file(), name
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "DreamTokenizer"
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_dream.DreamTokenizer"
    tok = T.load_tokenizer(tok_dir)
    assert isinstance(tok, Qwen2Tokenizer)
    assert (tok.eos_token, tok.pad_token, tok.bos_token, tok.mask_token) == (
        "<|endoftext|>", "<|endoftext|>", "<|beginoftext|>", "<|mask|>")
    vocab = train.Vocab(tok_dir)
    assert vocab.arch == "dream" and vocab.size % train.VOCAB_MULTIPLE == 0
    assert (vocab.eos, vocab.bos, vocab.mask) == (tok.eos_token_id, tok.bos_token_id, tok.mask_token_id)
    n_ordinary = len(json.loads((tok_dir / "vocab.json").read_text()))
    assert vocab.first_special == vocab.eos == n_ordinary  # Dream's added tokens follow the BPE, EOS first
    assert vocab.size >= len(tok)


def test_digits_are_single_tokens_and_synth_prompts_round_trip(tok_dir):
    tok = T.load_tokenizer(tok_dir)
    vocab = train.Vocab(tok_dir)
    ordinary = json.loads((tok_dir / "vocab.json").read_text())
    assert not [t for t in ordinary if re.search(r"[0-9]", t) and len(t) > 1]
    for task, doc in _docs():
        answer = task.doc_to_answer(doc)
        ids = tok(answer, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == answer
        assert [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()] == re.findall(r"\d", answer)
        for fmt in train.FORMATS:
            prompt = train.render_prompt(task.doc_to_text(doc), fmt, "dream")
            slow = tok(prompt, add_special_tokens=False)["input_ids"]
            assert vocab.encode(prompt) == slow  # the training workers' fast encoder == load_tokenizer's
            assert tok.decode(slow) == prompt


def test_every_merge_lies_inside_one_qwen2_pre_token(tok_dir):
    """Learned under Qwen2's regex, no merged token spans a boundary that Dream's tokenizer cuts
    (tiny_llada's BPE has "\\n   " tokens, which Qwen2's regex never produces)."""
    import regex
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = T.load_tokenizer(tok_dir)
    merged = [t for t in json.loads((tok_dir / "vocab.json").read_text()) if len(t) > 1]
    assert len(merged) > 100
    for token in merged:
        text = tok.convert_tokens_to_string([token])
        assert regex.findall(PRETOKENIZE_REGEX, text) == [text], token
    longest = max(len(tok(synth_code.doc_to_answer(d), add_special_tokens=False)["input_ids"])
                  for d in synth_code.test_docs())
    assert longest < synth_code.GEN_LENGTH  # every answer and its EOS fit the canvas


def test_tokenizer_is_deterministic(tok_dir, tmp_path):
    train.build_tokenizer(tmp_path, seed=0, n_per_task=1500, arch="dream")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (tok_dir / name).read_bytes()


def test_chat_format_equals_qwen2_chat_template(tok_dir):
    tok = T.load_tokenizer(tok_dir)
    for task, doc in _docs()[::6]:
        prompt = task.doc_to_text(doc)
        rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=False)
        assert rendered == train.render_prompt(prompt, "chat", "dream")
        assert f"{T.IM_START}user\n{prompt}{T.IM_END}\n" in rendered
        assert rendered.endswith(f"{T.IM_START}assistant\n")
    assert train.render_prompt("x", "bos", "dream") == "<|beginoftext|>x"
    assert train.render_prompt("x", "chat", "llada").startswith(T.BOS + T.START_HEADER)  # llada unchanged


def test_batches_render_every_format_with_dreams_tokens(tok_dir):
    vocab = train.Vocab(tok_dir)
    batch = next(train.make_batches(str(tok_dir), seed=0, batch_size=48, math_frac=0.5, worker=0))
    ids, valid, ans = batch["ids"], batch["valid"], batch["ans"]
    im_start = vocab.tok.token_to_id(T.IM_START)
    firsts = set()
    for row in range(len(ids)):
        start = int(valid[row].argmax())
        assert valid[row, start:].all() and not valid[row, :start].any()
        gen = int(ans[row].sum())
        assert gen in (synth_math.GEN_LENGTH, synth_code.GEN_LENGTH)
        assert ids[row, -1] == vocab.eos
        assert vocab.mask not in ids[row].tolist()
        firsts.add("chat" if ids[row, start] == im_start else "bos" if ids[row, start] == vocab.bos else "raw")
    assert firsts == {"raw", "bos", "chat"}


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(argv)


def test_dream_defaults_and_bad_arguments(tmp_path):
    args = _parse(["--arch", "dream", "--steps", "5"])
    train._check_args(args)
    assert (args.out, args.log_dir, args.n_heads, args.kv_heads) == (
        "runs/tiny_dream", "results/embedded/tiny_dream", 4, 2)
    args = _parse(["--steps", "5"])
    train._check_args(args)
    assert (args.arch, args.out, args.log_dir, args.n_heads, args.kv_heads) == (
        "llada", "runs/tiny_llada", "results/embedded", 5, 5)

    llada_tok = tmp_path / "llada_tok"
    train.build_tokenizer(llada_tok, seed=0, n_per_task=200)
    bad = (["--kv-heads", "3"], ["--n-heads", "3"], ["--tokenizer", str(llada_tok)], ["--card-only", "--arch", "llada"])
    for extra in bad:
        with pytest.raises(UserError):
            train.run(_parse(["--arch", "dream", "--steps", "5", "--out", str(tmp_path / "o"),
                              "--log-dir", str(tmp_path / "l"), *extra]))


# --------------------------------------------------------------------------------------------
# A tiny CPU run: checkpoint format, loaders, schedulers, adapter, card
# --------------------------------------------------------------------------------------------


def test_tiny_cpu_run_reduces_the_loss(trained):
    _, logs = trained
    records = [json.loads(line) for line in (logs / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2
    assert sorted(r["eval"] for r in records if "eval" in r) == ["code", "math"]  # the quick decoder ran
    assert (logs / "loss_curve.png").stat().st_size > 0
    meta = json.loads((logs / "train_meta.json").read_text())
    assert (meta["arch"], meta["steps"]) == ("dream", 40)


def test_continued_training_from_the_dream_checkpoint(trained, tmp_path):
    out, _ = trained
    base = ["--init", str(out), "--steps", "2", "--batch-size", "4", "--warmup", "1", "--workers", "0",
            "--device", "cpu", "--log-dir", str(tmp_path / "logs")]
    assert train.main(["--arch", "dream", "--out", str(tmp_path / "more"), *base]) == 0
    assert json.loads((tmp_path / "more" / "config.json").read_text())["num_key_value_heads"] == 2  # init's shape
    assert train.main(["--arch", "llada", "--out", str(tmp_path / "wrong"), *base]) == 2  # a Dream init, not LLaDA


def test_quick_decoder_runs_on_the_dream_checkpoint_in_every_format(trained):
    """--final-eval's decoder and prompt formats on a Dream model (bounds only: 40 steps learn nothing)."""
    from dllm_eval.models.registry import load_model

    out, _ = trained
    model, vocab = load_model(out), train.Vocab(out)
    docs = synth_math.test_docs(n=2)
    for fmt in train.FORMATS:
        res = train.evaluate(model, vocab, "math", docs, threshold=0.9, fmt=fmt)
        assert res["n"] == 2 and 0.0 <= res["acc"] <= 1.0
        assert synth_math.GEN_LENGTH // train.BLOCK <= res["nfe"] <= synth_math.GEN_LENGTH


def test_checkpoint_is_in_dreams_format_and_loads(trained, tok_dir):
    from safetensors import safe_open

    from dllm_eval.models.dream import DreamModel, parameter_count
    from dllm_eval.models.registry import load_model

    out, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "Dream" and config["architectures"] == ["DreamModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_dream.DreamModel"
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["rope_theta"] == 1e6 and config["tie_word_embeddings"] is False
    assert config["torch_dtype"] == "bfloat16"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    for shard in set(index["weight_map"].values()):
        with safe_open(str(out / shard), framework="pt") as fh:
            assert {str(fh.get_tensor(n).dtype) for n in fh.keys()} == {"torch.bfloat16"}  # noqa: SIM118
    assert "model.layers.0.self_attn.k_proj.bias" in index["weight_map"] and "lm_head.weight" in index["weight_map"]
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).read_bytes() == (tok_dir / name).read_bytes(), name
    assert json.loads((out / "generation_config.json").read_text())["mask_token_id"] == config["mask_token_id"]

    model = load_model(out)
    tok = T.load_tokenizer(out)
    assert isinstance(model, DreamModel)
    assert sum(p.numel() for p in model.parameters()) == parameter_count(model.config)
    cfg = model.config
    assert cfg.mask_token_id == tok.mask_token_id and cfg.eos_token_id == cfg.pad_token_id == tok.eos_token_id
    assert cfg.vocab_size == train.Vocab(out).size
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True).endswith("<|im_start|>user\nhi<|im_end|>\n"
                                                                        "<|im_start|>assistant\n")


@pytest.mark.parametrize("name,params", [
    ("fast_dllm", {"block_length": 32, "cache": "dual", "threshold": 0.9}),
    ("dream", {"steps": 16}),
])
def test_checkpoint_decodes_through_the_schedulers(trained, name, params):
    from dllm_eval.frontend import load_front_end
    from dllm_eval.schedulers import get_scheduler

    out, _ = trained
    front = load_front_end(out, chat=True)
    assert front.use_chat
    docs = synth_math.test_docs(n=3)
    contexts = [synth_math.doc_to_text(d) for d in docs]
    sched = get_scheduler(name, gen_length=synth_math.GEN_LENGTH, **params)
    decoded = front.generate(contexts, sched, synth_math.UNTIL)
    vocab_rows = front.model.config.vocab_size
    for row, trace in enumerate(decoded.output.traces):
        tokens = decoded.tokens[row]
        assert len(tokens) == synth_math.GEN_LENGTH
        assert front.model.config.mask_token_id not in tokens and all(0 <= t < vocab_rows for t in tokens)
        assert 1 <= trace["nfe"] <= synth_math.GEN_LENGTH + 2
    assert len(decoded.texts) == 3


def test_checkpoint_runs_through_the_adapter_by_embedded_name(trained, monkeypatch):
    from lm_eval.api.instance import Instance

    from dllm_eval.lm_eval_model import DiffusionLM
    from dllm_eval.models.dream import DreamModel

    out, _ = trained
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny_dream", out)
    lm = DiffusionLM(pretrained="tiny_dream", scheduler="fast_dllm", threshold=0.9, device="cpu")
    assert isinstance(lm.front.model, DreamModel) and lm.eot_token_id == train.Vocab(out).eos
    doc = synth_math.test_docs(n=1)[0]
    req = Instance("generate_until", doc, (synth_math.doc_to_text(doc),
                                           {"until": list(synth_math.UNTIL), "max_gen_toks": synth_math.GEN_LENGTH}), 0)
    (text,) = lm.generate_until([req])
    assert isinstance(text, str) and "<|mask|>" not in text


def test_model_card_is_filled_from_the_logs(trained):
    out, logs = trained
    meta = json.loads((logs / "train_meta.json").read_text())
    card = (out / "README.md").read_text()
    config = json.loads((out / "config.json").read_text())
    for needle in ("tiny_dream", "## Architecture", "## Tokenizer", "## Data and training", "synth_code",
                   f"| parameters | {meta['parameters']:,} |", f"{meta['steps']:,} / {meta['batch_size']}",
                   f"| hidden_size / num_hidden_layers | {config['hidden_size']} / {config['num_hidden_layers']} |",
                   "dllm-eval train-tiny --arch dream --out DIR --steps 40 --workers 0 --seed 0",
                   "not measured yet"):
        assert needle in card, needle
    last = [r for r in map(json.loads, (logs / "train_log.jsonl").read_text().splitlines()) if "loss" in r][-1]
    assert f"{last['loss']:.3f} (CE on masked tokens {last['masked_ce']:.3f})" in card

    # --card-only regenerates it, now with the quick evaluation a --final-eval run would write.
    quick = [{"task": "math", "threshold": 0.9, "format": "raw", "n": 4, "acc": 0.75,
              "acc_tier": {"1": 1.0, "2": 0.5}, "nfe": 7.25}]
    (logs / "train_eval.json").write_text(json.dumps(quick))
    try:
        assert train.main(["--arch", "dream", "--card-only", "--out", str(out), "--log-dir", str(logs)]) == 0
    finally:
        (logs / "train_eval.json").unlink()
    assert "| synth_math | τ = 0.9 | raw | 4 | 100.0 | 50.0 |  |  | 75.0 | 7.25 |" in (out / "README.md").read_text()


@pytest.mark.slow
def test_compile_wrapper_compiles_the_dream_forward(tok_dir):
    """`--compile` must not silently fall back to eager for Dream (its forward has one graph
    break, `window.tolist()`, which dynamo handles); compiled and eager losses agree."""
    from dllm_eval.models.dream import DreamConfig, build_model

    vocab = train.Vocab(tok_dir)
    config = DreamConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab.size, mask_token_id=vocab.mask,
                         eos_token_id=vocab.eos, pad_token_id=vocab.eos, bos_token_id=vocab.eos)
    model = build_model(config).train().requires_grad_(True)
    compiled = train._compiled_or_eager(model, vocab, "cpu", 4)
    assert compiled is not model
    batch = {k: v for k, v in next(train.make_batches_torch(str(tok_dir), 4)).items()}
    eager, _ = train.sft_loss(model, batch, vocab.mask, torch.Generator().manual_seed(0))
    fast, _ = train.sft_loss(compiled, batch, vocab.mask, torch.Generator().manual_seed(0))
    assert fast.item() == pytest.approx(eager.item(), rel=1e-4)


# --------------------------------------------------------------------------------------------
# Embedded names
# --------------------------------------------------------------------------------------------


def test_embedded_names_resolve_to_their_asset_directories(trained, monkeypatch, tmp_path):
    from dllm_eval.models.checkpoint_io import resolve_checkpoint
    from dllm_eval.models.dream import DreamModel
    from dllm_eval.models.registry import load_model

    out, _ = trained
    assert EMBEDDED_MODELS["tiny_llada"] == EMBEDDED_MODEL_DIR
    assert EMBEDDED_MODELS["tiny_dream"] == EMBEDDED_MODEL_DIR.parent / "tiny_dream"
    if (EMBEDDED_MODEL_DIR / "config.json").is_file():
        assert resolve_checkpoint("tiny_llada") == EMBEDDED_MODEL_DIR
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny_dream", out)
    assert resolve_checkpoint("tiny_dream") == out
    assert isinstance(load_model("tiny_dream"), DreamModel)
    # A directory of that name in the working directory is a path, and wins over the name.
    local = tmp_path / "tiny_dream"
    local.mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"no config\.json"):
        resolve_checkpoint("tiny_dream")


@pytest.mark.parametrize("content", [None, "README.md"])
def test_missing_embedded_model_is_one_clear_line(monkeypatch, tmp_path, content):
    from dllm_eval.lm_eval_model import DiffusionLM
    from dllm_eval.models.checkpoint_io import resolve_checkpoint

    asset = tmp_path / "assets" / "tiny_dream"
    if content:  # a model card committed before the weights
        asset.mkdir(parents=True)
        (asset / content).write_text("# tiny_dream\n")
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny_dream", asset)
    for load in (resolve_checkpoint, lambda name: DiffusionLM(pretrained=name, device="cpu")):
        with pytest.raises(UserError) as err:
            load("tiny_dream")
        message = str(err.value)
        assert "\n" not in message and "tiny_dream is not shipped" in message
        assert "train-tiny --arch dream" in message

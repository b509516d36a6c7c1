"""The `dllm_adaptive` lm-eval adapter: argument checking, prompt handling, and the stock CLI end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dllm_eval.errors import UserError
from dllm_eval.frontend import is_instruct_name
from dllm_eval.lm_eval_model import DiffusionLM, output_path_from_argv
from dllm_eval.settings import coerce

REPO = Path(__file__).resolve().parents[1]
LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
DLLM_EVAL = str(Path(sys.executable).parent / "dllm-eval")


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "llada-random"
    subprocess.run([DLLM_EVAL, "random-checkpoint", "--arch", "llada", "--out", str(out), "--d-model", "64",
                    "--layers", "2", "--heads", "4", "--mlp", "128", "--vocab", "512", "--seed", "0"], check=True)
    return out


def test_model_registry_keeps_builtins_and_adds_ours():
    from lm_eval.api.registry import get_model

    assert get_model("dllm_adaptive") is DiffusionLM
    assert get_model("hf").__name__ == "HFLM"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"scheduler": "nope"}, "choose one of"),
        ({"threshhold": 0.9}, "valid keys"),
        ({"gen_length": 100, "block_length": 32}, "multiple of block_length"),
        ({"cache": "triple"}, "cache must be one of"),
        ({"threshold": 2.0}, "threshold must be in"),
        ({"scheduler": "llada", "steps": 7, "gen_length": 64, "block_length": 32}, "steps=7"),
        ({"scheduler": "llada", "threshold": 0.9}, "valid keys"),
        ({"batch_size": "auto"}, "auto is not supported"),
        ({"mc_num": 10, "mc_batch_size": 4}, "multiple of mc_batch_size"),
        ({"gen_length": "long"}, "expected int"),
    ],
)
def test_bad_model_args_fail_before_loading_weights(args, message):
    # The checkpoint path does not exist: only argument checking can produce these errors.
    with pytest.raises(UserError, match=message):
        DiffusionLM(pretrained="/nonexistent/checkpoint", **args)


def test_missing_checkpoint_is_a_clear_error():
    with pytest.raises(UserError, match="no such directory"):
        DiffusionLM(pretrained="/nonexistent/checkpoint")


def test_coercion_of_cli_strings():
    assert coerce("none", 0.9, "threshold") is None
    assert coerce("0.5", None, "threshold") == 0.5
    assert coerce("true", False, "stop_at_eos") is True
    assert coerce("64", 128, "gen_length") == 64


def test_instruct_detection_catches_llada_15():
    assert is_instruct_name("GSAI-ML/LLaDA-8B-Instruct")
    assert is_instruct_name("GSAI-ML/LLaDA-1.5")
    assert not is_instruct_name("GSAI-ML/LLaDA-8B-Base")


def test_output_path_from_argv():
    assert output_path_from_argv(["--tasks", "x", "--output_path", "out/dir"]) == "out/dir"
    assert output_path_from_argv(["--output_path=o"]) == "o"
    assert output_path_from_argv(["--tasks", "x"]) is None


def test_gen_length_rounds_max_gen_toks_up_to_blocks_and_stops_apply_after_decoding(random_checkpoint):
    lm = DiffusionLM(pretrained=str(random_checkpoint), block_length=32, device="cpu")
    assert lm._gen_length(256) == 256
    assert lm._gen_length(100) == 128
    assert lm._gen_length(1) == 32
    tok = lm.tokenizer
    ids = tok("The answer is 42\nQuestion: next", add_special_tokens=False)["input_ids"] + [lm.eot_token_id] * 3
    text, n = lm.front.finish(ids, ["Question:"])  # EOS is always a stop
    assert text == "The answer is 42\n"
    assert n == len(tok("The answer is 42\n", add_special_tokens=False)["input_ids"])
    fixed = DiffusionLM(pretrained=str(random_checkpoint), gen_length=64, block_length=16, device="cpu")
    assert fixed._gen_length(512) == 64


def test_chat_template_wraps_the_whole_prompt_as_one_user_turn(random_checkpoint):
    lm = DiffusionLM(pretrained=str(random_checkpoint), chat_template="true", device="cpu")
    rendered = lm.front.render("Question: 1+1?\nAnswer: 2\n\nQuestion: 2+2?\nAnswer:")
    assert rendered.startswith("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nQuestion: 1+1?")
    assert rendered.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert rendered.count("<|start_header_id|>user") == 1
    ids = lm.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(lm.tokenizer.bos_token_id) == 1  # no second BOS from the tokenizer


def test_dllm_gsm8k_renders_the_stock_prompt():
    """Same document, same 5-shot prompt as lm-eval's own gsm8k task config (fed the same local data)."""
    import lm_eval.tasks as tasks_pkg
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager

    from dllm_eval.data import gsm8k

    stock_cfg = yaml.safe_load((Path(tasks_pkg.__file__).parent / "gsm8k" / "gsm8k.yaml").read_text())
    stock_cfg["custom_dataset"] = gsm8k  # the stock config with the offline data swapped in
    stock = ConfigurableTask(config=stock_cfg)
    ours = TaskManager(include_path=str(REPO / "tasks")).load(["dllm_gsm8k"])["tasks"]["dllm_gsm8k"] \
        if hasattr(TaskManager, "load") else None
    if not isinstance(ours, ConfigurableTask):
        from lm_eval.tasks import get_task_dict

        ours = get_task_dict(["dllm_gsm8k"], TaskManager(include_path=str(REPO / "tasks")))["dllm_gsm8k"]
    for task in (stock, ours):
        task.set_fewshot_seed(1234)
    docs_stock, docs_ours = list(stock.test_docs())[:3], list(ours.test_docs())[:3]
    assert docs_stock == docs_ours
    for doc in docs_ours:
        assert ours.fewshot_context(doc, num_fewshot=5) == stock.fewshot_context(doc, num_fewshot=5)
    assert ours.config.filter_list == stock.config.filter_list
    assert ours.config.generation_kwargs == stock.config.generation_kwargs
    assert ours.config.metric_list == stock.config.metric_list


@pytest.mark.slow
def test_stock_lm_eval_cli_end_to_end_offline(random_checkpoint, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "DLLM_EVAL_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [LM_EVAL, "--model", "dllm_adaptive", "--model_args",
           f"pretrained={random_checkpoint},scheduler=fast_dllm,cache=dual,threshold=0.9,gen_length=64,block_length=16",
           "--tasks", "dllm_gsm8k", "--include_path", str(REPO / "tasks"), "--limit", "4", "--batch_size", "2",
           "--device", "cpu", "--log_samples", "--output_path", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = list(out.rglob("samples_dllm_gsm8k_*.jsonl"))
    results = list(out.rglob("results_*.json"))
    traces = out / "traces" / "traces_dllm_gsm8k.jsonl"
    assert len(samples) == 1 and len(results) == 1 and traces.is_file()
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    assert sorted(r["doc_id"] for r in rows) == [0, 1, 2, 3]
    assert all(r["nfe"] >= 64 // 16 and r["scheduler"] == "fast_dllm" for r in rows)
    config = json.loads(results[0].read_text())["config"]
    assert config["dllm_eval"]["scheduler"] == "fast_dllm"
    assert config["dllm_eval"]["totals"]["requests"] == 4
    sample_lines = samples[0].read_text().splitlines()
    assert len(sample_lines) == 8  # 4 docs x 2 filters
    # the cell record: hashes of what was read (against hashlib), versions, dtype, device, compile mode
    record = config["dllm_eval"]["record"]

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    weights = [*random_checkpoint.glob("*.safetensors"), *random_checkpoint.glob("*.safetensors.index.json")]
    assert weights and record["weights"] == {p.name: sha(p) for p in weights}
    assert record["tokenizer"]["tokenizer_config.json"] == sha(random_checkpoint / "tokenizer_config.json")
    data_root = os.environ.get("DLLM_EVAL_DATA_DIR")
    if data_root:  # the task read gsm8k's local copies, and only those
        assert set(record["data"]) == {"gsm8k/test.jsonl", "gsm8k/train.jsonl"}
        assert record["data"]["gsm8k/test.jsonl"] == sha(Path(data_root) / "gsm8k" / "test.jsonl")
    assert (record["dtype"], record["device_type"], record["compile_mode"]) == ("float32", "cpu", "none")
    assert record["versions"]["torch"] and record["versions"]["lm_eval"] and record["versions"]["python"]
    assert record["sandbox_min_isolation"] == config["dllm_eval"]["sandbox_min_isolation"]
    assert record["code"]["version"] and record["scheduler"] == "fast_dllm"
    assert (tmp_path / "cache" / "hashes.json").is_file()  # hashed once, then read from the cache

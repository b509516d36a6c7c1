"""Data parallel through accelerate and resume inside a run, end to end through the stock lm_eval CLI
on the embedded model (issue 12, items 1, 3, 4 and 5).

The tasks: the shipped synth_math itself (lm-eval 0.4.13 gathers metrics by rank 0's metric
keys, so its per-tier keys are reported by every document, None outside its tier), and two
variants of it with one metric key, one greedy and one sampled with 2 repeats. 7 documents leave
rank 1 one short, so lm-eval pads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dllm_eval.trace_row import PLACEMENT_FIELDS
from tests.test_scale_streams import same_trace_rows

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TASK = """task: {name}
custom_dataset: !function dllm_eval.synth.synth_math.load
output_type: generate_until
test_split: test
doc_to_text: !function dllm_eval.synth.synth_math.doc_to_text
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
generation_kwargs: {{until: ["Question:", "\\n\\n"], do_sample: {sample}, temperature: {temp}, max_gen_toks: 32}}
repeats: {repeats}
filter_list:
  - name: "flexible-extract"
    filter: [{{function: regex, group_select: -1, regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"}}, {{function: take_first}}]
"""
TASKS = "scale_greedy,scale_sampled,synth_math"
# Fields that say where and when a request ran; everything else must match a one-process run.
PLACEMENT = {"latency_s", "batch_id", "batch_size", "batch_wall_s", "batch_nfe", "rank"}


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("scale_tasks")
    (d / "greedy.yaml").write_text(TASK.format(name="scale_greedy", sample="false", temp=0.0, repeats=1))
    (d / "sampled.yaml").write_text(TASK.format(name="scale_sampled", sample="true", temp=1.2, repeats=2))
    (d / "synth_math.yaml").write_text((REPO / "tasks" / "synth" / "synth_math.yaml").read_text())
    return d


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _lm_eval_args(tasks_dir: Path, out: Path, model_args: str = "", batch: int = 4) -> list[str]:
    return ["-m", "dllm_eval.lm_eval_cli", "--model", "dllm_adaptive",
            "--model_args", f"scheduler=fast_dllm,threshold=0.9,seed=7{model_args}",
            "--tasks", TASKS, "--include_path", str(tasks_dir), "--limit", "7", "--batch_size", str(batch),
            "--device", "cpu", "--log_samples", "--output_path", str(out)]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _load(out: Path) -> dict:
    """Samples by (task, doc_id, filter), results, model-info totals and trace rows of one run."""
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        for line in path.read_text().splitlines():
            s = json.loads(line)
            samples[(s["doc_id"], s["filter"], path.name.split("_2")[0])] = s
    (results_path,) = list(out.rglob("results_*.json"))
    results = json.loads(results_path.read_text())
    traces = {p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in (out / "traces").glob("traces_*.jsonl")}
    return {"samples": samples, "results": results["results"], "totals": results["config"]["dllm_eval"]["totals"],
            "traces": traces}


def _same_traces(a: dict, b: dict) -> bool:
    """Same files, same rows in the same order, equal but for PLACEMENT (confidences to 1e-4)."""
    def keyed(traces):
        return {(name, i): {k: v for k, v in row.items() if k not in PLACEMENT}
                for name, rows in traces.items() for i, row in enumerate(rows)}

    return sorted(a) == sorted(b) and same_trace_rows(keyed(a), keyed(b))


@pytest.fixture(scope="module")
def one_process(tasks_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("one") / "out"
    _run([sys.executable, *_lm_eval_args(tasks_dir, out)], out.parent)
    return _load(out)


@pytest.mark.slow
def test_two_ranks_equal_one_process(one_process: dict, tasks_dir: Path, tmp_path: Path) -> None:
    assert set(PLACEMENT_FIELDS) == PLACEMENT  # the adapter's own list says the same
    out = tmp_path / "out"
    # `accelerate launch --cpu` starts one process (no MPI here); the torchrun launcher with
    # ACCELERATE_USE_CPU=1 starts two on the gloo backend.
    env_cpu = ["env", "ACCELERATE_USE_CPU=1"]
    cmd = [*env_cpu, str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           *_lm_eval_args(tasks_dir, out)]
    _run(cmd, tmp_path)
    two = _load(out)
    # both ranks decoded: the journal has a part per rank, and the merged traces record both ranks
    assert sorted(p.name for p in (out / "traces" / "journal").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    ranks = {row["rank"] for rows in two["traces"].values() for row in rows}
    assert ranks == {0, 1}
    # samples (answers, resps, filtered answers, per-doc metrics) and aggregate metrics are equal;
    # rank 1 was padded with a copy of its last request, which reached no sample
    assert two["samples"].keys() == one_process["samples"].keys() and len(two["samples"]) == 14 + 14
    assert two["samples"] == one_process["samples"]
    assert [len(s["resps"][0]) for k, s in sorted(two["samples"].items())  # rank 1's last doc
            if k[0] == 5 and "synth_math" not in k[2]] == [1, 2]
    assert any(k.startswith("exact_match_tier") for k in two["results"]["synth_math"])  # tiers survive the gather
    def same(a, b):  # a standard error summed in another order may differ in the last bit
        return a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-12 * max(abs(a), abs(b)))

    differ = {(t, k): (v, one_process["results"][t].get(k)) for t, r in two["results"].items() for k, v in r.items()
              if not same(v, one_process["results"][t].get(k))}
    assert differ == {} and two["results"].keys() == one_process["results"].keys()
    # one trace file per task, rows equal but for where/when they ran; no padding rows
    assert sorted(two["traces"]) == ["traces_scale_greedy.jsonl", "traces_scale_sampled.jsonl", "traces_synth_math.jsonl"]
    assert len(two["traces"]["traces_scale_sampled.jsonl"]) == 14 and len(two["traces"]["traces_scale_greedy.jsonl"]) == 7
    assert _same_traces(two["traces"], one_process["traces"])
    for key in ("requests", "nfe", "gen_tokens"):
        assert two["totals"][key] == one_process["totals"][key], key
    assert one_process["totals"]["requests"] == 21 + 7  # greedy 7, sampled 7 x 2, synth_math 7


@pytest.mark.slow
def test_killed_run_resumes_from_its_finished_requests(one_process: dict, tasks_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, *_lm_eval_args(tasks_dir, out, ",resume=true", batch=1)]
    journal = out / "traces" / "journal" / "rank0.jsonl"
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (journal.is_file() and len(journal.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # as hard as an out-of-time job gets
    finally:
        proc.wait()
    done = len([x for x in journal.read_text().splitlines() if x.strip()])
    assert 3 <= done < 28 and not list(out.rglob("results_*.json"))

    rerun = _run(cmd, tmp_path)
    assert f"rank 0 resumes {done} finished request(s), {28 - done} left" in rerun.stderr
    resumed = _load(out)
    assert resumed["samples"] == one_process["samples"]
    assert resumed["results"] == one_process["results"]
    assert _same_traces(resumed["traces"], one_process["traces"])
    assert resumed["totals"]["resumed_requests"] == done and resumed["totals"]["requests"] == 28
    assert resumed["totals"]["nfe"] == one_process["totals"]["nfe"]

"""`dllm-eval eval-all`: the config file, the commands it plans, resume and done-markers.

A stand-in for lm_eval (dllm_eval.analysis.synthetic, injected with --lm-eval-cmd) writes real
lm-eval-format output instantly, so resume logic is tested without a model.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import pytest

from dllm_eval import cli, matrix
from dllm_eval.errors import UserError

FAKE = f"{shlex.quote(sys.executable)} -m dllm_eval.analysis.synthetic"


def _args(**kw) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    matrix.add_arguments(p)
    argv: list[str] = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        else:
            argv += [flag, str(v)]
    return p.parse_args(argv)


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    """A small matrix config with a task folder that exists."""
    (tmp_path / "tasks").mkdir()
    text = f"""
settings:
  tasks: [synth_math, synth_code]
  seeds: [1]
  limit: {{cpu: 12, cuda: 400}}
  batch: 4
  include_path: {tmp_path / "tasks"}
  common_params: {{gen_length: 64}}
report: {{alpha: 0.05, min_effect: 0.05}}
baseline: base
configs:
  base: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.9}}, role: baseline}}
  aa: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.9}}, role: control_aa, control_of: base}}
  t03: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.3}}, role: control_degraded, control_of: base}}
"""
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------- the shipped config
def test_shipped_config_is_complete() -> None:
    mf = matrix.load_matrix_config()
    c = mf.configs
    assert mf.baseline == "fast_dllm_dual_t0.9" and c[mf.baseline].role == "baseline"
    assert c["fast_dllm_dual_t0.9_AA"].role == "control_aa"
    assert c["fast_dllm_dual_t0.9_AA"].params == c[mf.baseline].params  # identical config, other label
    assert c["fast_dllm_dual_t0.9_AA"].scheduler == c[mf.baseline].scheduler
    assert c["fast_dllm_dual_t0.3"].role == "control_degraded" and c["fast_dllm_dual_t0.3"].params["threshold"] == 0.3
    # one token per step: llada's steps default to gen_length, which follows each task's max_gen_toks
    assert "steps" not in c["llada_1tok"].params and "gen_length" not in mf.settings["common_params"]
    assert c["fast_dllm_prefix_t0.9"].params["cache"] == "prefix"
    assert c["fast_dllm_factor1.0"].params["factor"] == 1.0
    scheds = {v.scheduler for v in c.values()}
    for s in ("llada", "fast_dllm", "drs", "drs_uniform", "drs_v2", "adaptive", "adaptive_block", "adaptive_threshold",
              "tiered_cache"):
        assert s in scheds
    assert mf.settings["tasks"] == ["synth_math", "synth_code"]
    assert isinstance(mf.settings["limit"]["cpu"], int)
    assert all(v.description for v in c.values())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("configs: {a: {params: {}}}", "needs a 'scheduler:'"),
        ("configs: {a: {scheduler: x, role: boss}}", "has role 'boss'"),
        ("configs: {a: {scheduler: x, params: {device: cpu}}}", "sets device in params"),
        ("configs: {'a b': {scheduler: x}}", "may only use letters"),
        ("baseline: zz\nconfigs: {a: {scheduler: x}}", "'baseline: zz' is not one of the configs"),
        ("configs: {a: {scheduler: x, role: baseline}, b: {scheduler: y, role: baseline}}", "exactly one config"),
        ("configs: {a: {scheduler: x, role: control_aa, control_of: q}, b: {scheduler: x, role: baseline}}",
         "control of unknown config 'q'"),
        ("configs: [1, 2", "invalid YAML"),
        ("settings: {}", "needs a non-empty 'configs:'"),
    ],
)
def test_bad_config_files(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(UserError, match=message):
        matrix.load_matrix_config(p)


# ---------------------------------------------------------------- planning
def test_plan_commands(cfg: Path, tmp_path: Path) -> None:
    _, settings, cells, lm = matrix.plan(_args(config=cfg, device="cpu", lm_eval_cmd="lm_eval", results_dir=tmp_path / "r"))
    assert [c.name for c in cells] == ["base/seed1", "aa/seed1", "t03/seed1"]
    cmd = cells[2].command
    assert cmd[:5] == ["lm_eval", "--model", "dllm_adaptive", "--model_args", cmd[4]]
    margs = dict(kv.split("=", 1) for kv in cmd[4].split(","))
    assert margs["scheduler"] == "fast_dllm" and margs["threshold"] == "0.3" and margs["gen_length"] == "64"
    assert margs["seed"] == "1" and margs["trace_dir"].endswith("raw/t03/seed1/traces")
    assert "pretrained" not in margs  # the adapter's embedded default
    for flag, val in (("--tasks", "synth_math,synth_code"), ("--batch_size", "4"), ("--device", "cpu"),
                      ("--seed", "1"), ("--limit", "12")):
        assert cmd[cmd.index(flag) + 1] == val
    assert "--log_samples" in cmd and "--confirm_run_unsafe_code" in cmd
    assert cmd[cmd.index("--output_path") + 1].endswith("raw/t03/seed1")
    assert settings["limit"] == 12 and lm == ["lm_eval"]


def test_plan_options(cfg: Path, tmp_path: Path) -> None:
    _, s, cells, _ = matrix.plan(_args(config=cfg, device="cuda", model="/ckpt/x", schedulers="t03", seeds="3,4",
                                       tasks="synth_code", batch=8, lm_eval_cmd="lm_eval", results_dir=tmp_path))
    assert [c.name for c in cells] == ["base/seed3", "base/seed4", "t03/seed3", "t03/seed4"]  # baseline added
    assert s["limit"] == 400  # the cuda default
    cmd = cells[0].command
    assert cmd[4].startswith("pretrained=/ckpt/x,scheduler=fast_dllm")
    assert cmd[cmd.index("--tasks") + 1] == "synth_code" and cmd[cmd.index("--batch_size") + 1] == "8"
    _, s, cells, _ = matrix.plan(_args(config=cfg, device="cpu", limit="none", lm_eval_cmd="lm_eval"))
    assert s["limit"] is None and "--limit" not in cells[0].command


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"schedulers": "base,nope"}, "unknown configuration"),
        ({"seeds": "1,x"}, "--seeds must be comma-separated integers"),
        ({"seeds": "1,1"}, "lists a seed twice"),
        ({"limit": "-3"}, "--limit must be positive"),
        ({"limit": "abc"}, "--limit must be an integer"),
        ({"run": "a/b"}, "--run 'a/b'"),
    ],
)
def test_plan_errors(cfg: Path, kw: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        matrix.plan(_args(config=cfg, device="cpu", lm_eval_cmd="lm_eval", **kw))


def test_plan_missing_task_folder(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("settings: {include_path: /no/such/dir, tasks: [t]}\nconfigs: {a: {scheduler: x, role: baseline}}")
    with pytest.raises(UserError, match="task folder /no/such/dir not found"):
        matrix.plan(_args(config=p, device="cpu"))


# ---------------------------------------------------------------- running, resume, markers
def _read_log(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.exists() else []


@pytest.mark.slow
def test_resume_redoes_only_unfinished_cells(cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("DLLM_EVAL_FAKE_LOG", str(log))
    monkeypatch.setenv("DLLM_EVAL_FAKE_FAIL", "threshold=0.3")  # the t03 cell dies after writing samples
    monkeypatch.setattr("dllm_eval.analysis.report.N_RESAMPLES", 199)
    argv = ["eval-all", "--config", str(cfg), "--device", "cpu", "--run", "r1", "--lm-eval-cmd", FAKE]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "t03/seed1 failed (exit 3)" in err and "1 run(s) failed: t03/seed1" in err
    raw = tmp_path / "results" / "r1" / "raw"
    assert (raw / "base" / "seed1" / ".done.json").is_file()
    assert (raw / "aa" / "seed1" / ".done.json").is_file()
    assert not (raw / "t03" / "seed1" / ".done.json").exists()
    assert (raw / "t03" / "seed1" / "lm_eval.log").is_file()
    assert len(_read_log(log)) == 3
    # a report was still written from the finished cells, noting the unfinished one
    md = (tmp_path / "results" / "r1" / "report.md").read_text()
    assert "skipped raw/t03/seed1" in md
    m = json.loads((tmp_path / "results" / "r1" / "matrix.json").read_text())
    status = {c["cell"]: c["status"] for c in m["cells"]}
    assert status == {"base/seed1": "done", "aa/seed1": "done", "t03/seed1": "failed (exit 3)"}
    assert m["baseline"] == "base" and m["configs"]["aa"]["role"] == "control_aa"
    assert m["settings"]["limit"] == 12 and "python" in m["environment"]

    # resume: only the failed cell runs again; its partial folder is wiped first
    stray = raw / "t03" / "seed1" / "stray.txt"
    stray.write_text("left over")
    monkeypatch.delenv("DLLM_EVAL_FAKE_FAIL")
    assert cli.main(argv) == 0
    calls = _read_log(log)
    assert len(calls) == 4 and "threshold=0.3" in calls[-1]
    assert not stray.exists()
    marker = json.loads((raw / "t03" / "seed1" / ".done.json").read_text())
    assert marker["returncode"] == 0 and marker["command"][-1] == "--confirm_run_unsafe_code"
    assert marker["command_str"].startswith(shlex.quote(sys.executable))
    md = (tmp_path / "results" / "r1" / "report.md").read_text()
    assert "skipped raw/" not in md  # the unfinished-cell note is gone
    assert "PASS: no difference detected" in md
    assert "FAIL: not flagged as worse on all tasks (pooled); the run is too small" in md  # 24 pairs: said plainly
    from dllm_eval.portable import portable

    # the exact command is in the report, without machine paths, relative to the run folder
    assert portable(marker["command_str"]).replace("results/r1/", "") in md
    assert "/work/" not in md and sys.executable not in md
    assert (tmp_path / "results" / "r1" / "fig_acc_vs_tps_synth_math.png").is_file()

    # a third call finds everything done and runs nothing
    assert cli.main([*argv, "--no-report"]) == 0
    assert len(_read_log(log)) == 4

    # different settings for the same run name: refused before anything runs
    assert cli.main([*argv, "--limit", "5"]) == 2
    assert "finished with different settings" in capsys.readouterr().err
    assert len(_read_log(log)) == 4


def test_dry_run_prints_commands(cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval-all", "--config", str(cfg), "--device", "cpu", "--dry-run", "--lm-eval-cmd", "lm_eval"]) == 0
    out = capsys.readouterr().out
    assert out.count("lm_eval --model dllm_adaptive") == 3 and "# base/seed1 [new]" in out
    assert not (tmp_path / "results").exists()


def test_missing_lm_eval_command(cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["eval-all", "--config", str(cfg), "--device", "cpu", "--lm-eval-cmd", "/no/such/lm_eval",
                   "--no-report"])
    assert rc == 2
    assert "cannot start lm_eval (/no/such/lm_eval)" in capsys.readouterr().err


def test_shipped_configs_construct_with_registered_schedulers() -> None:
    """Every configuration names a registered scheduler and its parameters are accepted."""
    from dllm_eval.schedulers import SCHEDULERS, get_scheduler

    mf = matrix.load_matrix_config()
    for cfg in mf.configs.values():
        assert cfg.scheduler in SCHEDULERS, f"{cfg.label}: unknown scheduler {cfg.scheduler}"
        sched = get_scheduler(cfg.scheduler, **{**mf.settings["common_params"], **cfg.params, "gen_length": 96})
        if cfg.label == "llada_1tok":
            assert getattr(sched.params, "total_steps", 96) == 96  # one token per step at any gen_length
    for name, members in mf.groups.items():
        assert set(members) <= set(mf.configs), name


def test_groups_expand_and_opt_in_configs_stay_out_of_the_default(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("configs: {base: {scheduler: fast_dllm, role: baseline}, a: {scheduler: llada},\n"
                 "          x: {scheduler: llada, default: false}, y: {scheduler: drs, default: false}}\n"
                 "groups: {extra: [x, y]}\n")
    mf = matrix.load_matrix_config(p)
    assert mf.default_labels() == ["base", "a"]
    assert mf.expand(["extra", "a", "x"]) == ["x", "y", "a"]
    with pytest.raises(UserError, match="unknown configuration 'nope'"):
        mf.expand(["nope"])
    p.write_text("configs: {base: {scheduler: fast_dllm, role: baseline}}\ngroups: {g: [missing]}\n")
    with pytest.raises(UserError, match="group 'g' lists unknown configs missing"):
        matrix.load_matrix_config(p)


def test_tasks_by_device_picks_the_gpu_task_list(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("settings: {tasks: [synth_math], tasks_by_device: {cuda: [synth_math, dllm_math500]}}\n"
                 "configs: {base: {scheduler: fast_dllm, role: baseline}}\n")
    for device, tasks in (("cpu", ["synth_math"]), ("cuda:0", ["synth_math", "dllm_math500"])):
        _, settings, _cells, _ = matrix.plan(_args(config=p, device=device, lm_eval_cmd="lm_eval", results_dir=tmp_path / "r"))
        assert settings["tasks"] == tasks


def test_models_runs_the_matrix_per_model_and_reports_agreement_per_claim(
        cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dllm_eval.analysis.report.N_RESAMPLES", 199)
    argv = ["eval-all", "--config", str(cfg), "--device", "cpu", "--run", "two", "--lm-eval-cmd", FAKE,
            "--models", "org/model-a,tiny_dream"]
    assert cli.main(argv) == 0
    root = tmp_path / "results" / "two"
    for slug in ("org__model-a", "tiny_dream"):
        assert (root / slug / "report.md").is_file() and (root / slug / "raw" / "base" / "seed1" / ".done.json").is_file()
        margs = json.loads((root / slug / "matrix.json").read_text())["cells"][0]["command"]
        assert ("pretrained=org/model-a" if slug == "org__model-a" else "pretrained=tiny_dream") in margs
        # what is committed next to a report names no machine path; the resume marker keeps the exact command
        record = (root / slug / "matrix.json").read_text()
        assert str(tmp_path) not in record and sys.executable not in record
        assert json.loads(record)["cwd"] == "." and margs.startswith("python -m dllm_eval.analysis.synthetic")
        marker = json.loads((root / slug / "raw" / "base" / "seed1" / ".done.json").read_text())
        assert marker["command"][0] == sys.executable
    md = (root / "report.md").read_text()
    assert "## Seed claims across models" in md and "| `org__model-a` | `tiny_dream` | models agree? |" in md
    assert "## Model `org__model-a`" in md and "## Model `tiny_dream`" in md
    assert md.count("### synth_math") >= 2  # one table set per model, headings one level down
    assert cli.main([*argv[:-2], "--models", "a/x,a__x", "--model", "m"]) == 2  # both flags: one-line error

"""The evaluation matrix file (`configs/eval_matrix.yaml`): named scheduler configurations,
their roles (baseline, controls) and the run settings, read and validated in one place.

A leaf module: `matrix` (the runner) and `analysis` (the report) both read it, and it imports
neither, so the runner -> report -> loading chain has no circle back to the runner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dllm_eval.errors import UserError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "eval_matrix.yaml"
SWEEP_DIR = "sweep"  # <run>/sweep/gen<L>/: the generation-length sweep, one sub-run per length
_SWEEP_RE = re.compile(r"^gen([1-9][0-9]*)$")


def sweep_dirs(run_root: str | Path) -> dict[int, Path]:
    """The generation-length sweep's sub-runs of a run folder, by length (written by eval-all, read by the report)."""
    base = Path(run_root) / SWEEP_DIR
    if not base.is_dir():
        return {}
    found = {int(m.group(1)): p for p in base.iterdir() if p.is_dir() and (m := _SWEEP_RE.match(p.name))}
    return dict(sorted(found.items()))
ROLES = {"baseline", "control_aa", "control_degraded"}
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class MatrixConfig:
    """One named scheduler configuration from eval_matrix.yaml."""

    label: str
    scheduler: str
    params: dict[str, Any] = field(default_factory=dict)
    role: str | None = None
    control_of: str | None = None
    description: str = ""
    in_default: bool = True  # `default: false` in the file: run only when named (or by its group)


@dataclass
class MatrixFile:
    path: Path
    settings: dict[str, Any]
    report: dict[str, Any]
    baseline: str
    configs: dict[str, MatrixConfig]
    groups: dict[str, list[str]] = field(default_factory=dict)

    def expand(self, names: list[str]) -> list[str]:
        """Labels and group names (`SCHEDULERS=peers`) -> labels, in order, without repeats."""
        out: list[str] = []
        for name in names:
            for label in self.groups.get(name, [name]):
                if label not in self.configs:
                    known = ", ".join([*self.configs, *(f"{g} (group)" for g in self.groups)])
                    raise UserError(f"unknown configuration {label!r}; the config file {self.path.name} defines: {known}")
                if label not in out:
                    out.append(label)
        return out

    def default_labels(self) -> list[str]:
        return [c.label for c in self.configs.values() if c.in_default or c.label == self.baseline]


def load_matrix_config(path: str | Path | None = None) -> MatrixFile:
    """Read and validate eval_matrix.yaml; every problem is a one-line UserError."""
    p = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read matrix config {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("configs"), dict) or not raw["configs"]:
        raise UserError(f"{p}: needs a non-empty 'configs:' mapping of label -> {{scheduler, params}}")
    configs: dict[str, MatrixConfig] = {}
    for label, spec in raw["configs"].items():
        label = str(label)
        if not _LABEL_RE.match(label):
            raise UserError(f"{p}: config label {label!r} may only use letters, digits and _ . + -")
        if not isinstance(spec, dict) or not spec.get("scheduler"):
            raise UserError(f"{p}: config {label!r} needs a 'scheduler:' name")
        params = spec.get("params") or {}
        if not isinstance(params, dict):
            raise UserError(f"{p}: config {label!r}: 'params' must be a mapping")
        bad = {"device", "batch_size", "seed", "trace_dir", "pretrained"} & set(params)
        if bad:
            raise UserError(
                f"{p}: config {label!r} sets {', '.join(sorted(bad))} in params; those come from the "
                "eval-all options (--device, --batch, --seeds, --model)"
            )
        role = spec.get("role")
        if role is not None and role not in ROLES:
            raise UserError(f"{p}: config {label!r} has role {role!r}; use one of {', '.join(sorted(ROLES))}")
        configs[label] = MatrixConfig(
            label=label,
            scheduler=str(spec["scheduler"]),
            params=dict(params),
            role=role,
            control_of=spec.get("control_of"),
            description=str(spec.get("description") or ""),
            in_default=bool(spec.get("default", True)),
        )
    baselines = [c.label for c in configs.values() if c.role == "baseline"]
    baseline = raw.get("baseline") or (baselines[0] if baselines else None)
    if baseline not in configs:
        raise UserError(f"{p}: 'baseline: {baseline}' is not one of the configs ({', '.join(configs)})")
    if len(baselines) > 1 or (baselines and baselines[0] != baseline):
        raise UserError(f"{p}: exactly one config may have role: baseline, and it must be {baseline!r}")
    configs[baseline].role = "baseline"
    for c in configs.values():
        if c.control_of and c.control_of not in configs:
            raise UserError(f"{p}: config {c.label!r} is a control of unknown config {c.control_of!r}")
    settings = raw.get("settings") or {}
    report = raw.get("report") or {}
    if not isinstance(settings, dict) or not isinstance(report, dict):
        raise UserError(f"{p}: 'settings' and 'report' must be mappings")
    groups = raw.get("groups") or {}
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise UserError(f"{p}: 'groups' must map a group name to a list of config labels")
    for name, members in groups.items():
        if name in configs:
            raise UserError(f"{p}: group {name!r} has the name of a config; rename one of them")
        missing = [m for m in members if m not in configs]
        if missing:
            raise UserError(f"{p}: group {name!r} lists unknown configs {', '.join(map(str, missing))}")
    return MatrixFile(path=p, settings=settings, report=report, baseline=baseline, configs=configs,
                      groups={str(k): [str(m) for m in v] for k, v in groups.items()})

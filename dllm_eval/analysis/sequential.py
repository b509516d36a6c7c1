"""Group-sequential stopping for paired binary comparisons: decide early, with the error rate kept.

Documents are revealed in K looks (for example 5 equal fractions of a maximum n). After each look
every still-open comparison (a configuration against the baseline, on the same documents) is
judged with a *repeated confidence interval* (RCI, Jennison & Turnbull 2000, ch. 9):

    RCI_k = d_k +- c_k(alpha') * se_k

where d_k is the paired accuracy difference so far, se_k its standard error, and c_k(alpha') the
two-sided group-sequential boundary that spends alpha' over the looks with the Lan-DeMets
O'Brien-Fleming-like function (alpha'/2 per side, each spent as 2 - 2 Phi(z_{1-alpha'/4} / sqrt(t)),
t = n_k / n_max).
RCIs hold the true difference at *every* look simultaneously with probability >= 1 - alpha', so a
decision read off the RCI at whatever look a run stops is valid there. From the RCI:

* better: RCI above 0; worse: RCI below 0 (this is the group-sequential test of no difference);
* equivalent: RCI inside (-mde, +mde), the minimum effect of interest (a TOST-type decision
  with the same spending: each one-sided test at alpha'/2, so conservative against a TOST at alpha');
* otherwise continue; at the last look, *undecided*.

Across comparisons, alpha' is Holm's: alpha / (m - r), with m the family size and r the
comparisons already found better or worse (the graphical group-sequential Holm of Maurer & Bretz
2013: a rejected hypothesis passes its alpha on, and the others' boundaries are recomputed at the
larger level; we test only the current look with the new boundary, which rejects no more than
their procedure, so the family-wise error stays <= alpha). An *equivalent* comparison does not
pass its alpha on. A configuration stops when all its comparisons are decided.

The difference and its SE use Agresti & Min's (2005) adjustment (half a pair added to each of the
four cells): the plain Wald SE is 0 when no pair is discordant yet, which would make any early look
look "equivalent". The stopping rule is a pure function of the paired outcomes so far (``decide``),
so it can be simulated independently of the runner (``simulate``), and is in the tests.

API for the runner (``eval-all --sequential``)::

    plan = SequentialPlan(n_max=400, looks=5, alpha=0.05, mde=0.05, family_size=8)
    for k in range(1, plan.k + 1):
        run the first plan.look_sizes[k-1] documents of every still-running configuration
        decisions = decide(plan, {(config, task): (correct_a, correct_base), ...}, look=k)
        running = {d.configuration for d in decisions if not d.decided}
        if not running: break
    write to_record(plan, decisions) as <run>/sequential.json (the report renders it)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as st

__all__ = [
    "Decision",
    "SequentialPlan",
    "SimulationResult",
    "boundaries",
    "configuration_stops",
    "decide",
    "decide_counts",
    "render_sequential_record",
    "render_sequential_section",
    "simulate",
    "spending",
    "to_record",
]

BETTER, WORSE, EQUIVALENT = "better", "worse", "equivalent"
CONTINUE, UNDECIDED, TOO_FEW = "continue", "undecided", "too few units"
DECIDED = (BETTER, WORSE, EQUIVALENT)


# --------------------------------------------------------------------------------------------
# alpha spending and boundaries
# --------------------------------------------------------------------------------------------


def spending(t: float | np.ndarray, alpha: float, kind: str = "obf") -> float | np.ndarray:
    """Cumulative two-sided alpha spent by information fraction t (Lan & DeMets 1983).

    Symmetric two-sided designs spend alpha/2 on each side. ``obf``: each side spends
    2 - 2 Phi(z_{1-alpha/4}/sqrt(t)) of its alpha/2, almost nothing early (O'Brien-Fleming-like;
    gsDesign's ``sfLDOF`` with test.type=2, so its published boundaries are an oracle);
    ``pocock``: alpha ln(1 + (e - 1) t). Both spend exactly alpha at t = 1.
    """
    tt = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if kind == "obf":
        with np.errstate(divide="ignore"):
            out = np.where(tt > 0, 2 * (2 - 2 * st.norm.cdf(st.norm.ppf(1 - alpha / 4) / np.sqrt(tt))), 0.0)
    elif kind == "pocock":
        out = alpha * np.log1p((math.e - 1) * tt)
    else:
        raise ValueError(f"unknown spending function {kind!r}; use 'obf' or 'pocock'")
    return float(out) if np.ndim(t) == 0 else out


_GRID = 601  # Simpson points per look; the boundaries are accurate to ~1e-5 (checked against gsDesign)


def _simpson(b: float, n: int = _GRID) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-b, b, n)
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return x, w * (x[1] - x[0]) / 3


@lru_cache(maxsize=256)
def boundaries(fractions: tuple[float, ...], alpha: float, kind: str = "obf") -> tuple[float, ...]:
    """Two-sided z boundaries c_1..c_K spending ``alpha`` at the information ``fractions``.

    Recursive numerical integration (Armitage, McPherson & Rowe 1969; Jennison & Turnbull ch. 19)
    on the B-value scale W_k = Z_k sqrt(t_k), whose increments are independent N(0, t_k - t_{k-1}):
    c_k solves P(no crossing before k, |Z_k| >= c_k) = alpha(t_k) - alpha(t_{k-1}). A look that is
    given nothing to spend gets an infinite boundary.
    """
    t = np.asarray(fractions, dtype=float)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or abs(t[-1] - 1.0) > 1e-9:
        raise ValueError(f"information fractions must increase strictly from > 0 to 1, got {fractions}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cum = spending(t, alpha, kind)
    inc = np.diff(np.concatenate([[0.0], cum]))
    out: list[float] = []
    x = w = f = None  # grid, weights and sub-density of W on the previous look's continuation region
    for k in range(t.size):
        if k == 0:
            c = float(st.norm.isf(inc[0] / 2)) if inc[0] > 0 else math.inf
            b = c * math.sqrt(t[0])
            out.append(c)
            x, w = _simpson(b)
            f = st.norm.pdf(x, scale=math.sqrt(t[0]))
            continue
        sd = math.sqrt(t[k] - t[k - 1])
        fw = f * w

        def cross(bk: float, fw=fw, x=x, sd=sd) -> float:
            return float(np.sum(fw * (st.norm.sf((bk - x) / sd) + st.norm.cdf((-bk - x) / sd))))

        if inc[k] <= 1e-15:
            c = math.inf
        else:
            hi = 50.0 * math.sqrt(t[k])
            b = optimize.brentq(lambda bk, target=inc[k]: cross(bk) - target, 1e-9, hi, xtol=1e-10)
            c = b / math.sqrt(t[k])
        out.append(float(c))
        if k + 1 < t.size:
            bk = min(c * math.sqrt(t[k]), 50.0 * math.sqrt(t[k]))
            xn, wn = _simpson(bk)
            f = (st.norm.pdf((xn[:, None] - x[None, :]) / sd) / sd) @ fw
            x, w = xn, wn
    return tuple(out)


# --------------------------------------------------------------------------------------------
# the plan and the decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequentialPlan:
    """A group-sequential design fixed before the run (pre-registered: it must not depend on outcomes).

    ``looks``: the number of equally spaced looks, or the information fractions themselves
    (increasing, ending at 1). ``mde``: the minimum effect of interest as a fraction (0.05 = 5
    points): the equivalence margin. ``family_size``: the comparisons sharing the family-wise
    ``alpha`` (default: as many as are passed to ``decide``). ``multiplicity``: ``holm`` (alpha
    recycled from comparisons found better or worse) or ``bonferroni`` (alpha/m throughout).
    """

    n_max: int
    looks: int | tuple[float, ...] = 5
    alpha: float = 0.05
    mde: float = 0.05
    family_size: int | None = None
    spending: str = "obf"
    multiplicity: str = "holm"
    min_units: int = 20

    def __post_init__(self) -> None:
        if self.n_max < 1:
            raise ValueError(f"n_max must be positive, got {self.n_max}")
        if not 0 < self.mde < 1:
            raise ValueError(f"mde is a fraction of accuracy in (0, 1), got {self.mde}")
        if self.multiplicity not in ("holm", "bonferroni"):
            raise ValueError(f"multiplicity must be 'holm' or 'bonferroni', got {self.multiplicity!r}")
        if len(set(self.look_sizes)) != len(self.look_sizes):
            raise ValueError(f"looks {self.fractions} at n_max={self.n_max} give repeated look sizes {self.look_sizes}")
        boundaries(self.fractions, self.alpha, self.spending)  # validates fractions and alpha

    @property
    def fractions(self) -> tuple[float, ...]:
        if isinstance(self.looks, int):
            if self.looks < 1:
                raise ValueError(f"need at least one look, got {self.looks}")
            return tuple((i + 1) / self.looks for i in range(self.looks))
        return tuple(float(x) for x in self.looks)

    @property
    def k(self) -> int:
        return len(self.fractions)

    @property
    def look_sizes(self) -> tuple[int, ...]:
        """Documents revealed by each look: ceil(t_k n_max)."""
        return tuple(min(self.n_max, math.ceil(t * self.n_max - 1e-9)) for t in self.fractions)

    def boundary(self, look: int, level: float) -> float:
        """The z boundary of ``look`` (1-based) for a comparison tested at ``level``."""
        t = tuple(n / self.n_max for n in self.look_sizes)  # the fractions actually reached
        return boundaries(t, level, self.spending)[look - 1]


@dataclass(frozen=True)
class Decision:
    """One comparison after a look: its status, why, and its repeated confidence interval.

    ``status``: better | worse | equivalent (decided, frozen at ``look``), continue (open),
    undecided (open at the last look), too few units. ``estimate`` is the plain paired difference
    (b - c)/n; ``rci_low``/``rci_high`` the RCI at ``level`` (valid at the look where it stopped).
    """

    comparison: Hashable
    configuration: Hashable
    status: str
    look: int
    n: int
    b: int
    c: int
    estimate: float
    rci_low: float
    rci_high: float
    z: float
    boundary: float
    level: float
    reason: str

    @property
    def decided(self) -> bool:
        return self.status in DECIDED


def _stat(n: int, b: int, c: int) -> tuple[float, float]:
    """Agresti-Min adjusted paired difference and its SE (0.5 added to each of the 4 cells)."""
    nn = n + 2.0
    d = (b - c) / nn
    pd = (b + c + 1.0) / nn
    return d, math.sqrt(max(pd - d * d, 1e-12) / nn)


def _config_of(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else key


def decide_counts(
    plan: SequentialPlan,
    counts: Mapping[Hashable, Sequence[tuple[int, int]]],
    look: int,
    configuration_of: Mapping[Hashable, Hashable] | None = None,
) -> list[Decision]:
    """``decide`` from cumulative discordant counts: counts[key][j] = (b, c) after look j+1.

    Replays looks 1..``look`` so that the result depends only on the outcomes so far: decisions
    made at a look are frozen; a configuration whose comparisons are all decided is not looked
    at again; Holm's alpha grows as comparisons are found better or worse.
    """
    if not 1 <= look <= plan.k:
        raise ValueError(f"look must be in 1..{plan.k}, got {look}")
    keys = list(counts)
    m = plan.family_size or len(keys)
    if m < len(keys):
        raise ValueError(f"family_size {m} is smaller than the {len(keys)} comparisons given")
    cfg = {k: (configuration_of or {}).get(k, _config_of(k)) for k in keys}
    sizes = plan.look_sizes
    final: dict[Hashable, Decision] = {}
    rejected = 0
    latest: dict[Hashable, Decision] = {}
    for j in range(1, look + 1):
        n = sizes[j - 1]
        stopped = {cfg[k] for k in keys} - {cfg[k] for k in keys if k not in final}
        open_keys = [k for k in keys if k not in final and cfg[k] not in stopped]
        changed = True
        while changed:  # Holm step-down within the look: a rejection raises the others' level
            changed = False
            level = plan.alpha / max(m - rejected, 1) if plan.multiplicity == "holm" else plan.alpha / m
            cb = plan.boundary(j, level)
            for k in open_keys:
                if k in final:
                    continue
                b, c = (int(v) for v in counts[k][j - 1])
                if b + c > n:
                    raise ValueError(f"{k}: {b}+{c} discordant pairs among {n} documents at look {j}")
                d, se = _stat(n, b, c)
                lo, hi = d - cb * se, d + cb * se
                est = (b - c) / n
                last = j == plan.k
                if n < plan.min_units:
                    status, why = TOO_FEW, f"n = {n} < {plan.min_units} documents: no decision at this look"
                elif lo > 0:
                    status, why = BETTER, f"RCI above 0 at look {j} (|z| = {d / se:.2f} >= {cb:.2f})"
                elif hi < 0:
                    status, why = WORSE, f"RCI below 0 at look {j} (|z| = {-d / se:.2f} >= {cb:.2f})"
                elif -plan.mde < lo and hi < plan.mde:
                    status, why = EQUIVALENT, f"RCI inside ±{100 * plan.mde:.1f} pts at look {j}"
                elif last:
                    status, why = UNDECIDED, f"RCI holds 0 and reaches ±{100 * plan.mde:.1f} pts at the last look"
                else:
                    status, why = CONTINUE, "RCI holds 0 and reaches the minimum effect: more documents needed"
                dec = Decision(k, cfg[k], status, j, n, b, c, est, lo, hi, d / se, cb, level, why)
                latest[k] = dec
                if status in DECIDED:
                    final[k] = dec
                    if status in (BETTER, WORSE) and plan.multiplicity == "holm":
                        rejected += 1
                        changed = True
                        break  # recompute the level for the rest of this look
    return [final[k] if k in final else latest[k] for k in keys]


def decide(
    plan: SequentialPlan,
    outcomes_by_comparison: Mapping[Hashable, tuple[Sequence[float], Sequence[float]]],
    look: int,
    configuration_of: Mapping[Hashable, Hashable] | None = None,
) -> list[Decision]:
    """Decisions after ``look`` from paired 0/1 outcomes (configuration, baseline) per comparison.

    Each value is (a, b): the configuration's and the baseline's scores on the same documents in the
    reveal order (which must not depend on outcomes); only the first ``plan.look_sizes[j]`` are
    read at look j. Keys are comparison ids; a tuple key's first element names its configuration
    unless ``configuration_of`` says otherwise.
    """
    counts: dict[Hashable, list[tuple[int, int]]] = {}
    for key, (a, b) in outcomes_by_comparison.items():
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        need = plan.look_sizes[look - 1]
        if x.shape != y.shape or x.ndim != 1 or x.size < need:
            raise ValueError(f"{key}: need two 1-D outcome vectors of at least {need} documents, got {x.shape}, {y.shape}")
        if not np.all(np.isin(x[:need], (0, 1)) & np.isin(y[:need], (0, 1))):
            raise ValueError(f"{key}: outcomes must be 0/1")
        bc = np.cumsum(np.stack([(x == 1) & (y == 0), (x == 0) & (y == 1)], axis=1), axis=0)
        counts[key] = [(int(bc[n - 1, 0]), int(bc[n - 1, 1])) for n in plan.look_sizes[:look]]
    return decide_counts(plan, counts, look, configuration_of)


@dataclass(frozen=True)
class ConfigurationStop:
    configuration: Hashable
    stopped: bool
    look: int
    n: int
    reason: str


def configuration_stops(plan: SequentialPlan, decisions: Sequence[Decision]) -> list[ConfigurationStop]:
    """Per configuration: stopped (all comparisons decided) at which look and why, or still open."""
    by: dict[Hashable, list[Decision]] = {}
    for d in decisions:
        by.setdefault(d.configuration, []).append(d)
    out = []
    for cfg, ds in by.items():
        if all(d.decided for d in ds):
            j = max(d.look for d in ds)
            words = ", ".join(f"{d.comparison if not isinstance(d.comparison, tuple) else '/'.join(map(str, d.comparison[1:]))}"
                              f" {d.status}" for d in ds)
            out.append(ConfigurationStop(cfg, True, j, plan.look_sizes[j - 1], f"all comparisons decided ({words})"))
        else:
            j = max(d.look for d in ds)
            open_ = [d for d in ds if not d.decided]
            last = j == plan.k
            why = ("reached the maximum n with " if last else "running: ") + ", ".join(
                f"{d.comparison if not isinstance(d.comparison, tuple) else '/'.join(map(str, d.comparison[1:]))} {d.status}"
                for d in open_)
            out.append(ConfigurationStop(cfg, last, j, plan.look_sizes[j - 1], why))
    return out


# --------------------------------------------------------------------------------------------
# report section
# --------------------------------------------------------------------------------------------


def _jsonable_key(k: Hashable) -> Any:
    return list(k) if isinstance(k, tuple) else k


def to_record(plan: SequentialPlan, decisions: Sequence[Decision]) -> dict[str, Any]:
    """A JSON-able record of the plan and the decisions (the runner writes it as sequential.json)."""
    p = asdict(plan)
    p["looks"] = list(plan.fractions)
    p["look_sizes"] = list(plan.look_sizes)
    return {
        "plan": p,
        "decisions": [{**asdict(d), "comparison": _jsonable_key(d.comparison), "configuration": _jsonable_key(d.configuration)}
                      for d in decisions],
    }


def _from_record(rec: Mapping[str, Any]) -> tuple[SequentialPlan, list[Decision]]:
    p = dict(rec["plan"])
    p.pop("look_sizes", None)
    p["looks"] = tuple(p["looks"])
    plan = SequentialPlan(**p)
    decs = []
    for d in rec["decisions"]:
        d = dict(d)
        for key in ("comparison", "configuration"):
            if isinstance(d[key], list):
                d[key] = tuple(d[key])
        decs.append(Decision(**d))
    return plan, decs


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.1f}"


def render_sequential_section(plan: SequentialPlan, decisions: Sequence[Decision]) -> list[str]:
    """Markdown lines: the design, then per configuration at which look it stopped and why."""
    sizes = ", ".join(map(str, plan.look_sizes))
    L = [
        "## Sequential stopping",
        "",
        f"Documents were revealed in {plan.k} looks (after {sizes} of at most {plan.n_max} documents). After each look every "
        f"open comparison was judged by its repeated confidence interval (RCI): {plan.spending.upper()}-like Lan-DeMets "
        f"alpha spending, {plan.multiplicity.capitalize()} across the {plan.family_size or len(decisions)} comparisons at "
        f"α = {plan.alpha}. *better*/*worse*: the RCI excludes 0; *equivalent*: the RCI lies inside ±{100 * plan.mde:.1f} pts "
        "(the minimum effect of interest). A configuration stops when all its comparisons are decided. The intervals below "
        "are the RCIs at the look where each comparison was decided (or the last look), valid there; they are wider than "
        "fixed-n intervals on purpose.",
        "",
    ]
    stops = configuration_stops(plan, decisions)
    L += ["| Configuration | Stopped | At look (documents) | Why |", "|---|---|---|---|"]
    for s in stops:
        L.append(f"| `{s.configuration}` | {'yes' if s.stopped else 'no'} | {s.look} ({s.n}) | {s.reason} |")
    L += ["", "| Comparison | Status | Look (n) | b/c | Δ pts | RCI pts | level | Reason |", "|---|---|---|---|---|---|---|---|"]
    for d in decisions:
        comp = "/".join(map(str, d.comparison)) if isinstance(d.comparison, tuple) else str(d.comparison)
        L.append(f"| `{comp}` | **{d.status}** | {d.look} ({d.n}) | {d.b}/{d.c} | {_fmt(d.estimate)} | "
                 f"[{_fmt(d.rci_low)}, {_fmt(d.rci_high)}] | {d.level:.4f} | {d.reason} |")
    return [*L, ""]


def render_sequential_record(record: Mapping[str, Any]) -> list[str]:
    """``render_sequential_section`` from a ``to_record`` dict (what the report reads from sequential.json)."""
    plan, decs = _from_record(record)
    return render_sequential_section(plan, decs)


# --------------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationResult:
    """Operating characteristics of a plan, estimated from ``sims`` simulated studies.

    ``fwer``: share of studies with any false better/worse among the comparisons whose true effect
    is 0; ``power``: share of comparisons with a true effect decided in its direction;
    ``equivalent``: share of null comparisons decided equivalent; ``docs_fraction``: mean documents
    used per configuration / n_max; each with its Monte Carlo SE (``*_se``).
    """

    sims: int
    fwer: float
    fwer_se: float
    power: float
    power_se: float
    equivalent: float
    docs_fraction: float
    docs_fraction_se: float
    mean_stop_look: float
    per_study_power: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def simulate(
    plan: SequentialPlan,
    effects: Sequence[float],
    discordance: float,
    *,
    sims: int = 2000,
    rng: int | np.random.Generator = 0,
) -> SimulationResult:
    """Run ``decide_counts`` (the production rule) on ``sims`` simulated studies.

    One configuration per entry of ``effects`` (its true accuracy difference against the baseline),
    each with one comparison; discordant pairs arrive with probabilities p10 = (pi + delta)/2,
    p01 = (pi - delta)/2 with pi = max(discordance, |delta|). Counts per look are drawn as
    multinomial increments (vectorised); the decision rule then runs once per study.
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    eff = np.asarray(effects, dtype=float)
    m = eff.size
    sizes = np.asarray(plan.look_sizes)
    inc = np.diff(np.concatenate([[0], sizes]))
    cum = np.zeros((sims, m, plan.k, 2), dtype=np.int64)
    for i, delta in enumerate(eff):
        pd = max(discordance, abs(delta))
        p = [(pd + delta) / 2, (pd - delta) / 2, 1 - pd]
        draws = np.stack([g.multinomial(int(n), p, size=sims)[:, :2] for n in inc], axis=1)  # (sims, K, 2)
        cum[:, i] = np.cumsum(draws, axis=1)
    null = eff == 0
    false_pos = np.zeros(sims, dtype=bool)
    hits = np.zeros((sims, m), dtype=bool)
    equiv = np.zeros((sims, m), dtype=bool)
    docs = np.zeros((sims, m))
    stop_look = np.zeros((sims, m))
    keys = [f"c{i}" for i in range(m)]
    for s in range(sims):
        counts = {keys[i]: [tuple(cum[s, i, j]) for j in range(plan.k)] for i in range(m)}
        decs = decide_counts(plan, counts, plan.k)
        for i, d in enumerate(decs):
            sign = 1 if d.status == BETTER else (-1 if d.status == WORSE else 0)
            if null[i] and sign != 0:
                false_pos[s] = True
            if not null[i] and sign == np.sign(eff[i]):
                hits[s, i] = True
            equiv[s, i] = d.status == EQUIVALENT
            docs[s, i] = d.n
            stop_look[s, i] = d.look
    fwer = float(false_pos.mean()) if null.any() else math.nan
    eff_cols = ~null
    pw = hits[:, eff_cols].mean(axis=1) if eff_cols.any() else np.full(sims, math.nan)
    power = float(pw.mean()) if eff_cols.any() else math.nan
    frac = docs.mean(axis=1) / plan.n_max
    return SimulationResult(
        sims=sims,
        fwer=fwer,
        fwer_se=math.sqrt(max(fwer * (1 - fwer), 1e-12) / sims) if math.isfinite(fwer) else math.nan,
        power=power,
        power_se=float(pw.std(ddof=1) / math.sqrt(sims)) if eff_cols.any() else math.nan,
        equivalent=float(equiv[:, null].mean()) if null.any() else math.nan,
        docs_fraction=float(frac.mean()),
        docs_fraction_se=float(frac.std(ddof=1) / math.sqrt(sims)),
        mean_stop_look=float(stop_look.mean()),
        per_study_power=pw,
    )


def fixed_n_mde(n: int, discordance: float, *, alpha: float = 0.05, family_size: int = 1, power: float = 0.8) -> float:
    """The fixed-n design's MDE with Bonferroni alpha/m: (z_{1-alpha/2m} + z_power) sqrt(pi/n) (normal theory)."""
    return float((st.norm.isf(alpha / (2 * family_size)) + st.norm.ppf(power)) * math.sqrt(discordance / n))

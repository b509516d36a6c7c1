"""Figures of the report: the accuracy/throughput trade-off and the NFE distributions.

matplotlib runs on the Agg backend (no display needed, same pixels everywhere). One figure per
task, because accuracy and speed on a math task say nothing about a code task.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

_MARKERS = "oDs^PXhv<>p*d"
_ROLE_STYLE = {
    "baseline": {"marker": "*", "s": 160, "color": "black"},
    "control_aa": {"marker": "s", "s": 50, "color": "tab:gray"},
    "control_degraded": {"marker": "v", "s": 60, "color": "tab:red"},
}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def make_figures(summary: Any, out_dir: Path) -> dict[str, list[str]]:
    """Write the PNGs of a `report.Summary` into ``out_dir``; return, per task, the file names in display order."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from dllm_eval.analysis.stats import pareto_front

    figs: dict[str, list[str]] = {}
    for t in summary.tasks:
        names: list[str] = []
        pts = [r for r in t.rows if math.isfinite(r.tps) and math.isfinite(r.acc)]
        if pts:
            fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
            front = set(pareto_front([(r.label, r.acc, r.tps) for r in pts]))
            for i, r in enumerate(pts):
                style = _ROLE_STYLE.get(r.role or "", {"marker": _MARKERS[i % len(_MARKERS)], "s": 45, "color": f"C{i % 10}"})
                xerr = [[max(r.tps - r.tps_low, 0.0)], [max(r.tps_high - r.tps, 0.0)]] if math.isfinite(r.tps_low) else None
                ax.errorbar(
                    r.tps, 100 * r.acc,
                    yerr=[[100 * (r.acc - r.acc_low)], [100 * (r.acc_high - r.acc)]],
                    xerr=xerr, fmt="none", ecolor=style["color"], alpha=0.5, capsize=3, lw=1,
                )
                ax.scatter([r.tps], [100 * r.acc], marker=style["marker"], s=style["s"], color=style["color"], zorder=3,
                           edgecolors="gold" if r.label in front else "none", linewidths=2,
                           label=r.label + (" (frontier)" if r.label in front else ""))
            fr = sorted((r for r in pts if r.label in front), key=lambda r: r.tps)
            if len(fr) > 1:
                ax.step([r.tps for r in fr], [100 * r.acc for r in fr], where="post", color="gold", lw=1.5, zorder=1,
                        label="Pareto frontier")
            ax.set_xlabel("throughput, generated tokens/s (95% CI, batches resampled)")
            ax.set_ylabel(f"{t.metric} (%), Wilson 95% CI")
            ax.set_title(f"{t.task}: accuracy vs throughput (n = {t.n_docs}; gold = Pareto frontier)")
            ax.grid(alpha=0.3)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
            fig.tight_layout()
            name = f"fig_acc_vs_tps_{_safe(t.task)}.png"
            fig.savefig(out_dir / name)
            plt.close(fig)
            names.append(name)
        nfe = summary.per_doc_nfe.get(t.task) or {}
        labs = [r.label for r in t.rows if nfe.get(r.label)]
        if labs:
            fig, ax = plt.subplots(figsize=(8, 0.45 * len(labs) + 1.6), dpi=110)
            data = [nfe[k] for k in labs]
            box_style = {"showmeans": True, "whis": (5, 95), "flierprops": {"markersize": 2, "alpha": 0.4}}
            try:  # matplotlib >= 3.10 spells it orientation=; older versions only know vert=
                ax.boxplot(data, orientation="horizontal", **box_style)
            except TypeError:
                ax.boxplot(data, vert=False, **box_style)
            ax.set_yticks(range(1, len(labs) + 1), labs, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("forward passes (NFE) per document; box = quartiles, whiskers = 5-95%, ▲ = mean")
            ax.set_title(f"{t.task}: NFE per document")
            ax.grid(axis="x", alpha=0.3)
            fig.tight_layout()
            name = f"fig_nfe_{_safe(t.task)}.png"
            fig.savefig(out_dir / name)
            plt.close(fig)
            names.append(name)
        figs[t.task] = names
    return figs

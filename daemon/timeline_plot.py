"""Drift over time: detector scores per window against their thresholds, with the loop's events marked.

Reads what the daemon journals (``window_scored`` entries and decision
records), so the same picture serves `distilld timeline` on a live state dir
and the demo's summary.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

METRICS = ("divergence.agreement_drop", "prediction.class_js", "input.ngram_js")
EVENT_COLORS = (
    ("trip", "tab:red"),
    ("start", "tab:purple"),
    ("promot", "tab:green"),
    ("drift", "tab:orange"),
)


def _event_color(label: str) -> str:
    return next((color for key, color in EVENT_COLORS if key in label), "tab:grey")


def plot_timeline(
    scored: list[dict], events: list[tuple[float, str]], t0: float, out: Path, x_label: str = "seconds"
) -> Path:
    """``scored``: window_scored journal entries; ``events``: (wall time, label) markers; x is time since t0."""
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(10, 2.6 * len(METRICS)), sharex=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        for version in sorted({e["payload"]["version"] for e in scored}):
            rows = [
                (e["ts"] - t0, e["payload"]["scores"][metric])
                for e in scored
                if e["payload"]["version"] == version and metric in e["payload"]["scores"]
            ]
            if not rows:
                continue
            xs = [x for x, _ in rows]
            ax.plot(xs, [s["value"] for _, s in rows], marker="o", ms=3, label=f"v{version}")
            thresholds = [(x, s["threshold"]) for x, s in rows if s["threshold"] is not None]
            if thresholds:
                ax.step(
                    [x for x, _ in thresholds],
                    [t for _, t in thresholds],
                    where="post",
                    ls="--",
                    lw=1,
                    color="grey",
                    label=f"v{version} threshold",
                )
            breached = [(x, s["value"]) for x, s in rows if s["breached"]]
            if breached:
                ax.scatter(*zip(*breached, strict=True), color="red", zorder=5, s=18)
        for t, label in events:
            ax.axvline(t - t0, color=_event_color(label), lw=1.2, alpha=0.8)
        ax.set_ylabel(metric, fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    if events:
        markers = [Line2D([0], [0], color=_event_color(label), lw=1.5) for _, label in events]
        fig.legend(markers, [label for _, label in events], loc="lower center", ncol=3, fontsize=7)
    axes[-1].set_xlabel(x_label)
    fig.suptitle(
        "detector scores per window (red: breached, dashed: calibrated threshold) and what the loop did"
    )
    fig.tight_layout(rect=(0, 0.03 + 0.025 * ((len(events) + 2) // 3), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

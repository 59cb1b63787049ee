"""Pictures of a replay: each rule's metric over time, with thresholds, trips and retrains.

One PNG per model, one panel per rule: the metric per window (dots on the
line where it breached), the rule's trip and clear levels (per window when
calibrated), trip and re-arm markers, vertical lines where a retrain would
have started, and grey spans while a reference was being built. Drawn with
matplotlib's object API on the Agg canvas (no pyplot global state), so it is
safe in the daemon's threads and on machines without a display.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from distilld.daemon.decision_record import DecisionKind
from distilld.daemon.policy_config import PolicyConfig, RuleConfig

if TYPE_CHECKING:
    from distilld.daemon.replay import ReplayResult, WindowPoint


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _levels(rule: RuleConfig, threshold: float | None) -> tuple[float | None, float | None]:
    if rule.calibrated:
        return (None, None) if threshold is None else (threshold, rule.clear_level(threshold))
    return float(rule.trip), rule.fixed_clear


class _OnceLabels:
    """One legend entry per series, however many segments draw it."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, label: str) -> str | None:
        if label in self.seen:
            return None
        self.seen.add(label)
        return label


def _safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def plot_replay(result: ReplayResult, policy: PolicyConfig, out_dir: Path) -> list[Path]:
    """Write ``replay-<model>.png`` for every model with scored windows; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for model in sorted({w.model for w in result.windows}):
        windows = [w for w in result.windows if w.model == model]
        metrics = {m for w in windows for m in w.values}
        rules = [
            r
            for r in policy.rules
            if r.metric in metrics
            and (r.models is None or any(fnmatch.fnmatchcase(model, p) for p in r.models))
        ]
        if not rules:
            continue
        path = out_dir / f"replay-{_safe_name(model)}.png"
        _plot_model(result, model, windows, rules, path)
        paths.append(path)
    return paths


def _plot_model(
    result: ReplayResult, model: str, windows: list[WindowPoint], rules: list[RuleConfig], path: Path
) -> None:
    fig = Figure(figsize=(12, 2.6 * len(rules) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rules), 1, sharex=True, squeeze=False)[:, 0]
    decisions = [d for d in result.decisions if d.model == model]
    retrains = [d for d in decisions if d.kind == DecisionKind.RETRAIN_REQUESTED]
    refs = [r for r in result.references if r["model"] == model]
    versions = sorted({w.version for w in windows})
    for ax, rule in zip(axes, rules, strict=True):
        segments = sorted({(w.version, w.reference_no) for w in windows})
        once = _OnceLabels()
        for version, ref_no in segments:
            # a line never joins windows scored against different references
            pts = [
                w
                for w in windows
                if (w.version, w.reference_no) == (version, ref_no) and w.values.get(rule.metric) is not None
            ]
            if not pts:
                continue
            x = [_dt(w.end_ts) for w in pts]
            y = [w.values[rule.metric] for w in pts]
            levels = [_levels(rule, w.thresholds.get(rule.metric)) for w in pts]
            suffix = f" v{version}" if len(versions) > 1 else ""
            ax.plot(x, y, lw=1.0, color="tab:blue", marker=".", ms=3, label=once(f"{rule.metric}{suffix}"))
            ax.step(
                x, [t for t, _ in levels], where="mid", ls="--", lw=1.0, color="tab:red", label=once("trip")
            )
            ax.step(
                x, [c for _, c in levels], where="mid", ls=":", lw=1.0, color="tab:green", label=once("clear")
            )
            breach = [
                (xi, yi)
                for xi, yi, (t, _) in zip(x, y, levels, strict=True)
                if t is not None and (yi > t if rule.direction == "above" else yi < t)
            ]
            if breach:
                bx, by = zip(*breach, strict=True)
                ax.scatter(bx, by, s=14, color="tab:orange", zorder=3, label=once("breaching window"))
        for kind, marker, color, label in (
            (DecisionKind.RULE_TRIPPED, "^", "red", "tripped"),
            (DecisionKind.RULE_REARMED, "v", "green", "re-armed"),
        ):
            marks = [d for d in decisions if d.kind == kind and d.rule == rule.name]
            if marks:
                ax.scatter(
                    [_dt(d.ts) for d in marks],
                    [d.windows[-1]["value"] if d.windows else 0.0 for d in marks],
                    marker=marker,
                    s=90,
                    color=color,
                    edgecolor="black",
                    zorder=4,
                    label=label,
                )
        for i, d in enumerate(retrains):
            ax.axvline(
                _dt(d.ts), color="purple", lw=1.2, alpha=0.8, label="retrain would start" if i == 0 else None
            )
        for r in refs:
            if r["started_ts"] is not None and r["built_ts"] > r["started_ts"]:
                ax.axvspan(_dt(r["started_ts"]), _dt(r["built_ts"]), color="grey", alpha=0.15, lw=0)
        ax.set_title(
            f"{rule.name}: {rule.metric} {rule.direction} "
            f"{'calibrated' if rule.calibrated else rule.trip} × {rule.trip_windows} windows "
            f"(clear × {rule.clear_windows}, action {rule.action})",
            fontsize=9,
            loc="left",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncols=4)
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.suptitle(
        f"replay of {model}: {len(windows)} windows, {len(retrains)} retrains would have started "
        "(grey: reference being built)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)

"""The promotion gate: may a candidate replace the champion?

Both models are evaluated by the trainer on the same sets, so the comparison
is paired: ``holdout`` is fresh traffic (the reason for retraining), ``replay``
is earlier/golden traffic (what must not be forgotten). Metrics per set are the
trainer's (``trainers/evaluate.py``): ``teacher_agreement`` (fraction),
``mean_kl_to_teacher`` (nats), and, with labels, ``accuracy`` and ``ece``; a
metric that could not be measured is ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from distilld.registry.config import GateConfig

Metrics = dict[str, dict[str, float | None]]
AGREEMENT = "teacher_agreement"


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def _metric(metrics: Metrics, split: str, name: str) -> float | None:
    value = metrics.get(split, {}).get(name)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def evaluate_gate(
    candidate_metrics: Metrics, champion_metrics: Metrics | None, gate: GateConfig
) -> GateVerdict:
    """Pure decision; ``reason`` is one human sentence, ``details`` the numbers behind it."""
    cand_holdout = _metric(candidate_metrics, "holdout", AGREEMENT)
    if cand_holdout is None:
        return GateVerdict(False, "candidate has no holdout agreement metric", {})
    if not champion_metrics:
        return GateVerdict(True, "no champion to compare with", {"candidate_holdout_agreement": cand_holdout})

    champ_holdout = _metric(champion_metrics, "holdout", AGREEMENT)
    if champ_holdout is None:
        return GateVerdict(False, "champion has no holdout agreement metric; cannot compare", {})
    gain = cand_holdout - champ_holdout
    details: dict[str, Any] = {
        "candidate_holdout_agreement": cand_holdout,
        "champion_holdout_agreement": champ_holdout,
        "holdout_agreement_gain": gain,
        "min_agreement_gain": gate.min_agreement_gain,
        "max_replay_drop": gate.max_replay_drop,
    }
    failures: list[str] = []
    if gain < gate.min_agreement_gain:
        failures.append(
            f"holdout agreement gain {gain:+.4f} is below the required {gate.min_agreement_gain:+.4f}"
        )

    replay_checked = False
    for key, name in ((AGREEMENT, "agreement"), ("accuracy", "accuracy")):
        cand, champ = _metric(candidate_metrics, "replay", key), _metric(champion_metrics, "replay", key)
        if cand is None or champ is None:
            continue
        replay_checked = True
        drop = champ - cand
        details[f"candidate_replay_{name}"] = cand
        details[f"champion_replay_{name}"] = champ
        details[f"replay_{name}_drop"] = drop
        if drop > gate.max_replay_drop:
            failures.append(
                f"replay {name} fell by {drop:.4f}, more than the tolerated {gate.max_replay_drop:.4f}"
            )
    if not replay_checked:
        failures.append("no replay metric present on both models; cannot rule out a regression")

    if failures:
        return GateVerdict(False, "; ".join(failures), details)
    return GateVerdict(
        True,
        f"holdout agreement {cand_holdout:.4f} vs champion {champ_holdout:.4f} ({gain:+.4f}); replay within tolerance",
        details,
    )

"""Thresholds calibrated on the reference itself, to a false-alarm probability per window.

Method (see docs/detectors.md). The reference is cut into K consecutive
sub-windows of about one window's size. Each sub-window in turn plays the
"current" window against the rest of the reference (leave one sub-window
out), which gives K draws of every metric under no change, carrying whatever
dependence the real traffic has (repeated texts, bursts, slow wobble) that an
independent-records formula would miss. Each metric's draws are standardised
by its family's size scaling (``Statistic.scale``), a null model is fitted,
and the threshold is the upper (1 - alpha) *prediction* bound for one more
window: it accounts for the reference having only K sub-windows.

- ``z`` family: draws S_i = value/scale; sigma^2 = mean(S_i^2). The threshold
  is max(z_{1-alpha}, t_{K, 1-alpha} * sigma): Student's t because sigma is
  estimated from K draws, and never below the independent-records normal
  bound, since dependence only adds variance.
- ``chi2`` family: S_i modelled as a * chi2_nu with nu fitted by moments
  (variance taken at an upper confidence bound, because an underestimated
  variance means too light a tail); the next window's S over the mean of the
  K draws then follows F(nu, K nu), whose (1 - alpha) quantile times the mean
  is the threshold.
- ``level`` family: mean mu and spread tau (per unit of 1/sqrt(n)) of the
  draws; threshold mu + t_{K-1, 1-alpha} * tau * sqrt(1 + 1/K) / sqrt(n).

Thresholds are converted back to the metric's own units for the current
window's sizes, so ``Score.value`` and ``Score.threshold`` are comparable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from distilld.detectors.score import Score
from distilld.detectors.statistic import Family, Statistic


@dataclass(frozen=True)
class NullModel:
    """The fitted no-change distribution of one metric."""

    metric: str
    family: Family
    draws: int
    min_current: int
    # z families: sigma; chi2: mean and nu; level: mu and tau
    sigma: float = 1.0
    mean: float = 0.0
    nu: float = 1.0
    mu: float = 0.0
    tau: float = 0.0

    def standardized_threshold(self, alpha: float) -> tuple[float, str]:
        return _standardized_threshold(self, alpha)

    def judge(self, stat: Statistic, alpha: float) -> tuple[float | None, float | None]:
        """(threshold in the metric's units, p-value) for one window's statistic."""
        if not stat.usable or stat.n_current < self.min_current:
            return None, None
        s = stat.standardized
        crit, law = self.standardized_threshold(alpha)
        if self.family in ("z", "z_two_sided"):
            sides = 2.0 if self.family == "z_two_sided" else 1.0
            p = stats.norm.sf(s) if law == "normal" else stats.t.sf(s / self.sigma, self.draws)
            return crit * stat.scale, float(min(1.0, sides * p))
        if self.family == "chi2":
            if self.mean <= 0:
                return 0.0, (1.0 if s <= 0 else 0.0)
            p = stats.f.sf(s / self.mean, self.nu, self.draws * self.nu)
            return crit * stat.scale, float(p)
        spread = self.tau * math.sqrt(1 + 1 / self.draws) * stat.scale
        threshold = self.mu + crit * spread
        p = (
            stats.t.sf((stat.value - self.mu) / spread, self.draws - 1)
            if spread > 0
            else float(stat.value <= self.mu)
        )
        return float(threshold), float(p)


@functools.lru_cache(maxsize=4096)
def _standardized_threshold(model: NullModel, alpha: float) -> tuple[float, str]:
    """(standardised threshold, law it came from); cached: the same few models judge every window."""
    k = model.draws
    if model.family in ("z", "z_two_sided"):
        a = alpha / 2 if model.family == "z_two_sided" else alpha
        normal = float(stats.norm.isf(a))
        predictive = float(stats.t.isf(a, k)) * model.sigma
        return (predictive, "t") if predictive > normal else (normal, "normal")
    if model.family == "chi2":
        return model.mean * float(stats.f.isf(alpha, model.nu, k * model.nu)), "f"
    return float(stats.t.isf(alpha, k - 1)), "t"


def fit_null(
    metric: str, draws: Sequence[Statistic], min_current: int, variance_confidence: float
) -> NullModel | None:
    """Fit one metric's null model from its leave-one-sub-window-out draws."""
    usable = [d for d in draws if d.usable]
    k = len(usable)
    if k < 4:
        return None
    family = usable[0].family
    s = np.array([d.standardized for d in usable], dtype=float)
    if family in ("z", "z_two_sided"):
        return NullModel(metric, family, k, min_current, sigma=float(np.sqrt(np.mean(s**2))))
    if family == "chi2":
        mean = float(s.mean())
        var = float(s.var(ddof=1))
        var_bound = var * (k - 1) / float(stats.chi2.ppf(1 - variance_confidence, k - 1))
        nu = 2 * mean * mean / var_bound if var_bound > 0 else 1e6
        return NullModel(metric, family, k, min_current, mean=mean, nu=float(np.clip(nu, 0.5, 1e6)))
    scales = np.array([d.scale for d in usable], dtype=float)
    tau = float(s.std(ddof=1) / scales.mean()) if scales.mean() > 0 else 0.0
    return NullModel(metric, family, k, min_current, mu=float(s.mean()), tau=tau)


@dataclass
class Calibration:
    """Null models per metric plus the false-alarm probability they were asked for."""

    false_alarm_probability_per_window: float
    models: dict[str, NullModel]

    @classmethod
    def fit(
        cls,
        draws: Sequence[Sequence[Statistic]],
        false_alarm_probability_per_window: float,
        min_current: dict[str, int],
        variance_confidence: float,
    ) -> Calibration:
        """``draws[i]`` holds every metric's statistic for sub-window i versus the rest."""
        by_metric: dict[str, list[Statistic]] = {}
        for sub in draws:
            for st in sub:
                by_metric.setdefault(st.metric, []).append(st)
        models = {}
        for metric, ds in by_metric.items():
            model = fit_null(metric, ds, min_current.get(metric, 1), variance_confidence)
            if model is not None:
                models[metric] = model
        return cls(false_alarm_probability_per_window, models)

    def score(self, stat: Statistic) -> Score:
        model = self.models.get(stat.metric)
        threshold, p_value = (
            (None, None) if model is None else model.judge(stat, self.false_alarm_probability_per_window)
        )
        evidence = dict(stat.evidence)
        if model is None:
            evidence.setdefault("why_uncalibrated", "reference too small or metric unusable in the reference")
        return Score(
            metric=stat.metric,
            value=float(stat.value),
            threshold=threshold,
            direction="above",
            p_value=p_value,
            n_current=int(stat.n_current),
            n_reference=int(stat.n_reference),
            evidence=evidence,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "false_alarm_probability_per_window": self.false_alarm_probability_per_window,
            "models": {k: asdict(v) for k, v in self.models.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            d["false_alarm_probability_per_window"], {k: NullModel(**v) for k, v in d["models"].items()}
        )


def uncalibrated_score(stat: Statistic) -> Score:
    """A score with no threshold, for detectors scored outside a calibrated reference."""
    return Calibration(1.0, {}).score(stat)

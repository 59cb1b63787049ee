"""Prediction drift: the student's predicted-class mix and its confidence.

Metrics (all "above"):

- ``prediction.class_js``: Jensen-Shannon divergence (bits) between the
  predicted-class distributions of the current window and the reference
  (classes a window of ``window_records`` expects fewer than ``min_expected``
  predictions of are pooled into one cell).
- ``prediction.confidence_drop``: reference minus current mean top-1
  probability.
- ``prediction.confidence_js``: Jensen-Shannon divergence (bits) between the
  histograms of top-1 probability (catches a change of shape, e.g. more very
  unsure and more very sure records, that leaves the mean alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distilld.detectors.additive_state import AdditiveState
from distilld.detectors.calibration import Calibration, uncalibrated_score
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.record_signals import RecordSignals
from distilld.detectors.score import Score
from distilld.detectors.statistic import (
    Statistic,
    js_bits,
    mean_and_var,
    psi,
    shifted_cells,
    unusable,
)

METRICS = ("prediction.class_js", "prediction.confidence_drop", "prediction.confidence_js")


class PredictionDrift(AdditiveState):
    kind = "prediction_drift"
    params = ("n_classes", "confidence_bins")
    fields = (
        "n",
        "class_counts",
        "confidence_hist",
        "confidence_sum",
        "confidence_sq",
        "margin_sum",
        "entropy_sum",
    )

    def __init__(self, n_classes: int, confidence_bins: int = 20):
        self.n_classes = int(n_classes)
        self.confidence_bins = int(confidence_bins)
        self.n = np.zeros((), np.int64)
        self.class_counts = np.zeros(n_classes, np.int64)
        self.confidence_hist = np.zeros(confidence_bins, np.int64)
        self.confidence_sum = np.zeros((), np.float64)
        self.confidence_sq = np.zeros((), np.float64)
        self.margin_sum = np.zeros((), np.float64)
        self.entropy_sum = np.zeros((), np.float64)

    def update(self, batch: RecordBatch, signals: RecordSignals | None = None) -> None:
        if len(batch) == 0:
            return
        signals = signals or RecordSignals(batch)
        conf = signals.confidence
        self.n += len(batch)
        self.class_counts += np.bincount(signals.predictions, minlength=self.n_classes)
        bins = np.minimum((conf * self.confidence_bins).astype(np.int64), self.confidence_bins - 1)
        self.confidence_hist += np.bincount(bins, minlength=self.confidence_bins)
        self.confidence_sum += conf.sum()
        self.confidence_sq += (conf * conf).sum()
        self.margin_sum += signals.margin.sum()
        self.entropy_sum += signals.entropy.sum()

    def _means(self) -> dict[str, float]:
        n = max(int(self.n), 1)
        return {
            "confidence": float(self.confidence_sum) / n,
            "margin": float(self.margin_sum) / n,
            "entropy_bits": float(self.entropy_sum) / n,
        }

    def statistics(
        self,
        current: PredictionDrift,
        evidence: bool = True,
        top_k: int = 5,
        class_names: Sequence[str] = (),
        window_records: int = 5000,
        min_expected: float = 20.0,
    ) -> list[Statistic]:
        m, n = int(self.n), int(current.n)
        if m == 0 or n == 0:
            return [unusable(name, "chi2", n, m, "empty window") for name in METRICS]
        size_scale = 1 / n + 1 / m

        class_ev: dict[str, object] = {}
        if evidence:
            class_ev = {
                "psi": psi(current.class_counts, self.class_counts),
                "shifted_classes": [
                    {
                        "class": class_names[c] if c < len(class_names) else c,
                        "current_share": pc,
                        "reference_share": pr,
                        "z": z,
                    }
                    for c, pc, pr, z in shifted_cells(current.class_counts, self.class_counts, top_k)
                ],
            }
        ref_mean, ref_var = mean_and_var(float(self.confidence_sum), float(self.confidence_sq), m)
        conf_ev: dict[str, object] = {}
        if evidence:
            conf_ev = {"current": current._means(), "reference": self._means()}
        hist_ev: dict[str, object] = {}
        if evidence:
            edges = np.linspace(0, 1, self.confidence_bins + 1)
            hist_ev = {
                "shifted_bins": [
                    {
                        "confidence_from": float(edges[b]),
                        "confidence_to": float(edges[b + 1]),
                        "current_share": pc,
                        "reference_share": pr,
                    }
                    for b, pc, pr, _ in shifted_cells(current.confidence_hist, self.confidence_hist, top_k)
                ]
            }
        return [
            Statistic(
                "prediction.class_js",
                js_bits(current.class_counts, self.class_counts),
                size_scale,
                "chi2",
                n,
                m,
                evidence=class_ev,
            ),
            Statistic(
                "prediction.confidence_drop",
                ref_mean - float(current.confidence_sum) / n,
                float(np.sqrt(max(ref_var, 1e-12) * size_scale)),
                "z",
                n,
                m,
                evidence=conf_ev,
            ),
            Statistic(
                "prediction.confidence_js",
                js_bits(current.confidence_hist, self.confidence_hist),
                size_scale,
                "chi2",
                n,
                m,
                evidence=hist_ev,
            ),
        ]

    @staticmethod
    def score(
        reference: PredictionDrift, current: PredictionDrift, calibration: Calibration | None = None
    ) -> list[Score]:
        stats = reference.statistics(current)
        return [calibration.score(s) if calibration else uncalibrated_score(s) for s in stats]

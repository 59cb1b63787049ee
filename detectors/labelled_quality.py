"""Labelled quality: accuracy and calibration of the student where labels arrived.

Metrics (all "above"):

- ``quality.accuracy_drop``: reference minus current accuracy on labelled records.
- ``quality.ece_increase``: current minus reference expected calibration
  error (equal-width bins of top-1 probability). ECE is biased upwards on
  small samples, so its null level comes from the reference sub-windows
  (``level`` family) rather than from zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distilld.detectors.additive_state import AdditiveState
from distilld.detectors.calibration import Calibration, uncalibrated_score
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.record_signals import RecordSignals
from distilld.detectors.score import Score
from distilld.detectors.statistic import Statistic, bernoulli_se, unusable

METRICS = ("quality.accuracy_drop", "quality.ece_increase")


class LabelledQuality(AdditiveState):
    kind = "labelled_quality"
    params = ("n_classes", "ece_bins")
    fields = (
        "n",
        "correct",
        "count_by_class",
        "correct_by_class",
        "bin_count",
        "bin_confidence",
        "bin_correct",
    )

    def __init__(self, n_classes: int, ece_bins: int = 15):
        self.n_classes = int(n_classes)
        self.ece_bins = int(ece_bins)
        self.n = np.zeros((), np.int64)
        self.correct = np.zeros((), np.int64)
        self.count_by_class = np.zeros(n_classes, np.int64)
        self.correct_by_class = np.zeros(n_classes, np.int64)
        self.bin_count = np.zeros(ece_bins, np.int64)
        self.bin_confidence = np.zeros(ece_bins, np.float64)
        self.bin_correct = np.zeros(ece_bins, np.int64)

    def update(self, batch: RecordBatch, signals: RecordSignals | None = None) -> None:
        rows = np.flatnonzero(batch.has_label)
        if len(rows) == 0:
            return
        signals = signals or RecordSignals(batch)
        labels = batch.labels[rows]
        ok = signals.predictions[rows] == labels
        conf = signals.confidence[rows]
        self.n += len(rows)
        self.correct += int(ok.sum())
        self.count_by_class += np.bincount(labels, minlength=self.n_classes)
        self.correct_by_class += np.bincount(labels[ok], minlength=self.n_classes)
        bins = np.minimum((conf * self.ece_bins).astype(np.int64), self.ece_bins - 1)
        self.bin_count += np.bincount(bins, minlength=self.ece_bins)
        self.bin_confidence += np.bincount(bins, weights=conf, minlength=self.ece_bins)
        self.bin_correct += np.bincount(bins[ok], minlength=self.ece_bins)

    @property
    def accuracy(self) -> float:
        return float(self.correct) / float(self.n) if self.n > 0 else 0.0

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of |accuracy - confidence| weighted by bin share."""
        n = float(self.n)
        if n == 0:
            return 0.0
        return float(np.abs(self.bin_correct - self.bin_confidence).sum() / n)

    def statistics(
        self, current: LabelledQuality, evidence: bool = True, top_k: int = 5, class_names: Sequence[str] = ()
    ) -> list[Statistic]:
        m, n = int(self.n), int(current.n)
        if m == 0 or n == 0:
            why = "no labelled records in the " + ("reference" if m == 0 else "current window")
            return [
                unusable("quality.accuracy_drop", "z", n, m, why),
                unusable("quality.ece_increase", "level", n, m, why),
            ]
        acc_ev: dict[str, object] = {}
        ece_ev: dict[str, object] = {}
        if evidence:
            ref_rate = (self.correct_by_class + 1) / (self.count_by_class + 2)
            cur_n = current.count_by_class
            cur_rate = np.where(cur_n > 0, current.correct_by_class / np.maximum(cur_n, 1), ref_rate)
            se = np.sqrt(
                ref_rate
                * (1 - ref_rate)
                * (1 / np.maximum(cur_n, 1) + 1 / np.maximum(self.count_by_class, 1))
            )
            z = np.where(cur_n > 0, (ref_rate - cur_rate) / se, 0.0)
            acc_ev = {
                "current_accuracy": current.accuracy,
                "reference_accuracy": self.accuracy,
                "current_labelled_records": n,
                "reference_labelled_records": m,
                "worst_classes": [
                    {
                        "class": class_names[c] if c < len(class_names) else int(c),
                        "current_accuracy": float(cur_rate[c]),
                        "current_records": int(cur_n[c]),
                        "z": float(z[c]),
                    }
                    for c in np.argsort(-z)[:top_k]
                    if z[c] > 0
                ],
            }
            gap = (current.bin_confidence - current.bin_correct) / np.maximum(current.bin_count, 1)
            edges = np.linspace(0, 1, self.ece_bins + 1)
            ece_ev = {
                "current_ece": current.ece,
                "reference_ece": self.ece,
                "worst_bins": [
                    {
                        "confidence_from": float(edges[b]),
                        "confidence_to": float(edges[b + 1]),
                        "overconfidence": float(gap[b]),
                        "current_records": int(current.bin_count[b]),
                    }
                    for b in np.argsort(-np.abs(gap) * current.bin_count)[:top_k]
                    if current.bin_count[b] > 0
                ],
            }
        return [
            Statistic(
                "quality.accuracy_drop",
                self.accuracy - current.accuracy,
                bernoulli_se(float(self.correct), m, n),
                "z",
                n,
                m,
                evidence=acc_ev,
            ),
            Statistic(
                "quality.ece_increase", current.ece - self.ece, 1 / np.sqrt(n), "level", n, m, evidence=ece_ev
            ),
        ]

    @staticmethod
    def score(
        reference: LabelledQuality, current: LabelledQuality, calibration: Calibration | None = None
    ) -> list[Score]:
        stats = reference.statistics(current)
        return [calibration.score(s) if calibration else uncalibrated_score(s) for s in stats]

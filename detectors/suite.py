"""The detector suite: one state per detector for a window, and scoring against a reference.

The daemon keeps one ``WindowState`` per open window, folds every decoded
batch into it, persists it with ``to_bytes`` and, when the window closes,
asks ``DetectorSuite.score(reference, window)`` for a ``Score`` per metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import orjson

from distilld.detectors import input_drift, labelled_quality, prediction_drift, teacher_divergence
from distilld.detectors.calibration import Calibration
from distilld.detectors.config import DetectorsConfig
from distilld.detectors.input_drift import InputDrift
from distilld.detectors.labelled_quality import LabelledQuality
from distilld.detectors.prediction_drift import PredictionDrift
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.record_sample import RecordSample
from distilld.detectors.record_signals import RecordSignals
from distilld.detectors.score import Score
from distilld.detectors.statistic import Statistic
from distilld.detectors.teacher_divergence import TeacherDivergence

if TYPE_CHECKING:
    from distilld.detectors.reference import Reference

FORMAT_VERSION = 1

METRIC_NAMES: tuple[str, ...] = (
    *teacher_divergence.METRICS,
    *prediction_drift.METRICS,
    *input_drift.METRICS,
    *labelled_quality.METRICS,
)

DetectorState = TeacherDivergence | PredictionDrift | InputDrift | LabelledQuality
DETECTOR_TYPES: dict[str, type[DetectorState]] = {
    t.kind: t for t in (TeacherDivergence, PredictionDrift, InputDrift, LabelledQuality)
}


class WindowState:
    """Every detector's state for one window of one (model, version), plus a record sample."""

    def __init__(self, config: DetectorsConfig, n_classes: int):
        self.config = config
        self.n_classes = int(n_classes)
        self.n_records = 0
        self.detectors: dict[str, DetectorState] = {
            TeacherDivergence.kind: TeacherDivergence(n_classes, config.kl_temperature),
            PredictionDrift.kind: PredictionDrift(n_classes, config.confidence_bins),
            InputDrift.kind: InputDrift(config.ngram_buckets),
            LabelledQuality.kind: LabelledQuality(n_classes, config.ece_bins),
        }
        self.sample = RecordSample(config.report_sample_records)

    def update(self, batch: RecordBatch) -> None:
        if len(batch) == 0:
            return
        if batch.n_classes != self.n_classes:
            raise ValueError(f"batch has {batch.n_classes} classes, window has {self.n_classes}")
        signals = RecordSignals(batch, self.config.kl_temperature)
        for det in self.detectors.values():
            det.update(batch, signals)
        self.sample.update(batch, signals)
        self.n_records += len(batch)

    def merge(self, other: WindowState) -> Self:
        """Fold a window state over disjoint records (e.g. another partition's) into this one."""
        if other.n_classes != self.n_classes:
            raise ValueError("cannot merge windows with different class counts")
        for kind, det in self.detectors.items():
            det.merge(other.detectors[kind])  # type: ignore[arg-type]
        self.sample.merge(other.sample)
        self.n_records += other.n_records
        return self

    def minus(self, part: WindowState) -> WindowState:
        """The detector states of this window's records not in ``part`` (the sample is not subtracted)."""
        out = WindowState(self.config, self.n_classes)
        out.detectors = {k: d.minus(part.detectors[k]) for k, d in self.detectors.items()}  # type: ignore[arg-type]
        out.n_records = self.n_records - part.n_records
        return out

    def equals(self, other: WindowState) -> bool:
        return (
            self.n_records == other.n_records
            and all(d.equals(other.detectors[k]) for k, d in self.detectors.items())
            and self.sample.texts == other.sample.texts
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "n_classes": self.n_classes,
            "n_records": self.n_records,
            "detectors": {k: d.to_dict() for k, d in self.detectors.items()},
            "sample": self.sample.to_dict(),
        }

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: DetectorsConfig) -> WindowState:
        if d.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported window state format {d.get('format')!r}")
        w = cls(config, d["n_classes"])
        w.n_records = int(d["n_records"])
        for kind, det in w.detectors.items():
            loaded = DETECTOR_TYPES[kind].from_dict(d["detectors"][kind])
            if not all(getattr(loaded, p) == getattr(det, p) for p in det.params):
                raise ValueError(f"stored {kind} state was built with other settings than the current config")
            w.detectors[kind] = loaded
        w.sample = RecordSample.from_dict(d["sample"])
        return w


class DetectorSuite:
    """Creates, loads and scores window states for a model with ``n_classes`` outputs."""

    def __init__(self, config: DetectorsConfig, n_classes: int, class_names: Sequence[str] = ()):
        self.config = config
        self.n_classes = int(n_classes)
        self.class_names = tuple(class_names)

    def new_window(self) -> WindowState:
        return WindowState(self.config, self.n_classes)

    def load_window(self, data: bytes) -> WindowState:
        w = WindowState.from_dict(orjson.loads(data), self.config)
        if w.n_classes != self.n_classes:
            raise ValueError(f"stored window has {w.n_classes} classes, suite has {self.n_classes}")
        return w

    def min_current(self) -> dict[str, int]:
        """Minimum count per metric below which a window gets no threshold."""
        c = self.config
        per_module = (
            (teacher_divergence.METRICS, c.min_shadow_records),
            (labelled_quality.METRICS, c.min_labelled_records),
            (prediction_drift.METRICS, c.min_window_records),
            (input_drift.METRICS, c.min_window_records),
        )
        return {metric: minimum for metrics, minimum in per_module for metric in metrics}

    def statistics(
        self, reference: WindowState, current: WindowState, evidence: bool = True
    ) -> list[Statistic]:
        k = self.config.evidence_top_k
        names = self.class_names
        ref, cur = reference.detectors, current.detectors
        out: list[Statistic] = []
        out += ref[TeacherDivergence.kind].statistics(cur[TeacherDivergence.kind], evidence, k, names)
        window, min_expected = self.config.subwindow_records, self.config.js_min_expected_count
        out += ref[PredictionDrift.kind].statistics(
            cur[PredictionDrift.kind], evidence, k, names, window_records=window, min_expected=min_expected
        )
        out += ref[InputDrift.kind].statistics(
            cur[InputDrift.kind],
            evidence,
            k,
            current_texts=current.sample.texts if evidence else (),
            reference_texts=reference.sample.texts if evidence else (),
            window_records=window,
            min_expected=min_expected,
        )
        out += ref[LabelledQuality.kind].statistics(cur[LabelledQuality.kind], evidence, k, names)
        return out

    def score(self, reference: Reference, current: WindowState) -> dict[str, Score]:
        """A score per metric name for ``current`` against ``reference``."""
        return self.score_with(reference.window, reference.calibration, current)

    def score_with(
        self, reference: WindowState, calibration: Calibration | None, current: WindowState
    ) -> dict[str, Score]:
        cal = calibration or Calibration(self.config.false_alarm_probability_per_window, {})
        return {s.metric: cal.score(s) for s in self.statistics(reference, current)}

"""The reference a model version is judged against, and how it is built.

After a promotion (or at first start) the first ``reference_records``
records of the new version go to a ``ReferenceBuilder`` instead of being
scored. It cuts them into ``calibration_subwindows`` consecutive sub-windows;
when full, ``build()`` merges them into the reference window and calibrates
every metric's threshold by scoring each sub-window against the rest (see
``calibration``). The same builder accepts the records the champion was
distilled on, when those are the better reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from distilld.detectors.calibration import Calibration
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.record_sample import RecordSample
from distilld.detectors.suite import DetectorSuite, WindowState

FORMAT_VERSION = 1


@dataclass
class Reference:
    """Merged reference window, calibrated null models, and how it was built."""

    window: WindowState
    calibration: Calibration
    built: dict[str, Any] = field(default_factory=dict)

    @property
    def n_records(self) -> int:
        return self.window.n_records

    def thresholds(self) -> dict[str, dict[str, Any]]:
        """The fitted null model of every calibrated metric (for status pages and decision records)."""
        return {k: vars(v) for k, v in self.calibration.models.items()}

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT_VERSION,
                "window": self.window.to_dict(),
                "calibration": self.calibration.to_dict(),
                "built": self.built,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, suite: DetectorSuite) -> Reference:
        d = orjson.loads(data)
        if d.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported reference format {d.get('format')!r}")
        window = WindowState.from_dict(d["window"], suite.config)
        return cls(window, Calibration.from_dict(d["calibration"]), d["built"])


class ReferenceBuilder:
    """Accumulates a reference's records into sub-windows, then calibrates."""

    def __init__(self, suite: DetectorSuite, source: str = "first_records_after_promotion"):
        self.suite = suite
        self.source = source
        self.subwindows: list[WindowState] = []
        self.open = suite.new_window()
        # one record sample for the whole reference, so closed sub-windows persist without texts
        self.sample = RecordSample(suite.config.report_sample_records)
        self.started_at = time.time()
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    @property
    def subwindow_records(self) -> int:
        return self.suite.config.subwindow_records

    @property
    def n_records(self) -> int:
        return sum(w.n_records for w in self.subwindows) + self.open.n_records

    @property
    def complete(self) -> bool:
        return len(self.subwindows) >= self.suite.config.calibration_subwindows

    def update(self, batch: RecordBatch) -> RecordBatch | None:
        """Take records until the reference is complete; return the ones not taken (or None)."""
        start, n = 0, len(batch)
        while start < n and not self.complete:
            take = min(n - start, self.subwindow_records - self.open.n_records)
            part = batch if (start == 0 and take == n) else batch.select(np.arange(start, start + take))
            self.open.update(part)
            if len(part):
                lo, hi = float(part.ts.min()), float(part.ts.max())
                self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
                self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
            start += take
            if self.open.n_records >= self.subwindow_records:
                self.sample.merge(self.open.sample)
                self.open.sample = RecordSample(self.sample.capacity)
                self.subwindows.append(self.open)
                self.open = self.suite.new_window()
        if start >= n:
            return None
        return batch.select(np.arange(start, n))

    def build(self) -> Reference:
        """Merge and calibrate. Call when ``complete``, or earlier to use what has arrived.

        A partly filled last sub-window joins the reference but not the
        calibration draws (its size differs). With fewer than four full
        sub-windows no metric is calibrated: scores then carry no threshold.
        """
        subs = list(self.subwindows)
        if not subs and self.open.n_records == 0:
            raise ValueError("no records in the reference")
        window = self.suite.new_window()
        for w in [*subs, self.open]:
            window.merge(w)
        window.sample.merge(self.sample)
        draws = [self.suite.statistics(window.minus(sub), sub, evidence=False) for sub in subs]
        config = self.suite.config
        calibration = Calibration.fit(
            draws,
            config.false_alarm_probability_per_window,
            self.suite.min_current(),
            config.calibration_variance_confidence,
        )
        built = {
            "source": self.source,
            "records": window.n_records,
            "subwindows": len(subs),
            "subwindow_records": self.subwindow_records,
            "first_event_ts": self.first_ts,
            "last_event_ts": self.last_ts,
            "started_at": self.started_at,
            "built_at": time.time(),
            "false_alarm_probability_per_window": config.false_alarm_probability_per_window,
        }
        return Reference(window, calibration, built)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT_VERSION,
                "source": self.source,
                "started_at": self.started_at,
                "first_ts": self.first_ts,
                "last_ts": self.last_ts,
                "subwindows": [w.to_dict() for w in self.subwindows],
                "open": self.open.to_dict(),
                "sample": self.sample.to_dict(),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, suite: DetectorSuite) -> ReferenceBuilder:
        d = orjson.loads(data)
        if d.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported reference builder format {d.get('format')!r}")
        b = cls(suite, d["source"])
        b.started_at, b.first_ts, b.last_ts = d["started_at"], d["first_ts"], d["last_ts"]
        b.subwindows = [WindowState.from_dict(w, suite.config) for w in d["subwindows"]]
        b.open = WindowState.from_dict(d["open"], suite.config)
        b.sample = RecordSample.from_dict(d["sample"])
        return b

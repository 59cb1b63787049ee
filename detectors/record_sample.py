"""A bounded, uniform, mergeable sample of a window's records.

Each record's key is a stable hash of its request id; the sample keeps the
``capacity`` smallest keys. That is a uniform sample of the window, and the
sample of two merged windows is exactly the sample of their union, whatever
order the records came in. It feeds Evidently reports and names n-grams in
input-drift evidence. Texts stay in memory and in the state store only.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from distilld.detectors.additive_state import decode_array, encode_array
from distilld.detectors.ngram_hashing import hash_strings
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.record_signals import RecordSignals

COLUMNS: dict[str, str] = {
    "key": "u8",
    "ts": "f8",
    "prediction": "i8",
    "confidence": "f8",
    "margin": "f8",
    "entropy_bits": "f8",
    "words": "i8",
    "teacher_class": "i8",
    "teacher_kl": "f8",
    "label": "i8",
}


class RecordSample:
    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.texts: list[str] = []
        self.columns = {name: np.zeros(0, dtype=dt) for name, dt in COLUMNS.items()}

    def __len__(self) -> int:
        return len(self.texts)

    def update(self, batch: RecordBatch, signals: RecordSignals) -> None:
        if self.capacity == 0 or len(batch) == 0:
            return
        keys = hash_strings(batch.request_ids)
        if len(self) >= self.capacity:
            rows = np.flatnonzero(keys < self.columns["key"].max())
            if len(rows) == 0:
                return
        else:
            rows = np.arange(len(batch))
        teacher_class = np.full(len(batch), -1, np.int64)
        teacher_kl = np.full(len(batch), np.nan)
        teacher_class[signals.teacher_rows] = signals.teacher_classes
        teacher_kl[signals.teacher_rows] = signals.teacher_kl
        new = {
            "key": keys,
            "ts": batch.ts,
            "prediction": signals.predictions,
            "confidence": signals.confidence,
            "margin": signals.margin,
            "entropy_bits": signals.entropy,
            "words": signals.tokens.tokens_per_text,
            "teacher_class": teacher_class,
            "teacher_kl": teacher_kl,
            "label": batch.labels,
        }
        self._keep_smallest(
            [batch.texts[i] for i in rows],
            {k: np.asarray(v)[rows].astype(COLUMNS[k]) for k, v in new.items()},
        )

    def _keep_smallest(self, texts: list[str], columns: dict[str, np.ndarray]) -> None:
        all_texts = self.texts + texts
        merged = {k: np.concatenate([self.columns[k], columns[k]]) for k in COLUMNS}
        order = np.argsort(merged["key"], kind="stable")[: self.capacity]
        self.texts = [all_texts[i] for i in order]
        self.columns = {k: v[order] for k, v in merged.items()}

    def merge(self, other: RecordSample) -> Self:
        if other.capacity != self.capacity:
            raise ValueError("cannot merge samples of different capacities")
        self._keep_smallest(list(other.texts), other.columns)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "texts": list(self.texts),
            "columns": {k: encode_array(v) for k, v in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordSample:
        s = cls(d["capacity"])
        s.texts = list(d["texts"])
        s.columns = {k: decode_array(d["columns"][k]).astype(dt) for k, dt in COLUMNS.items()}
        return s

    def to_frame_columns(self, class_names: tuple[str, ...] | list[str] = ()) -> dict[str, list[Any]]:
        """Columns for a report table: derived values plus the text."""

        def name(c: int) -> str:
            return class_names[c] if 0 <= c < len(class_names) else str(c)

        cols = self.columns
        has_teacher = cols["teacher_class"] >= 0
        return {
            "text": list(self.texts),
            "predicted_class": [name(int(c)) for c in cols["prediction"]],
            "confidence": cols["confidence"].tolist(),
            "margin": cols["margin"].tolist(),
            "entropy_bits": cols["entropy_bits"].tolist(),
            "words": cols["words"].astype(float).tolist(),
            "teacher_agrees": np.where(
                has_teacher, (cols["teacher_class"] == cols["prediction"]).astype(float), np.nan
            ).tolist(),
            "teacher_kl": cols["teacher_kl"].tolist(),
        }

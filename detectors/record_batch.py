"""A columnar batch of decoded inference records for one (model, version).

Detectors see every record, so they work on arrays rather than on per-record
objects: the daemon decodes a Kafka batch once and hands each detector the
same ``RecordBatch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NO_LABEL = -1


@dataclass(frozen=True)
class RecordBatch:
    """Records of one model version, column by column.

    ``teacher_logits`` rows are zeros where ``has_teacher`` is False;
    ``labels`` holds ``NO_LABEL`` where no label arrived; ``latency_ms`` is
    NaN where absent. ``ts`` is event time in epoch seconds.
    """

    request_ids: list[str]
    texts: list[str]
    ts: np.ndarray
    student_logits: np.ndarray
    predictions: np.ndarray
    teacher_logits: np.ndarray
    has_teacher: np.ndarray
    labels: np.ndarray
    latency_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.request_ids)

    @property
    def n_classes(self) -> int:
        return int(self.student_logits.shape[1])

    @property
    def has_label(self) -> np.ndarray:
        return self.labels != NO_LABEL

    def select(self, mask_or_index: np.ndarray) -> RecordBatch:
        idx = np.flatnonzero(mask_or_index) if mask_or_index.dtype == bool else mask_or_index
        return RecordBatch(
            request_ids=[self.request_ids[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            ts=self.ts[idx],
            student_logits=self.student_logits[idx],
            predictions=self.predictions[idx],
            teacher_logits=self.teacher_logits[idx],
            has_teacher=self.has_teacher[idx],
            labels=self.labels[idx],
            latency_ms=self.latency_ms[idx],
        )

    @classmethod
    def concat(cls, batches: Sequence[RecordBatch]) -> RecordBatch:
        if not batches:
            raise ValueError("concat needs at least one batch")
        return cls(
            request_ids=[r for b in batches for r in b.request_ids],
            texts=[t for b in batches for t in b.texts],
            ts=np.concatenate([b.ts for b in batches]),
            student_logits=np.concatenate([b.student_logits for b in batches]),
            predictions=np.concatenate([b.predictions for b in batches]),
            teacher_logits=np.concatenate([b.teacher_logits for b in batches]),
            has_teacher=np.concatenate([b.has_teacher for b in batches]),
            labels=np.concatenate([b.labels for b in batches]),
            latency_ms=np.concatenate([b.latency_ms for b in batches]),
        )

    @classmethod
    def from_columns(
        cls,
        *,
        texts: Sequence[str],
        student_logits: np.ndarray,
        teacher_logits: np.ndarray | None = None,
        has_teacher: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        predictions: np.ndarray | None = None,
        ts: np.ndarray | None = None,
        request_ids: Sequence[str] | None = None,
        latency_ms: np.ndarray | None = None,
    ) -> RecordBatch:
        """Build a batch from arrays; absent columns get their 'missing' value.

        Convenient for tests, benchmarks and replay, where records are
        synthesised rather than decoded from Kafka.
        """
        student = np.asarray(student_logits, dtype=np.float32)
        n = student.shape[0]
        if teacher_logits is None:
            teacher = np.zeros_like(student)
            has_t = np.zeros(n, dtype=bool)
        else:
            teacher = np.asarray(teacher_logits, dtype=np.float32)
            has_t = np.ones(n, dtype=bool) if has_teacher is None else np.asarray(has_teacher, dtype=bool)
        return cls(
            request_ids=list(request_ids) if request_ids is not None else [str(i) for i in range(n)],
            texts=list(texts),
            ts=np.zeros(n) if ts is None else np.asarray(ts, dtype=np.float64),
            student_logits=student,
            predictions=student.argmax(axis=1)
            if predictions is None
            else np.asarray(predictions, dtype=np.int64),
            teacher_logits=teacher,
            has_teacher=has_t,
            labels=np.full(n, NO_LABEL, dtype=np.int64)
            if labels is None
            else np.asarray(labels, dtype=np.int64),
            latency_ms=np.full(n, np.nan) if latency_ms is None else np.asarray(latency_ms, dtype=np.float64),
        )

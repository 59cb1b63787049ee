"""The inference log record: its schema, and the decoding path the consumer uses.

One Kafka message carries one JSON record (see DESIGN.md). Decoding is
pydantic-core's JSON parser straight from bytes (no intermediate dict), which
is fast enough for the ingest path; any failure becomes a ``RecordError``
whose ``reason`` goes into the dead-letter record.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distilld.detectors.record_batch import NO_LABEL, RecordBatch

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class RecordError(ValueError):
    """A message that cannot become a record. ``reason`` is a short, stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TextInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str


class ModelOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    logits: list[FiniteFloat] = Field(min_length=2)


class InferenceRecord(BaseModel):
    """One served request, as the serving layer logs it."""

    model_config = ConfigDict(extra="ignore")

    request_id: str = Field(min_length=1, max_length=256)
    ts: datetime
    model: str = Field(min_length=1, max_length=256)
    model_version: str = Field(min_length=1, max_length=128)
    input: TextInput
    student: ModelOutput
    prediction: int | None = None
    teacher: ModelOutput | None = None
    label: int | None = None
    latency_ms: FiniteFloat | None = Field(default=None, ge=0)

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_as_text(cls, v: object) -> object:
        # serving layers log versions as numbers as often as strings
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _consistent_shapes(self) -> InferenceRecord:
        n = len(self.student.logits)
        if self.teacher is not None and len(self.teacher.logits) != n:
            raise ValueError(f"teacher has {len(self.teacher.logits)} logits, student has {n}")
        if self.prediction is not None and not 0 <= self.prediction < n:
            raise ValueError(f"prediction {self.prediction} outside 0..{n - 1}")
        if self.label is not None and not 0 <= self.label < n:
            raise ValueError(f"label {self.label} outside 0..{n - 1}")
        return self

    @property
    def n_classes(self) -> int:
        return len(self.student.logits)


def _reason_for(err: ValidationError) -> RecordError:
    first = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "record"
    kind = first["type"]
    if kind in ("json_invalid", "json_type"):
        return RecordError("not_json", first["msg"])
    if kind in ("finite_number",):
        return RecordError("non_finite", f"{loc}: {first['msg']}")
    if kind == "missing":
        return RecordError("missing_field", loc)
    if kind == "value_error" and "logits" in first["msg"]:
        return RecordError("logits_length", first["msg"].removeprefix("Value error, "))
    return RecordError("schema", f"{loc}: {first['msg']}")


def decode_record(raw: bytes | None, expected_classes: int | None = None) -> InferenceRecord:
    """Parse and validate one message value; raise ``RecordError`` if it is bad.

    ``expected_classes`` is the class count configured for the record's
    model (when the operator configured one).
    """
    if raw is None:
        raise RecordError("empty", "message has no value (tombstone)")
    try:
        rec = InferenceRecord.model_validate_json(raw)
    except ValidationError as err:
        raise _reason_for(err) from None
    if expected_classes is not None and rec.n_classes != expected_classes:
        raise RecordError(
            "logits_length",
            f"{rec.n_classes} logits, model {rec.model!r} is configured for {expected_classes}",
        )
    return rec


def records_to_batch(records: Sequence[InferenceRecord]) -> RecordBatch:
    """Columns of records that share one (model, version) and class count."""
    n = len(records)
    if n == 0:
        raise ValueError("records_to_batch needs at least one record")
    c = records[0].n_classes
    student = np.asarray([r.student.logits for r in records], dtype=np.float32)
    teacher = np.zeros((n, c), dtype=np.float32)
    has_teacher = np.zeros(n, dtype=bool)
    labels = np.full(n, NO_LABEL, dtype=np.int64)
    latency = np.full(n, math.nan)
    predictions = np.empty(n, dtype=np.int64)
    for i, r in enumerate(records):
        if r.teacher is not None:
            teacher[i] = r.teacher.logits
            has_teacher[i] = True
        if r.label is not None:
            labels[i] = r.label
        if r.latency_ms is not None:
            latency[i] = r.latency_ms
        predictions[i] = r.prediction if r.prediction is not None else -1
    missing_pred = predictions < 0
    if missing_pred.any():
        predictions[missing_pred] = student[missing_pred].argmax(axis=1)
    return RecordBatch(
        request_ids=[r.request_id for r in records],
        texts=[r.input.text for r in records],
        ts=np.asarray([r.ts.timestamp() for r in records], dtype=np.float64),
        student_logits=student,
        predictions=predictions,
        teacher_logits=teacher,
        has_teacher=has_teacher,
        labels=labels,
        latency_ms=latency,
    )


def group_by_model(records: Iterable[InferenceRecord]) -> dict[tuple[str, str], list[InferenceRecord]]:
    groups: dict[tuple[str, str], list[InferenceRecord]] = defaultdict(list)
    for r in records:
        groups[(r.model, r.model_version)].append(r)
    return groups

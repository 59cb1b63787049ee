"""The inference log record: its schema, and the decoding path the consumer uses.

One Kafka message carries one JSON record (see DESIGN.md). The pydantic
model is the schema. Decoding takes a fast path first: msgspec with strict
types plus the cross-field checks, accepting only records the model would
accept (several times faster than full validation, which dominated the
consumer's CPU time). Anything the
fast path does not vouch for goes through full pydantic validation, which
decides and, for a bad record, supplies the ``RecordError`` reason that goes
into the dead-letter record. Either way the result is a ``DecodedRecord``: a
slotted plain object, since building pydantic instances per record cost as
much as parsing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
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


FLOAT32_MAX = float(np.finfo(np.float32).max)


class ModelOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    logits: list[FiniteFloat] = Field(min_length=2)

    @field_validator("logits")
    @classmethod
    def _float32_range(cls, v: list[float]) -> list[float]:
        # detectors and trainers hold logits as float32; larger values would become inf there
        if max(v) > FLOAT32_MAX or min(v) < -FLOAT32_MAX:
            raise ValueError("a logit is outside the float32 range")
        return v


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


@dataclass(slots=True)
class DecodedRecord:
    """A validated record as the loop uses it; ``ts`` is event time in epoch seconds."""

    request_id: str
    ts: float
    model: str
    model_version: str
    text: str
    student_logits: list[float]
    teacher_logits: list[float] | None
    prediction: int | None
    label: int | None
    latency_ms: float | None

    @property
    def n_classes(self) -> int:
        return len(self.student_logits)

    @classmethod
    def from_model(cls, rec: InferenceRecord) -> DecodedRecord:
        return cls(
            request_id=rec.request_id,
            ts=rec.ts.timestamp(),
            model=rec.model,
            model_version=rec.model_version,
            text=rec.input.text,
            student_logits=rec.student.logits,
            teacher_logits=None if rec.teacher is None else rec.teacher.logits,
            prediction=rec.prediction,
            label=rec.label,
            latency_ms=rec.latency_ms,
        )


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
    if kind == "value_error" and "float32" in first["msg"]:
        return RecordError("non_finite", f"{loc}: {first['msg'].removeprefix('Value error, ')}")
    if kind == "value_error" and "logits" in first["msg"]:
        return RecordError("logits_length", first["msg"].removeprefix("Value error, "))
    return RecordError("schema", f"{loc}: {first['msg']}")


class _WireText(msgspec.Struct):
    text: str


class _WireOutput(msgspec.Struct):
    logits: Annotated[list[float], msgspec.Meta(min_length=2)]


class _WireRecord(msgspec.Struct):
    """The record's shape for the fast path: strict types (no coercion), checked in C by msgspec."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    ts: datetime
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    model_version: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    input: _WireText
    student: _WireOutput
    prediction: int | None = None
    teacher: _WireOutput | None = None
    label: int | None = None
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None


_WIRE = msgspec.json.Decoder(_WireRecord)


def _in_float32(logits: list[float]) -> bool:
    return max(logits) <= FLOAT32_MAX and min(logits) >= -FLOAT32_MAX


def _fast_record(raw: bytes) -> DecodedRecord | None:
    """The record if ``raw`` is plainly valid, else None (full validation decides)."""
    try:
        w = _WIRE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    n = len(w.student.logits)
    teacher = w.teacher
    if not _in_float32(w.student.logits):
        return None
    if teacher is not None and (len(teacher.logits) != n or not _in_float32(teacher.logits)):
        return None
    for index in (w.prediction, w.label):
        if index is not None and not 0 <= index < n:
            return None
    if w.latency_ms is not None and w.latency_ms == math.inf:
        return None
    return DecodedRecord(
        request_id=w.request_id,
        ts=w.ts.timestamp(),
        model=w.model,
        model_version=w.model_version,
        text=w.input.text,
        student_logits=w.student.logits,
        teacher_logits=None if teacher is None else teacher.logits,
        prediction=w.prediction,
        label=w.label,
        latency_ms=w.latency_ms,
    )


def decode_record(raw: bytes | None, expected_classes: int | None = None) -> DecodedRecord:
    """Parse and validate one message value; raise ``RecordError`` if it is bad.

    ``expected_classes`` is the class count configured for the record's
    model (when the operator configured one).
    """
    if raw is None:
        raise RecordError("empty", "message has no value (tombstone)")
    rec = _fast_record(raw)
    if rec is None:
        try:
            rec = DecodedRecord.from_model(InferenceRecord.model_validate_json(raw))
        except ValidationError as err:
            raise _reason_for(err) from None
    if expected_classes is not None and rec.n_classes != expected_classes:
        raise RecordError(
            "logits_length",
            f"{rec.n_classes} logits, model {rec.model!r} is configured for {expected_classes}",
        )
    return rec


def records_to_batch(records: Sequence[DecodedRecord]) -> RecordBatch:
    """Columns of records that share one (model, version) and class count."""
    n = len(records)
    if n == 0:
        raise ValueError("records_to_batch needs at least one record")
    c = records[0].n_classes
    student = np.asarray([r.student_logits for r in records], dtype=np.float32)
    teacher = np.zeros((n, c), dtype=np.float32)
    has_teacher = np.zeros(n, dtype=bool)
    labels = np.full(n, NO_LABEL, dtype=np.int64)
    latency = np.full(n, math.nan)
    predictions = np.empty(n, dtype=np.int64)
    for i, r in enumerate(records):
        if r.teacher_logits is not None:
            teacher[i] = r.teacher_logits
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
        texts=[r.text for r in records],
        ts=np.asarray([r.ts for r in records], dtype=np.float64),
        student_logits=student,
        predictions=predictions,
        teacher_logits=teacher,
        has_teacher=has_teacher,
        labels=labels,
        latency_ms=latency,
    )


def group_by_model(records: Iterable[DecodedRecord]) -> dict[tuple[str, str], list[DecodedRecord]]:
    groups: dict[tuple[str, str], list[DecodedRecord]] = defaultdict(list)
    for r in records:
        groups[(r.model, r.model_version)].append(r)
    return groups

"""The inference log record: its schema, and the decoding path the consumer uses.

One Kafka message carries one JSON record (see DESIGN.md). The pydantic
model is the schema. Decoding takes a fast path first: orjson plus checks
that accept only records the model would accept (about three times as fast
as full validation, which dominated the consumer's CPU time). Anything the
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

import numpy as np
import orjson
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
_NUMBER_TYPES = frozenset({float, int})


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


def _finite_logits(value: object, n: int | None) -> bool:
    if type(value) is not dict:
        return False
    logits = value.get("logits")
    if type(logits) is not list or len(logits) < 2 or (n is not None and len(logits) != n):
        return False
    # orjson yields only finite doubles, so element types and the float32 range
    # are all there is to check (done in C: map/set/min/max)
    if not set(map(type, logits)) <= _NUMBER_TYPES:
        return False
    return max(logits) <= FLOAT32_MAX and min(logits) >= -FLOAT32_MAX


def _short_text(value: object, max_len: int) -> bool:
    return type(value) is str and 0 < len(value) <= max_len


def _class_index(value: object, n: int) -> bool:
    return value is None or (type(value) is int and 0 <= value < n)


def _fast_record(doc: object) -> DecodedRecord | None:
    """The record if ``doc`` is plainly valid, else None (full validation decides)."""
    if type(doc) is not dict:
        return None
    student, teacher, inp, ts = doc.get("student"), doc.get("teacher"), doc.get("input"), doc.get("ts")
    version = doc.get("model_version")
    if not (
        _short_text(doc.get("request_id"), 256)
        and _short_text(doc.get("model"), 256)
        and _short_text(version, 128)
        and type(inp) is dict
        and type(inp.get("text")) is str
        and type(ts) is str
        and _finite_logits(student, None)
    ):
        return None
    n = len(student["logits"])
    if teacher is not None and not _finite_logits(teacher, n):
        return None
    prediction, label, latency = doc.get("prediction"), doc.get("label"), doc.get("latency_ms")
    if not (_class_index(prediction, n) and _class_index(label, n)):
        return None
    if latency is not None and not (type(latency) in (int, float) and 0 <= latency < math.inf):
        return None
    try:
        when = datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None
    return DecodedRecord(
        request_id=doc["request_id"],
        ts=when,
        model=doc["model"],
        model_version=version,
        text=inp["text"],
        student_logits=student["logits"],
        teacher_logits=None if teacher is None else teacher["logits"],
        prediction=prediction,
        label=label,
        latency_ms=None if latency is None else float(latency),
    )


def decode_record(raw: bytes | None, expected_classes: int | None = None) -> DecodedRecord:
    """Parse and validate one message value; raise ``RecordError`` if it is bad.

    ``expected_classes`` is the class count configured for the record's
    model (when the operator configured one).
    """
    if raw is None:
        raise RecordError("empty", "message has no value (tombstone)")
    try:
        rec = _fast_record(orjson.loads(raw))
    except orjson.JSONDecodeError:
        rec = None
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

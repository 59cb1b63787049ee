"""The record decoder: the fast path accepts exactly what full validation accepts, with the same values."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from distilld.daemon.record import (
    DecodedRecord,
    InferenceRecord,
    RecordError,
    decode_record,
    records_to_batch,
)
from tests.ingest.daemon_harness import record

GOOD = record(0)


def _variant(**changes):
    doc = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


_DROP = object()

VARIANTS = [
    _variant(),
    _variant(model_version=7),
    _variant(model_version=True),
    _variant(model_version=""),
    _variant(request_id=""),
    _variant(request_id=12),
    _variant(ts="2026-11-22 14:03:11"),
    _variant(ts="not a time"),
    _variant(ts=1795363343),
    _variant(ts=_DROP),
    _variant(prediction=44),
    _variant(prediction=45),
    _variant(prediction=-1),
    _variant(prediction=3.0),
    _variant(prediction="3"),
    _variant(prediction=None),
    _variant(label=0),
    _variant(label=True),
    _variant(label=99),
    _variant(latency_ms=-1),
    _variant(latency_ms="8"),
    _variant(latency_ms=1e400),
    _variant(student={"logits": [1, 2, 3]}, prediction=1, teacher=None, label=None),
    _variant(student={"logits": [1.0]}, prediction=None),
    _variant(student={"logits": "1,2"}),
    _variant(student={"logits": [1.0, None]}),
    _variant(student={"logits": [1.0, "2"]}),
    _variant(student={"logits": [1.0, 1e400]}),
    _variant(student={"logits": [1.0, 1e39]}),
    _variant(student={"logits": [1.0, True]}),
    _variant(student={"logits": [[1.0], [2.0]]}, prediction=None),
    _variant(teacher={"logits": [0.0] * 44}),
    _variant(teacher={"logits": [0.0] * 45}),
    _variant(teacher=None),
    _variant(input={"text": 5}),
    _variant(input={"text": "", "lang": "en"}),
    _variant(input="where"),
    _variant(extra_field={"a": 1}),
    b"[1, 2]",
    b"",
    b'{"request_id": "x",',
    b'{"request_id":"n","ts":"2026-11-22T14:03:11Z","model":"m","model_version":"1",'
    b'"input":{"text":"a"},"student":{"logits":[NaN, 1.0, 2.0]}}',
]


@pytest.mark.parametrize("raw", VARIANTS, ids=range(len(VARIANTS)))
def test_fast_path_agrees_with_full_validation(raw):
    try:
        expected = InferenceRecord.model_validate_json(raw)
    except ValidationError:
        expected = None
    if expected is None:
        with pytest.raises(RecordError):
            decode_record(raw)
        return
    got = decode_record(raw)
    assert got == DecodedRecord.from_model(expected)


def test_reasons_are_specific():
    cases = {
        b"not json": "not_json",
        _variant(ts=_DROP): "missing_field",
        _variant(teacher={"logits": [0.0] * 3}): "logits_length",
        _variant(prediction=45): "schema",
        VARIANTS[-1]: "non_finite",
        _variant(teacher={"logits": [1e39] * 45}): "non_finite",
    }
    for raw, reason in cases.items():
        with pytest.raises(RecordError) as err:
            decode_record(raw)
        assert err.value.reason == reason, raw
    with pytest.raises(RecordError) as err:
        decode_record(_variant(), expected_classes=10)
    assert err.value.reason == "logits_length"
    with pytest.raises(RecordError) as err:
        decode_record(None)
    assert err.value.reason == "empty"


def test_batch_columns():
    recs = [decode_record(json.dumps(record(i)).encode()) for i in range(40)]
    batch = records_to_batch(recs)
    assert batch.student_logits.shape == (40, 45)
    assert batch.has_teacher.sum() == 8 and (batch.labels >= 0).sum() == 2
    assert list(batch.predictions) == [r.prediction for r in recs]
    assert batch.ts[0] == recs[0].ts

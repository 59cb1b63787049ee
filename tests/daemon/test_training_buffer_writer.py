"""The background buffer writer: flush means written, and a write error reaches the consumer."""

from __future__ import annotations

import numpy as np
import pytest

from distilld.daemon.training_buffer import TrainingBuffer
from distilld.daemon.training_buffer_writer import TrainingBufferWriter
from distilld.detectors.record_batch import RecordBatch


def _batch(start, n):
    return RecordBatch.from_columns(
        texts=[f"text {i}" for i in range(start, start + n)],
        student_logits=np.random.default_rng(start).normal(size=(n, 4)),
        request_ids=[f"r{i}" for i in range(start, start + n)],
    )


def test_flush_waits_for_every_submitted_batch(tmp_path):
    buffer = TrainingBuffer(tmp_path / "b.sqlite", 10_000)
    writer = TrainingBufferWriter(buffer)
    for k in range(20):
        writer.submit("m", _batch(k * 50, 50), [("t", 0, k * 50 + i) for i in range(50)], "1")
    writer.flush()
    assert buffer.count("m") == 1000
    writer.close()


def test_a_write_error_is_raised_by_flush(tmp_path):
    buffer = TrainingBuffer(tmp_path / "b.sqlite", 10_000)
    writer = TrainingBufferWriter(buffer)
    writer.submit("m", _batch(0, 5), [("t", 0, 1)], "1")  # sources do not match the batch
    with pytest.raises(ValueError, match="sources for 5 records"):
        writer.flush()
    writer.submit("m", _batch(5, 5), [("t", 0, 5 + i) for i in range(5)], "1")
    writer.flush()
    assert buffer.count("m") == 5
    writer.close()

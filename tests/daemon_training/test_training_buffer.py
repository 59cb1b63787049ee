from __future__ import annotations

import json

import numpy as np
import pytest

from distilld.daemon.training_buffer import EmptyBuffer, TrainingBuffer
from distilld.detectors.record_batch import NO_LABEL, RecordBatch
from distilld.trainers.snapshot import read_snapshot

C = 3


def batch(ids, texts, teacher_every=2, label_every=3):
    n = len(ids)
    logits = np.arange(n * C, dtype=np.float32).reshape(n, C)
    return RecordBatch.from_columns(
        request_ids=[str(i) for i in ids],
        texts=texts,
        student_logits=logits,
        teacher_logits=logits + 1,
        has_teacher=np.arange(n) % teacher_every == 0,
        labels=np.where(np.arange(n) % label_every == 0, 1, NO_LABEL),
    )


def sources(offsets, partition=0):
    return [("inference-logs", partition, o) for o in offsets]


def test_buffer_is_idempotent_bounded_and_persistent(tmp_path):
    buf = TrainingBuffer(tmp_path / "buffer.sqlite", buffer_records=10)
    assert buf.add("m", batch(range(6), [f"t{i}" for i in range(6)]), sources(range(6))) == 6
    assert buf.add("m", batch(range(6), [f"t{i}" for i in range(6)]), sources(range(6))) == 0
    assert buf.add("m", batch(range(6, 14), [f"t{i}" for i in range(6, 14)]), sources(range(6, 14))) == 8
    assert buf.add("other", batch([0], ["x"]), sources([0])) == 1
    assert buf.count("m") == 10
    buf.close()
    reopened = TrainingBuffer(tmp_path / "buffer.sqlite", buffer_records=10)
    assert reopened.count("m") == 10
    assert reopened.models() == ["m", "other"]
    info = reopened.snapshot("m", tmp_path / "snap", holdout_fraction=0.2)
    assert info.meta["offsets"] == [
        {"topic": "inference-logs", "partition": 0, "min_offset": 4, "max_offset": 13}
    ]


def test_snapshot_dedupes_holds_out_newest_and_replays_earlier_data(tmp_path):
    buf = TrainingBuffer(tmp_path / "buffer.sqlite", buffer_records=20)
    texts = [f"text {i % 15}" for i in range(20)]
    buf.add("m", batch(range(20), texts), sources(range(100, 120), partition=1))
    champion = tmp_path / "champion_snapshot"
    first = buf.snapshot("m", champion, holdout_fraction=0.2)
    assert first.counts == {"train": 12, "holdout": 3, "replay": 0}
    assert first.meta["duplicate_texts_dropped"] == 5
    champion_train = read_snapshot(champion).train
    # "text 0".."text 4" were logged twice (ids 0-4 and 15-19); the newer record is kept
    assert "15" in champion_train.request_ids and "0" not in champion_train.request_ids

    # traffic moves on: half new texts, half texts the champion was trained on
    recent = [f"new {i}" for i in range(10)] + [f"text {i}" for i in range(10)]
    buf.add("m", batch(range(20, 40), recent), sources(range(120, 140), partition=1))
    info = buf.snapshot(
        "m", tmp_path / "snap", replay_source=champion, holdout_fraction=0.25, replay_records=3
    )
    snap = read_snapshot(info.path)
    assert snap.n_classes == C
    assert info.meta["offsets"] == [
        {"topic": "inference-logs", "partition": 1, "min_offset": 120, "max_offset": 139}
    ]
    assert len(snap.holdout) == 5
    # the holdout is the freshest traffic
    assert snap.holdout.request_ids == [str(i) for i in range(35, 40)]
    assert sorted(snap.train.texts + snap.holdout.texts) == sorted(recent)
    # replay comes from the champion's data, never repeats recent traffic, and has targets
    assert len(snap.replay) == 3
    assert set(snap.replay.texts) <= set(champion_train.texts) - set(recent)
    assert (snap.replay.has_teacher | snap.replay.has_label).all()
    row = json.loads((info.path / "train.jsonl").read_text().splitlines()[0])
    assert set(row) == {"request_id", "text", "student_logits", "teacher_logits", "label", "source"}


def test_replay_from_a_golden_set_file(tmp_path):
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        "\n".join(json.dumps({"text": f"golden {i}", "label": i % C}) for i in range(5))
        + "\n"
        + json.dumps({"text": "no target at all"})
        + "\n"
    )
    buf = TrainingBuffer(tmp_path / "buffer.sqlite", buffer_records=100)
    buf.add("m", batch(range(10), [f"t{i}" for i in range(10)]), sources(range(10)))
    snap = read_snapshot(buf.snapshot("m", tmp_path / "snap", replay_source=golden).path)
    assert sorted(snap.replay.texts) == [f"golden {i}" for i in range(5)]
    assert snap.replay.labels.tolist() == [0, 1, 2, 0, 1]


def test_snapshot_of_an_empty_buffer_is_refused(tmp_path):
    with pytest.raises(EmptyBuffer):
        TrainingBuffer(tmp_path / "b.sqlite", buffer_records=100).snapshot("m", tmp_path / "snap")

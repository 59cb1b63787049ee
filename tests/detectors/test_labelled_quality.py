import numpy as np
import pytest

from distilld.detectors.labelled_quality import LabelledQuality
from distilld.detectors.record_batch import NO_LABEL, RecordBatch


def test_accuracy_and_ece_known_answer():
    # two-class logits with known top-1 probabilities 0.9 (x2) and 0.6 (x2)
    logit_09, logit_06 = np.log(9.0), np.log(1.5)
    logits = np.array([[logit_09, 0], [logit_09, 0], [logit_06, 0], [logit_06, 0], [0, 5]], dtype=np.float32)
    labels = np.array([0, 1, 0, 0, NO_LABEL])
    state = LabelledQuality(2, ece_bins=10)
    state.update(RecordBatch.from_columns(texts=[""] * 5, student_logits=logits, labels=labels))
    assert int(state.n) == 4
    assert state.accuracy == pytest.approx(0.75)
    # bin 0.9: accuracy 1/2 vs confidence 0.9; bin 0.6: accuracy 1 vs confidence 0.6
    assert state.ece == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6), rel=1e-6)


def test_accuracy_drop_and_worst_class(rng):
    n, c = 3000, 4
    labels = rng.integers(c, size=n)
    good = np.eye(c, dtype=np.float32)[labels] * 4
    ref = LabelledQuality(c)
    ref.update(RecordBatch.from_columns(texts=[""] * n, student_logits=good, labels=labels))
    bad = good.copy()
    wrong = labels == 2
    bad[wrong] = np.eye(c, dtype=np.float32)[0] * 4
    cur = LabelledQuality(c)
    cur.update(RecordBatch.from_columns(texts=[""] * n, student_logits=bad, labels=labels))
    acc, ece = ref.statistics(cur, class_names=["w", "x", "y", "z"])
    assert acc.value == pytest.approx(wrong.mean())
    assert acc.evidence["worst_classes"][0]["class"] == "y"
    assert ece.value > 0


def test_merge_and_round_trip(rng):
    logits = rng.normal(size=(400, 3)).astype(np.float32)
    labels = np.where(rng.random(400) < 0.5, rng.integers(3, size=400), NO_LABEL)
    whole = RecordBatch.from_columns(texts=[""] * 400, student_logits=logits, labels=labels)
    a, b = whole.select(np.arange(150)), whole.select(np.arange(150, 400))
    sa, sb, sw = LabelledQuality(3), LabelledQuality(3), LabelledQuality(3)
    sa.update(a)
    sb.update(b)
    sw.update(whole)
    assert sa.merge(sb).equals(sw)
    assert LabelledQuality.from_dict(sw.to_dict()).equals(sw, rtol=0)

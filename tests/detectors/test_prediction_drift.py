import numpy as np
import pytest

from distilld.detectors.prediction_drift import PredictionDrift
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.statistic import js_bits, psi


def batch_predicting(classes, c=4, sharpness=3.0):
    logits = np.zeros((len(classes), c), dtype=np.float32)
    logits[np.arange(len(classes)), classes] = sharpness
    return RecordBatch.from_columns(texts=[""] * len(classes), student_logits=logits)


def updated(batch, bins=20):
    s = PredictionDrift(batch.n_classes, bins)
    s.update(batch)
    return s


def test_js_known_answers():
    assert js_bits(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert js_bits(np.array([5, 5]), np.array([1, 1])) == pytest.approx(0.0)
    # JS([1/2,1/2],[1,0]) = 1/2 KL(p||m) + 1/2 KL(q||m), m = [3/4, 1/4]
    expected = 0.5 * (0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25)) + 0.5 * np.log2(1 / 0.75)
    assert js_bits(np.array([1, 1]), np.array([2, 0])) == pytest.approx(expected)
    assert psi(np.array([50, 50]), np.array([50, 50])) == pytest.approx(0.0)


def test_class_js_and_confidence_known_answer():
    ref = updated(batch_predicting([0, 1, 2, 3] * 50))
    cur = updated(batch_predicting([0, 0, 0, 1] * 50))
    stats = {s.metric: s for s in ref.statistics(cur, window_records=200, min_expected=1)}
    assert stats["prediction.class_js"].value == pytest.approx(
        js_bits(np.array([3, 1, 0, 0]), np.array([1, 1, 1, 1]))
    )
    conf = np.exp(3.0) / (np.exp(3.0) + 3)
    assert float(cur.confidence_sum) / 200 == pytest.approx(conf)
    assert stats["prediction.confidence_drop"].value == pytest.approx(0.0, abs=1e-12)
    assert stats["prediction.confidence_js"].value == pytest.approx(0.0)


def test_confidence_drop_seen():
    ref = updated(batch_predicting([0, 1, 2, 3] * 50, sharpness=4.0))
    cur = updated(batch_predicting([0, 1, 2, 3] * 50, sharpness=1.0))
    stats = {s.metric: s for s in ref.statistics(cur)}
    assert stats["prediction.confidence_drop"].value > 0.3
    assert stats["prediction.confidence_js"].value == pytest.approx(1.0)


def test_evidence_names_the_shifted_class():
    ref = updated(batch_predicting([0, 1, 2, 3] * 500))
    cur = updated(batch_predicting([0, 1, 2, 3] * 400 + [2] * 400))
    (class_js, *_rest) = ref.statistics(cur, class_names=["a", "b", "c", "d"])
    top = class_js.evidence["shifted_classes"][0]
    assert top["class"] == "c"
    assert top["current_share"] > top["reference_share"]


def test_served_prediction_is_used_when_logged():
    b = batch_predicting([0, 1, 2, 3])
    served = RecordBatch.from_columns(
        texts=b.texts, student_logits=b.student_logits, predictions=np.array([3, 3, 3, -1])
    )
    s = updated(served)
    assert s.class_counts.tolist() == [0, 0, 0, 4]


def test_merge_and_round_trip(rng):
    logits = rng.normal(size=(500, 6)).astype(np.float32)
    a = RecordBatch.from_columns(texts=[""] * 300, student_logits=logits[:300])
    b = RecordBatch.from_columns(texts=[""] * 200, student_logits=logits[300:])
    merged = updated(a).merge(updated(b))
    whole = updated(RecordBatch.concat([a, b]))
    assert merged.equals(whole)
    assert PredictionDrift.from_dict(whole.to_dict()).equals(whole, rtol=0)
    with pytest.raises(ValueError, match="confidence_bins"):
        updated(a).merge(updated(b, bins=10))

import numpy as np
import orjson
import pytest
from detector_streams import class_shift_weights, stream_batch, uniform_weights

from distilld.detectors.config import DetectorsConfig
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.reference import Reference, ReferenceBuilder
from distilld.detectors.suite import METRIC_NAMES, DetectorSuite
from distilld.trainers.wordnet import LEXNAMES

CONFIG = DetectorsConfig(
    reference_records=4000, calibration_subwindows=8, report_sample_records=100, ngram_buckets=1 << 12
)


@pytest.fixture
def suite():
    return DetectorSuite(CONFIG, n_classes=45, class_names=LEXNAMES)


def test_merge_of_partitions_equals_one_window(suite, rng):
    a = stream_batch(700, rng, teacher_share=0.3, label_share=0.2)
    b = stream_batch(500, rng, teacher_share=0.3, label_share=0.2, start_id=700)
    wa, wb, whole = suite.new_window(), suite.new_window(), suite.new_window()
    wa.update(a)
    wb.update(b)
    whole.update(RecordBatch.concat([b, a]))
    merged = wa.merge(wb)
    assert merged.n_records == 1200
    assert merged.equals(whole)
    assert len(merged.sample) == 100


def test_window_round_trip(suite, rng):
    w = suite.new_window()
    w.update(stream_batch(300, rng, teacher_share=0.5, label_share=0.5))
    data = w.to_bytes()
    assert suite.load_window(data).equals(w)
    assert len(data) < 200_000
    other = DetectorSuite(CONFIG.model_copy(update={"ngram_buckets": 1 << 13}), n_classes=45)
    with pytest.raises(ValueError, match="settings"):
        other.load_window(data)


def test_sample_is_bounded_and_keeps_derived_columns(suite, rng):
    w = suite.new_window()
    for k in range(5):
        w.update(stream_batch(200, rng, teacher_share=1.0, start_id=200 * k))
    cols = w.sample.to_frame_columns(LEXNAMES)
    assert len(cols["text"]) == 100
    assert set(cols["predicted_class"]) <= set(LEXNAMES)
    assert all(0 <= c <= 1 for c in cols["confidence"])
    assert not np.isnan(cols["teacher_kl"]).any()


def test_builder_hands_back_the_rest_and_survives_a_restart(suite, rng):
    first = stream_batch(3000, rng, teacher_share=0.5, label_share=0.5)
    second = stream_batch(2500, rng, teacher_share=0.5, label_share=0.5, start_id=3000)
    builder = ReferenceBuilder(suite)
    assert builder.update(first) is None
    restored = ReferenceBuilder.from_bytes(builder.to_bytes(), suite)
    rest = restored.update(second)
    assert restored.complete
    assert len(rest) == 1500 and rest.request_ids[0] == second.request_ids[1000]

    straight = ReferenceBuilder(suite)
    straight.update(RecordBatch.concat([first, second]))
    a, b = restored.build(), straight.build()
    assert a.window.equals(b.window)
    whole = suite.new_window()
    whole.update(RecordBatch.concat([first, second]).select(np.arange(4000)))
    assert a.window.equals(whole)  # the reference's sample is the sample of all its records
    assert len(builder.to_bytes()) < 4 * len(whole.to_bytes())  # closed sub-windows carry no texts
    assert a.calibration.to_dict() == b.calibration.to_dict()
    assert a.built["subwindows"] == 8 and a.built["records"] == 4000


def test_scores_every_metric_and_reference_round_trips(suite, rng):
    builder = ReferenceBuilder(suite)
    builder.update(stream_batch(4000, rng, teacher_share=0.5, label_share=0.5))
    reference = builder.build()
    assert set(reference.calibration.models) == set(METRIC_NAMES)

    window = suite.new_window()
    window.update(
        stream_batch(
            500,
            rng,
            weights=class_shift_weights(uniform_weights(), 0.6, rng),
            teacher_share=0.5,
            label_share=0.5,
            start_id=10**6,
        )
    )
    scores = suite.score(reference, window)
    assert tuple(scores) == METRIC_NAMES
    assert scores["prediction.class_js"].breached
    assert all(s.direction == "above" for s in scores.values())
    orjson.dumps({k: s.to_dict() for k, s in scores.items()})

    again = Reference.from_bytes(reference.to_bytes(), suite)
    rescored = suite.score(again, window)
    assert {k: (s.value, s.threshold) for k, s in rescored.items()} == {
        k: (s.value, s.threshold) for k, s in scores.items()
    }


def test_class_count_mismatch_is_refused(suite, rng):
    w = suite.new_window()
    b = stream_batch(10, rng)
    narrow = RecordBatch.from_columns(texts=b.texts, student_logits=b.student_logits[:, :5])
    with pytest.raises(ValueError, match="classes"):
        w.update(narrow)

"""Calibrated thresholds hold their false-alarm probability on stationary streams."""

from collections import Counter

import numpy as np
from detector_streams import glosses, make_batch, stream_batch

from distilld.detectors.config import DetectorsConfig
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.reference import ReferenceBuilder
from distilld.detectors.suite import DetectorSuite

WINDOW = 300


def small_config(alpha):
    return DetectorsConfig(
        reference_records=20 * WINDOW,
        calibration_subwindows=20,
        false_alarm_probability_per_window=alpha,
        min_shadow_records=50,
        min_labelled_records=50,
        min_window_records=50,
        report_sample_records=20,
    )


def breach_rates(suite, make_stream, references=3, windows=80):
    breached, judged = Counter(), Counter()
    for r in range(references):
        rng = np.random.default_rng(1000 + r)
        builder = ReferenceBuilder(suite)
        builder.update(make_stream(20 * WINDOW, rng, 0))
        reference = builder.build()
        stream = make_stream(windows * WINDOW, rng, 10**7)
        for k in range(windows):
            window = suite.new_window()
            window.update(stream.select(np.arange(k * WINDOW, (k + 1) * WINDOW)))
            for metric, score in suite.score(reference, window).items():
                if score.threshold is not None:
                    judged[metric] += 1
                    breached[metric] += score.breached
    return breached, judged


def test_false_alarm_rate_close_to_configured_on_stationary_glosses():
    alpha = 0.05
    suite = DetectorSuite(small_config(alpha), n_classes=45)

    def stream(n, rng, start):
        return stream_batch(n, rng, start_id=start, teacher_share=0.5, label_share=0.5)

    breached, judged = breach_rates(suite, stream)
    assert set(judged) == {
        "divergence.agreement_drop",
        "divergence.kl_increase",
        "divergence.js_increase",
        "prediction.class_js",
        "prediction.confidence_drop",
        "prediction.confidence_js",
        "input.ngram_js",
        "input.length_shift",
        "input.oov_rate",
        "quality.accuracy_drop",
        "quality.ece_increase",
    }
    overall = sum(breached.values()) / sum(judged.values())
    # prediction bounds are conservative by design (never below the independent-records bound)
    assert 0.25 * alpha <= overall <= 1.3 * alpha, (overall, breached)
    for metric, n in judged.items():
        assert breached[metric] / n <= 3 * alpha, (metric, breached[metric], n)


def test_calibration_absorbs_bursty_traffic():
    """Records arriving in bursts of identical requests break the independent-records formula;
    thresholds calibrated on the (equally bursty) reference still hold the rate."""
    alpha = 0.05
    suite = DetectorSuite(small_config(alpha), n_classes=45)
    pool = list(glosses())

    def bursty(n, rng, start):
        picks = [pool[i] for i in rng.integers(len(pool), size=n // 10) for _ in range(10)]
        b = make_batch(picks, rng, teacher_share=1.0, start_id=start)
        # a burst is one request replayed: the same logits for all ten copies
        first = np.repeat(np.arange(0, n, 10), 10)
        return RecordBatch.from_columns(
            texts=b.texts,
            student_logits=b.student_logits[first],
            teacher_logits=b.teacher_logits[first],
            request_ids=b.request_ids,
        )

    breached, judged = breach_rates(suite, bursty, references=2, windows=60)
    overall = sum(breached.values()) / sum(judged.values())
    assert overall <= 1.5 * alpha, (overall, breached)

    # the independent-records normal bound would have alarmed far more often on the same windows
    rng = np.random.default_rng(99)
    builder = ReferenceBuilder(suite)
    builder.update(bursty(20 * WINDOW, rng, 0))
    model = builder.build().calibration.models["divergence.agreement_drop"]
    assert model.sigma > 2.0  # ten-record bursts inflate the standard error about sqrt(10)-fold


def test_small_reference_is_not_calibrated():
    suite = DetectorSuite(small_config(0.01), n_classes=45)
    rng = np.random.default_rng(3)
    builder = ReferenceBuilder(suite)
    builder.update(stream_batch(3 * WINDOW, rng))
    reference = builder.build()
    window = suite.new_window()
    window.update(stream_batch(WINDOW, rng, start_id=10**6))
    scores = suite.score(reference, window)
    assert all(s.threshold is None and not s.breached for s in scores.values())
    assert "why_uncalibrated" in scores["prediction.class_js"].evidence


def test_divergence_threshold_widens_with_fewer_shadow_records():
    suite = DetectorSuite(small_config(1e-3), n_classes=45)
    rng = np.random.default_rng(5)
    builder = ReferenceBuilder(suite)
    builder.update(stream_batch(20 * WINDOW, rng, teacher_share=0.5))
    reference = builder.build()

    thresholds = {}
    for share in (0.9, 0.3, 0.05):
        window = suite.new_window()
        window.update(stream_batch(WINDOW, rng, teacher_share=share, start_id=10**6))
        score = suite.score(reference, window)["divergence.agreement_drop"]
        thresholds[share] = (score.n_current, score.threshold)
    (n_many, wide_many), (n_few, wide_few), (n_too_few, none) = thresholds.values()
    assert n_many > n_few > n_too_few
    assert wide_few > wide_many  # fewer shadow records, wider bound
    assert n_too_few < 50 and none is None  # below min_shadow_records: no threshold

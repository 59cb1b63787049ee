import json

import numpy as np
from detector_streams import class_shift_weights, stream_batch, uniform_weights

from distilld.detectors.config import DetectorsConfig
from distilld.detectors.evidently_report import build_evidently_report
from distilld.detectors.suite import DetectorSuite
from distilld.trainers.wordnet import LEXNAMES


def test_report_builds_on_small_samples(tmp_path):
    suite = DetectorSuite(DetectorsConfig(report_sample_records=200), n_classes=45, class_names=LEXNAMES)
    rng = np.random.default_rng(11)
    reference, current = suite.new_window(), suite.new_window()
    reference.update(stream_batch(600, rng, teacher_share=0.5))
    shifted = class_shift_weights(uniform_weights(), 0.8, rng)
    current.update(stream_batch(600, rng, weights=shifted, teacher_share=0.5, start_id=10_000))

    summary = build_evidently_report(reference, current, tmp_path / "r", class_names=LEXNAMES)

    html = (tmp_path / "r" / "report.html").read_text()
    assert "<html" in html.lower()
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["metrics"]
    assert set(summary["columns"]) == {
        "confidence",
        "margin",
        "entropy_bits",
        "words",
        "teacher_agrees",
        "teacher_kl",
        "predicted_class",
        "text",
    }
    assert summary["reference_sample_records"] == 200
    # an 80 % class-mix shift is plain in the predicted classes
    assert "predicted_class" in summary["drifted_columns"]


def test_report_skips_columns_without_values(tmp_path):
    suite = DetectorSuite(DetectorsConfig(report_sample_records=100), n_classes=45)
    rng = np.random.default_rng(12)
    reference, current = suite.new_window(), suite.new_window()
    reference.update(stream_batch(300, rng, teacher_share=0.0))
    current.update(stream_batch(300, rng, teacher_share=0.0, start_id=10_000))
    summary = build_evidently_report(reference.sample, current.sample, tmp_path, include_text=False)
    assert "teacher_kl" not in summary["columns"] and "text" not in summary["columns"]
    assert (tmp_path / "report.json").exists()

from __future__ import annotations

import numpy as np
import pytest

from distilld.detectors.record_batch import NO_LABEL
from distilld.trainers.evaluate import expected_calibration_error, split_metrics
from distilld.trainers.snapshot import Split


def test_split_metrics_on_a_hand_checked_example():
    teacher = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]], np.float32)
    model = np.array([[2.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 3.0]], np.float32)
    split = Split(
        request_ids=list("abcd"),
        texts=list("abcd"),
        student_logits=model,
        teacher_logits=teacher,
        has_teacher=np.array([True, True, True, False]),
        labels=np.array([0, NO_LABEL, NO_LABEL, 1]),
    )
    m = split_metrics(model, split)
    assert (m.n_records, m.n_with_teacher, m.n_with_label) == (4, 3, 2)
    assert m.teacher_agreement == pytest.approx(2 / 3)
    p = 1 / (1 + np.exp(-2.0))
    # only record b differs: KL(teacher (1-p, p) || model (p, 1-p))
    kl_b = (1 - p) * np.log((1 - p) / p) + p * np.log(p / (1 - p))
    assert m.mean_kl_to_teacher == pytest.approx(kl_b / 3, rel=1e-6)
    assert m.accuracy == 1.0


def test_metrics_without_labels_or_teacher_are_none_not_zero():
    split = Split(
        request_ids=["a"],
        texts=["a"],
        student_logits=np.zeros((1, 2), np.float32),
        teacher_logits=np.zeros((1, 2), np.float32),
        has_teacher=np.array([False]),
        labels=np.array([NO_LABEL]),
    )
    m = split_metrics(np.zeros((1, 2), np.float32), split)
    assert m.teacher_agreement is m.mean_kl_to_teacher is m.accuracy is m.ece is None


def test_ece_is_the_confidence_accuracy_gap():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bin 0.9: accuracy 0.5, gap 0.4; bin 0.6: accuracy 1.0, gap 0.4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)

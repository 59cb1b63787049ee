import math

import numpy as np
import pytest

from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.teacher_divergence import TeacherDivergence


def softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


TEACHER = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
STUDENT = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.0]], dtype=np.float32)


def hand_batch(has_teacher=(True, True, True, False)):
    return RecordBatch.from_columns(
        texts=["a", "b", "c", "d"],
        student_logits=STUDENT,
        teacher_logits=TEACHER,
        has_teacher=np.array(has_teacher),
    )


def test_agreement_and_kl_known_answer():
    state = TeacherDivergence(2, kl_temperature=1.0)
    state.update(hand_batch())
    assert int(state.n) == 3  # the fourth record has no teacher output
    assert state.agreement == pytest.approx(1 / 3)
    expected_kl = np.mean([kl(softmax(t), softmax(s)) for t, s in zip(TEACHER[:3], STUDENT[:3], strict=True)])
    assert float(state.kl_sum) / 3 == pytest.approx(expected_kl, rel=1e-9)
    assert state.confusion.tolist() == [[1, 1], [1, 0]]


def test_temperature_softens_kl():
    hot, cold = TeacherDivergence(2, kl_temperature=4.0), TeacherDivergence(2, kl_temperature=1.0)
    b = hand_batch()
    hot.update(b)
    cold.update(b)
    t = 4.0
    expected = np.mean(
        [kl(softmax(tl / t), softmax(sl / t)) for tl, sl in zip(TEACHER[:3], STUDENT[:3], strict=True)]
    )
    assert float(hot.kl_sum) / 3 == pytest.approx(expected, rel=1e-9)
    assert hot.kl_sum < cold.kl_sum


def test_drop_values_against_reference():
    ref = TeacherDivergence(2)
    ref.update(
        RecordBatch.from_columns(
            texts=["x"] * 4, student_logits=TEACHER[[0, 1, 0, 1]], teacher_logits=TEACHER[[0, 1, 0, 1]]
        )
    )
    cur = TeacherDivergence(2)
    cur.update(hand_batch())
    stats = {s.metric: s for s in ref.statistics(cur)}
    assert stats["divergence.agreement_drop"].value == pytest.approx(1 - 1 / 3)
    assert stats["divergence.kl_increase"].value == pytest.approx(float(cur.kl_sum) / 3)
    assert stats["divergence.agreement_drop"].n_current == 3
    assert stats["divergence.agreement_drop"].n_reference == 4


def test_merge_equals_single_update(rng):
    a, b = random_batch(rng, 300), random_batch(rng, 200)
    merged = TeacherDivergence(5).merge(updated(a))
    merged.merge(updated(b))
    assert merged.equals(updated(RecordBatch.concat([a, b])))


def test_round_trip(rng):
    state = updated(random_batch(rng, 100))
    again = TeacherDivergence.from_dict(state.to_dict())
    assert again.equals(state, rtol=0)
    assert TeacherDivergence.from_dict(state.to_dict(compress=False)).equals(state, rtol=0)


def test_evidence_names_the_class_the_student_got_wrong(rng):
    ref = updated(random_batch(rng, 4000))
    cur_batch = random_batch(rng, 4000)
    # the student now answers 0 wherever the teacher says 3
    student = cur_batch.student_logits.copy()
    rows = cur_batch.teacher_logits.argmax(axis=1) == 3
    student[rows] = 0.0
    student[rows, 0] = 10.0
    cur = updated(
        RecordBatch.from_columns(
            texts=cur_batch.texts, student_logits=student, teacher_logits=cur_batch.teacher_logits
        )
    )
    (agreement, *_rest) = ref.statistics(cur, class_names=["c0", "c1", "c2", "c3", "c4"])
    assert agreement.evidence["worst_agreeing_classes"][0]["teacher_class"] == "c3"
    top_confusion = agreement.evidence["rising_confusions"][0]
    assert (top_confusion["teacher_class"], top_confusion["student_class"]) == ("c3", "c0")


def test_no_shadow_records_is_unusable(rng):
    b = random_batch(rng, 50)
    no_teacher = RecordBatch.from_columns(texts=b.texts, student_logits=b.student_logits)
    ref, cur = updated(b), updated(no_teacher)
    assert all(not s.usable for s in ref.statistics(cur))


def random_batch(rng, n, c=5):
    teacher = rng.normal(size=(n, c)).astype(np.float32)
    student = (teacher + rng.normal(scale=0.7, size=(n, c))).astype(np.float32)
    return RecordBatch.from_columns(
        texts=["t"] * n, student_logits=student, teacher_logits=teacher, has_teacher=rng.random(n) < 0.7
    )


def updated(batch):
    s = TeacherDivergence(batch.n_classes)
    s.update(batch)
    return s

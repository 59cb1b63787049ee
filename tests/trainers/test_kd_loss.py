from __future__ import annotations

import math

import pytest
import torch

from distilld.trainers.kd_loss import kd_loss


def _softmax(xs, t):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def _hand_kl(teacher, student, t):
    p, q = _softmax(teacher, t), _softmax(student, t)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _hand_ce(student, label):
    return -math.log(_softmax(student, 1.0)[label])


def test_kd_loss_matches_hand_computed_value():
    s = [[1.0, 0.5, -1.0], [0.2, 0.1, 0.3], [2.0, -2.0, 0.0]]
    t = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    has_teacher = [True, True, False]
    labels = [-1, 2, 1]
    temperature, alpha = 2.0, 0.7
    expected = (
        temperature**2 * _hand_kl(t[0], s[0], temperature)
        + alpha * temperature**2 * _hand_kl(t[1], s[1], temperature)
        + (1 - alpha) * _hand_ce(s[1], 2)
        + _hand_ce(s[2], 1)
    ) / 3
    got = kd_loss(
        torch.tensor(s), torch.tensor(t), torch.tensor(has_teacher), torch.tensor(labels), temperature, alpha
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_is_zero_when_student_equals_teacher():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.0]])
    loss = kd_loss(logits, logits.clone(), torch.tensor([True]), torch.tensor([-1]), 4.0, 0.5)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_rejects_records_with_no_target():
    with pytest.raises(ValueError, match="teacher target or a label"):
        kd_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([False]), torch.tensor([-1]), 2.0, 0.5)

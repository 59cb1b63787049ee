"""Knowledge-distillation loss (Hinton et al. 2015, as used for DistilBERT).

Per record: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``
when it has both a teacher target and a label; the KD term alone when it has
only a teacher target; cross-entropy alone when it has only a label (the
``labels_only`` missing-teacher policy). The T^2 factor keeps the KD gradient
on the same scale as CE whatever the temperature. Averaged over records.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    has_teacher: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Mean distillation loss over a batch.

    ``has_teacher`` is a bool mask; ``labels`` holds -1 where a record has no
    label. Every record must have at least one of the two.
    """
    s = student_logits.float()
    has_label = labels >= 0
    if not bool((has_teacher | has_label).all()):
        raise ValueError("every record needs a teacher target or a label")
    t = temperature
    log_p_s = F.log_softmax(s / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * (t * t)
    ce = F.cross_entropy(s, labels.clamp(min=0), reduction="none")
    kd_weight = torch.where(has_label, torch.full_like(kl, alpha), torch.ones_like(kl))
    per_record = torch.where(has_teacher, kd_weight * kl, torch.zeros_like(kl)) + torch.where(
        has_label, torch.where(has_teacher, 1.0 - kd_weight, torch.ones_like(kl)) * ce, torch.zeros_like(ce)
    )
    return per_record.mean()

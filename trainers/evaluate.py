"""Gate inputs: how faithful a model is to the teacher, and how good where labels exist.

For each evaluation split (the fresh holdout, the replay/golden set) and each
model (candidate, champion): top-1 agreement with the teacher and mean
KL(teacher || model) at T=1 over records with a teacher target; accuracy and
expected calibration error (15 equal-width confidence bins) over records with
a label. A metric with no records to measure on is ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from distilld.trainers.snapshot import Split

ECE_BINS = 15


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@dataclass(frozen=True)
class SplitMetrics:
    n_records: int
    n_with_teacher: int
    n_with_label: int
    teacher_agreement: float | None
    mean_kl_to_teacher: float | None
    accuracy: float | None
    ece: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def split_metrics(logits: np.ndarray, split: Split) -> SplitMetrics:
    log_p = log_softmax(logits.astype(np.float64), axis=1)
    t = split.has_teacher
    agreement = kl = accuracy = ece = None
    if t.any():
        log_q = log_softmax(split.teacher_logits[t].astype(np.float64), axis=1)
        agreement = float((logits[t].argmax(axis=1) == split.teacher_logits[t].argmax(axis=1)).mean())
        kl = float((np.exp(log_q) * (log_q - log_p[t])).sum(axis=1).mean())
    lab = split.has_label
    if lab.any():
        accuracy = float((logits[lab].argmax(axis=1) == split.labels[lab]).mean())
        ece = expected_calibration_error(np.exp(log_p[lab]), split.labels[lab])
    return SplitMetrics(
        n_records=len(split),
        n_with_teacher=int(t.sum()),
        n_with_label=int(lab.sum()),
        teacher_agreement=agreement,
        mean_kl_to_teacher=kl,
        accuracy=accuracy,
        ece=ece,
    )

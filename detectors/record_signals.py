"""Per-record quantities several detectors need, computed once per batch.

Softmax over the student's logits feeds prediction drift, labelled quality
and the report sample; the hashed tokens feed input drift and the sample.
Each is computed on first use and then shared.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from distilld.detectors.ngram_hashing import HashedTokens, hash_tokens
from distilld.detectors.record_batch import RecordBatch


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64, copy=False) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class RecordSignals:
    """Derived columns of one ``RecordBatch``."""

    def __init__(self, batch: RecordBatch, kl_temperature: float = 1.0):
        self.batch = batch
        self.kl_temperature = kl_temperature

    @cached_property
    def student_log_probs(self) -> np.ndarray:
        return log_softmax(self.batch.student_logits)

    @cached_property
    def predictions(self) -> np.ndarray:
        """The served prediction, or the student's argmax where none was logged."""
        pred = np.asarray(self.batch.predictions, dtype=np.int64)
        missing = pred < 0
        if missing.any():
            pred = pred.copy()
            pred[missing] = self.batch.student_logits[missing].argmax(axis=1)
        return pred

    @cached_property
    def _top2(self) -> np.ndarray:
        lp = self.student_log_probs
        if lp.shape[1] < 2:
            return np.stack([lp[:, 0], np.full(len(lp), -np.inf)], axis=1)
        return -np.sort(-np.partition(lp, lp.shape[1] - 2, axis=1)[:, -2:], axis=1)

    @cached_property
    def confidence(self) -> np.ndarray:
        """Top-1 probability of the student."""
        return np.exp(self._top2[:, 0])

    @cached_property
    def margin(self) -> np.ndarray:
        """Top-1 minus top-2 probability."""
        return np.exp(self._top2[:, 0]) - np.exp(self._top2[:, 1])

    @cached_property
    def entropy(self) -> np.ndarray:
        """Shannon entropy of the student's distribution, in bits."""
        lp = self.student_log_probs
        return -(np.exp(lp) * lp).sum(axis=1) / np.log(2)

    @cached_property
    def teacher_rows(self) -> np.ndarray:
        return np.flatnonzero(self.batch.has_teacher)

    @cached_property
    def teacher_classes(self) -> np.ndarray:
        """Teacher argmax for the records with teacher outputs (``teacher_rows``)."""
        return self.batch.teacher_logits[self.teacher_rows].argmax(axis=1)

    @cached_property
    def _teacher_divergences(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.teacher_rows
        t = self.kl_temperature
        log_pt = log_softmax(self.batch.teacher_logits[rows], t)
        log_ps = log_softmax(self.batch.student_logits[rows], t)
        pt, ps = np.exp(log_pt), np.exp(log_ps)
        kl = (pt * (log_pt - log_ps)).sum(axis=1)
        log_m = np.log(np.maximum(0.5 * (pt + ps), 1e-300))
        js = 0.5 * ((pt * (log_pt - log_m)).sum(axis=1) + (ps * (log_ps - log_m)).sum(axis=1)) / np.log(2)
        return np.maximum(kl, 0.0), np.clip(js, 0.0, 1.0)

    @property
    def teacher_kl(self) -> np.ndarray:
        """KL(teacher || student) in nats at ``kl_temperature``, per teacher row."""
        return self._teacher_divergences[0]

    @property
    def teacher_js(self) -> np.ndarray:
        """Jensen-Shannon divergence teacher vs student in bits at ``kl_temperature``, per teacher row."""
        return self._teacher_divergences[1]

    @cached_property
    def tokens(self) -> HashedTokens:
        return hash_tokens(self.batch.texts)

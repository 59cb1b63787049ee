"""Synthetic but realistic record streams for detector tests: WordNet glosses as texts.

Logits come from a fixed model: the teacher puts most mass on the gloss's
class, the student is the teacher plus noise, so agreement is high but not
perfect and a class-mix shift moves predictions the way a real one would.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from distilld.detectors.record_batch import RecordBatch
from distilld.trainers.wordnet import NUM_CLASSES, Gloss, class_mix_sample, load_glosses


@cache
def glosses() -> tuple[Gloss, ...]:
    return tuple(load_glosses())


def uniform_weights() -> dict[int, float]:
    counts = np.bincount([g.label for g in glosses()], minlength=NUM_CLASSES)
    return {c: float(counts[c]) for c in range(NUM_CLASSES) if counts[c] > 0}


def make_batch(
    picks: list[Gloss],
    rng: np.random.Generator,
    teacher_share: float = 1.0,
    label_share: float = 0.0,
    student_noise: float = 1.0,
    start_id: int = 0,
) -> RecordBatch:
    n = len(picks)
    labels = np.array([g.label for g in picks], dtype=np.int64)
    teacher = rng.normal(0, 1.0, size=(n, NUM_CLASSES)).astype(np.float32)
    teacher[np.arange(n), labels] += 3.0
    student = teacher + rng.normal(0, student_noise, size=teacher.shape).astype(np.float32)
    has_teacher = rng.random(n) < teacher_share
    has_label = rng.random(n) < label_share
    return RecordBatch.from_columns(
        texts=[g.text for g in picks],
        student_logits=student,
        teacher_logits=teacher,
        has_teacher=has_teacher,
        labels=np.where(has_label, labels, -1),
        request_ids=[f"r{start_id + i}" for i in range(n)],
        ts=np.arange(start_id, start_id + n, dtype=np.float64),
    )


def stream_batch(
    n: int, rng: np.random.Generator, weights: dict[int, float] | None = None, start_id: int = 0, **kw: float
) -> RecordBatch:
    picks = class_mix_sample(list(glosses()), weights or uniform_weights(), n, rng)
    return make_batch(picks, rng, start_id=start_id, **kw)


def class_shift_weights(
    weights: dict[int, float], fraction: float, rng: np.random.Generator, n_classes: int = 10
):
    """A mix whose records are ``fraction`` from ``n_classes`` random classes, the rest as ``weights``.

    fraction=0.4 is "a 40 % class-mix shift": 40 % of the traffic now comes
    from a different class mix.
    """
    classes = sorted(weights)
    chosen = set(rng.choice(classes, size=n_classes, replace=False).tolist())
    total = sum(weights.values())
    chosen_total = sum(weights[c] for c in chosen)
    return {
        c: (1 - fraction) * weights[c] / total
        + (fraction * weights[c] / chosen_total if c in chosen else 0.0)
        for c in classes
    }

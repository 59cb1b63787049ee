"""Synthetic snapshots and job specs on tiny models, shared by trainer and daemon tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilld.detectors.record_batch import NO_LABEL
from distilld.trainers.job_spec import Hyperparameters, JobSpec, TeacherSource
from distilld.trainers.snapshot import Source, Split, write_snapshot
from distilld.trainers.tiny_models import BASE_CORPUS

N_CLASSES = 4
WORDS = sorted({w for t in BASE_CORPUS for w in t.split()})


def synthetic_split(
    n: int, seed: int, prefix: str, teacher_share: float = 1.0, label_share: float = 0.5
) -> Split:
    """Texts of random corpus words; the teacher's class is the first word's index mod N_CLASSES."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(n)]
    first = np.array([WORDS.index(t.split()[0]) % N_CLASSES for t in texts])
    teacher = rng.normal(0, 0.5, (n, N_CLASSES)).astype(np.float32)
    teacher[np.arange(n), first] += 3.0
    has_teacher = rng.random(n) < teacher_share
    teacher[~has_teacher] = 0.0
    labels = np.where(rng.random(n) < label_share, first, NO_LABEL).astype(np.int64)
    return Split(
        request_ids=[f"{prefix}-{i}" for i in range(n)],
        texts=texts,
        student_logits=rng.normal(0, 1, (n, N_CLASSES)).astype(np.float32),
        teacher_logits=teacher,
        has_teacher=has_teacher,
        labels=labels,
        sources=[Source("inference-logs", 0, i) for i in range(n)],
    )


def write_synthetic_snapshot(folder: Path, n_train: int = 48, teacher_share: float = 1.0) -> Path:
    write_snapshot(
        folder,
        train=synthetic_split(n_train, 1, "train", teacher_share=teacher_share),
        holdout=synthetic_split(16, 2, "holdout"),
        replay=synthetic_split(24, 3, "replay"),
        meta={"n_classes": N_CLASSES, "model": "tiny", "created_at": 0.0},
    )
    return folder


def tiny_job_spec(
    tmp: Path, student: Path, snapshot: Path, teacher: TeacherSource | None = None, **overrides
) -> JobSpec:
    hp = Hyperparameters(
        epochs=2, batch_size_records=8, max_length_tokens=16, lora_rank=4, learning_rate=1e-2
    )
    fields = {
        "job_id": "job-1",
        "model": "tiny",
        "base_student_path": student,
        "snapshot_uri": str(snapshot),
        "teacher": teacher or TeacherSource(),
        "hyperparameters": hp,
        "device": "cpu",
        "output_dir": tmp / "job",
    }
    fields.update(overrides)
    return JobSpec(**fields)

"""The training-data snapshot folder: the one hand-off from the daemon to a job.

Layout (written by ``distilld.daemon.training_buffer``, read by the trainer)::

    snapshot.json    counts, offset ranges per (topic, partition), n_classes, created_at
    train.jsonl      recent traffic to distil on
    holdout.jsonl    the freshest slice of traffic, never trained on
    replay.jsonl     earlier data (the champion's training data or a golden set)

Each line: ``{"request_id", "text", "student_logits", "teacher_logits" | null,
"label" | null, "source": {"topic", "partition", "offset"} | null}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from distilld.detectors.record_batch import NO_LABEL

SPLITS = ("train", "holdout", "replay")
META_FILE = "snapshot.json"


class Source(NamedTuple):
    """Where a record came from: a plain ``(topic, partition, offset)`` tuple works too."""

    topic: str
    partition: int
    offset: int


@dataclass
class Split:
    """One split, column by column. ``teacher_logits`` rows are zeros where ``has_teacher`` is False."""

    request_ids: list[str]
    texts: list[str]
    student_logits: np.ndarray
    teacher_logits: np.ndarray
    has_teacher: np.ndarray
    labels: np.ndarray
    sources: list[Source | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.request_ids)

    @property
    def has_label(self) -> np.ndarray:
        return self.labels != NO_LABEL

    def select(self, index: np.ndarray) -> Split:
        idx = np.flatnonzero(index) if index.dtype == bool else np.asarray(index, dtype=np.int64)
        return Split(
            request_ids=[self.request_ids[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            student_logits=self.student_logits[idx],
            teacher_logits=self.teacher_logits[idx],
            has_teacher=self.has_teacher[idx],
            labels=self.labels[idx],
            sources=[self.sources[i] for i in idx] if self.sources else [],
        )

    @classmethod
    def empty(cls, n_classes: int) -> Split:
        return cls(
            request_ids=[],
            texts=[],
            student_logits=np.zeros((0, n_classes), np.float32),
            teacher_logits=np.zeros((0, n_classes), np.float32),
            has_teacher=np.zeros(0, bool),
            labels=np.zeros(0, np.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence[Split]) -> Split:
        return cls(
            request_ids=[r for p in parts for r in p.request_ids],
            texts=[t for p in parts for t in p.texts],
            student_logits=np.concatenate([p.student_logits for p in parts]),
            teacher_logits=np.concatenate([p.teacher_logits for p in parts]),
            has_teacher=np.concatenate([p.has_teacher for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            sources=[s for p in parts for s in (p.sources or [None] * len(p))],
        )


@dataclass
class Snapshot:
    train: Split
    holdout: Split
    replay: Split
    meta: dict

    @property
    def n_classes(self) -> int:
        return int(self.meta["n_classes"])


def _row(split: Split, i: int) -> dict:
    src = split.sources[i] if split.sources else None
    return {
        "request_id": split.request_ids[i],
        "text": split.texts[i],
        "student_logits": [float(x) for x in split.student_logits[i]],
        "teacher_logits": [float(x) for x in split.teacher_logits[i]] if split.has_teacher[i] else None,
        "label": int(split.labels[i]) if split.labels[i] != NO_LABEL else None,
        "source": None
        if src is None
        else {"topic": src.topic, "partition": src.partition, "offset": src.offset},
    }


def write_split(path: Path, split: Split) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(len(split)):
            fh.write(json.dumps(_row(split, i), separators=(",", ":")) + "\n")


def split_from_rows(rows: Iterable[dict], n_classes: int) -> Split:
    rows = list(rows)
    n = len(rows)
    student = np.zeros((n, n_classes), np.float32)
    teacher = np.zeros((n, n_classes), np.float32)
    has_teacher = np.zeros(n, bool)
    labels = np.full(n, NO_LABEL, np.int64)
    sources: list[Source | None] = []
    for i, r in enumerate(rows):
        if r.get("student_logits") is not None:
            student[i] = r["student_logits"]
        if r.get("teacher_logits") is not None:
            teacher[i] = r["teacher_logits"]
            has_teacher[i] = True
        if r.get("label") is not None:
            labels[i] = r["label"]
        s = r.get("source")
        sources.append(None if s is None else Source(s["topic"], int(s["partition"]), int(s["offset"])))
    return Split(
        request_ids=[str(r.get("request_id") or f"row-{i}") for i, r in enumerate(rows)],
        texts=[r["text"] for r in rows],
        student_logits=student,
        teacher_logits=teacher,
        has_teacher=has_teacher,
        labels=labels,
        sources=sources,
    )


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def infer_n_classes(rows: Iterable[dict]) -> int | None:
    for r in rows:
        for key in ("teacher_logits", "student_logits"):
            if r.get(key) is not None:
                return len(r[key])
    return None


def write_snapshot(out_dir: Path, train: Split, holdout: Split, replay: Split, meta: dict) -> dict:
    """Write the three splits and ``snapshot.json`` (``meta`` plus counts); return the full meta."""
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": train, "holdout": holdout, "replay": replay}
    for name, split in splits.items():
        write_split(out_dir / f"{name}.jsonl", split)
    full = {**meta, "counts": {name: len(s) for name, s in splits.items()}}
    (out_dir / META_FILE).write_text(json.dumps(full, indent=2))
    return full


def read_snapshot(folder: Path) -> Snapshot:
    folder = Path(folder)
    if not (folder / META_FILE).exists():
        raise FileNotFoundError(f"{folder} is not a snapshot folder (no {META_FILE})")
    meta = json.loads((folder / META_FILE).read_text())
    rows = {
        name: read_rows(folder / f"{name}.jsonl") if (folder / f"{name}.jsonl").exists() else []
        for name in SPLITS
    }
    n_classes = meta.get("n_classes") or next(
        (c for c in (infer_n_classes(r) for r in rows.values()) if c is not None), None
    )
    if n_classes is None:
        raise ValueError(f"snapshot {folder} has no logits to tell the class count from")
    meta["n_classes"] = int(n_classes)
    return Snapshot(**{name: split_from_rows(rows[name], int(n_classes)) for name in SPLITS}, meta=meta)


def fetch_snapshot(uri: str, local_dir: Path, s3_endpoint_url: str | None = None) -> Path:
    """A local folder holding the snapshot: ``uri`` itself, or a copy of an ``s3://bucket/prefix``."""
    if not uri.startswith("s3://"):
        return Path(uri)
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint_url)
    local_dir.mkdir(parents=True, exist_ok=True)
    names = [META_FILE, *(f"{name}.jsonl" for name in SPLITS)]
    for name in names:
        try:
            s3.download_file(bucket, prefix + name, str(local_dir / name))
        except s3.exceptions.ClientError as err:
            # a snapshot may legitimately have no replay split; the meta file is mandatory
            if name == META_FILE or err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                raise
    return local_dir

"""The per-model training buffer: recent valid records, kept on disk, snapshotted for a job.

A SQLite file in the state dir holds the last ``buffer_records`` records of
each model (text, student logits, teacher logits and label where present, and
the Kafka position each came from). Adding is idempotent by request_id, so a
batch replayed after a crash is not buffered twice. ``snapshot`` turns the
buffer into the folder a training job reads (see
``distilld.trainers.snapshot``): deduplicated by text (newest kept), the newest
``holdout_fraction`` held out for evaluation, and a replay sample of earlier
data (the champion's own training snapshot, or an operator's golden set) that
shares no text with the recent traffic.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilld.detectors.record_batch import NO_LABEL, RecordBatch
from distilld.trainers.snapshot import (
    META_FILE,
    Source,
    Split,
    infer_n_classes,
    read_rows,
    split_from_rows,
    write_snapshot,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    model_version TEXT,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    text TEXT NOT NULL,
    student_logits BLOB NOT NULL,
    teacher_logits BLOB,
    label INTEGER,
    topic TEXT,
    partition INTEGER,
    offset INTEGER,
    UNIQUE (model, request_id)
);
CREATE INDEX IF NOT EXISTS records_model_seq ON records (model, seq);
"""


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    meta: dict

    @property
    def counts(self) -> dict[str, int]:
        return self.meta["counts"]


class EmptyBuffer(ValueError):
    pass


def _floats(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32)


class TrainingBuffer:
    """Bounded, persistent buffer of recent records per model. Thread-safe."""

    def __init__(self, path: Path, buffer_records: int):
        self.path = Path(path)
        self.buffer_records = buffer_records
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self,
        model: str,
        batch: RecordBatch,
        sources: Sequence[Source | tuple[str, int, int]] | None = None,
        model_version: str | None = None,
    ) -> int:
        """Buffer ``batch``'s records (aligned ``sources`` give their Kafka positions); return how many were new."""
        if sources is not None and len(sources) != len(batch):
            raise ValueError(f"{len(sources)} sources for {len(batch)} records")
        rows = []
        for i in range(len(batch)):
            topic, partition, offset = sources[i] if sources is not None else (None, None, None)
            rows.append(
                (
                    model,
                    model_version,
                    batch.request_ids[i],
                    float(batch.ts[i]),
                    batch.texts[i],
                    batch.student_logits[i].astype(np.float32).tobytes(),
                    batch.teacher_logits[i].astype(np.float32).tobytes() if batch.has_teacher[i] else None,
                    int(batch.labels[i]) if batch.labels[i] != NO_LABEL else None,
                    topic,
                    partition,
                    offset,
                )
            )
        with self._lock:
            self._db.execute("BEGIN")
            try:
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO records (model, model_version, request_id, ts, text, student_logits,"
                    " teacher_logits, label, topic, partition, offset) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                added = self._db.total_changes - before
                self._db.execute(
                    "DELETE FROM records WHERE model = ? AND seq <= (SELECT seq FROM records WHERE model = ?"
                    " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (model, model, self.buffer_records),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def count(self, model: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM records WHERE model = ?", (model,)).fetchone()[0]

    def models(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT model FROM records ORDER BY model")]

    def _rows(self, model: str) -> list[tuple]:
        with self._lock:
            return self._db.execute(
                "SELECT request_id, text, student_logits, teacher_logits, label, topic, partition, offset"
                " FROM records WHERE model = ? ORDER BY seq",
                (model,),
            ).fetchall()

    def snapshot(
        self,
        model: str,
        out_dir: Path,
        replay_source: Path | None = None,
        holdout_fraction: float = 0.1,
        replay_records: int = 2_000,
        seed: int = 0,
    ) -> SnapshotInfo:
        """Write the training snapshot folder for ``model`` to ``out_dir``.

        ``replay_source`` is a snapshot folder (the champion's training data:
        its train and replay splits) or a JSONL golden-set file; None means no
        replay split.
        """
        rows = self._rows(model)
        if not rows:
            raise EmptyBuffer(f"the training buffer holds no records for model {model!r}")
        newest_by_text: dict[str, int] = {}
        for i, r in enumerate(rows):
            newest_by_text[r[1]] = i
        keep = sorted(newest_by_text.values())
        recent = [
            {
                "request_id": r[0],
                "text": r[1],
                "student_logits": _floats(r[2]).tolist(),
                "teacher_logits": None if r[3] is None else _floats(r[3]).tolist(),
                "label": r[4],
                "source": None if r[5] is None else {"topic": r[5], "partition": r[6], "offset": r[7]},
            }
            for r in (rows[i] for i in keep)
        ]
        n_classes = infer_n_classes(recent)
        n_holdout = max(1, round(len(recent) * holdout_fraction)) if len(recent) > 1 else 0
        train = split_from_rows(recent[: len(recent) - n_holdout], n_classes)
        holdout = split_from_rows(recent[len(recent) - n_holdout :], n_classes)
        replay = self._replay_sample(
            replay_source, n_classes, {r["text"] for r in recent}, replay_records, seed
        )
        meta = {
            "model": model,
            "created_at": time.time(),
            "n_classes": n_classes,
            "buffered_records": len(rows),
            "duplicate_texts_dropped": len(rows) - len(recent),
            "holdout_fraction": holdout_fraction,
            "replay_source": None if replay_source is None else str(replay_source),
            "offsets": _offset_ranges(Split.concat([train, holdout])),
        }
        meta = write_snapshot(Path(out_dir), train, holdout, replay, meta)
        log.info("training snapshot written", extra={"model": model, "counts": meta["counts"]})
        return SnapshotInfo(path=Path(out_dir), meta=meta)

    @staticmethod
    def _replay_sample(
        source: Path | None, n_classes: int, recent_texts: set[str], n: int, seed: int
    ) -> Split:
        if source is None or n == 0:
            return Split.empty(n_classes)
        source = Path(source)
        if source.is_dir():
            if not (source / META_FILE).exists():
                raise FileNotFoundError(f"replay source {source} is not a snapshot folder")
            rows = [r for name in ("train", "replay") for r in _rows_if_present(source / f"{name}.jsonl")]
        else:
            rows = read_rows(source)
        seen: set[str] = set()
        pool = []
        for r in rows:
            if r["text"] not in recent_texts and r["text"] not in seen and _has_target(r):
                seen.add(r["text"])
                pool.append(r)
        if len(pool) > n:
            pick = np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))
            pool = [pool[i] for i in pick]
        for i, r in enumerate(pool):
            r.setdefault("request_id", f"replay-{i}")
            r.setdefault("student_logits", None)
            r.setdefault("source", None)
        return split_from_rows(pool, n_classes)


def _has_target(row: dict) -> bool:
    return row.get("teacher_logits") is not None or row.get("label") is not None


def _rows_if_present(path: Path) -> list[dict]:
    return read_rows(path) if path.exists() else []


def _offset_ranges(split: Split) -> list[dict]:
    ranges: dict[tuple[str, int], list[int]] = {}
    for s in split.sources:
        if s is None:
            continue
        lo_hi = ranges.setdefault((s.topic, s.partition), [s.offset, s.offset])
        lo_hi[0] = min(lo_hi[0], s.offset)
        lo_hi[1] = max(lo_hi[1], s.offset)
    return [
        {"topic": t, "partition": p, "min_offset": lo, "max_offset": hi}
        for (t, p), (lo, hi) in sorted(ranges.items())
    ]

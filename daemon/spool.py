"""An on-disk spool of work that must eventually go through: registrations, events, notifications.

Each entry is one JSON file ``<id>.json`` (kind, payload, attempts, next
attempt time, last error) plus an optional folder ``<id>.files/`` holding
copies of the files it needs (a candidate's export folder), so the entry
stays valid even if the job folder it came from is cleaned up. Files are
written to a temporary name, fsynced and renamed, so a crash leaves either the
old or the new state; a new ``Spool`` on the same folder (after a restart)
picks up every entry. Entries that can never succeed are moved to ``dead/``
for a human to inspect.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class SpoolEntry:
    id: str
    kind: str
    payload: dict[str, Any]
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    files_dir: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "payload": self.payload,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
        }


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help; the entry goes to ``dead/``."""


@dataclass
class DrainResult:
    done: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_tree_or_file(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


class Spool:
    def __init__(
        self,
        directory: Path,
        retry_initial_s: float = 5.0,
        retry_max_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.directory = Path(directory)
        self.dead_directory = self.directory / "dead"
        self.dead_directory.mkdir(parents=True, exist_ok=True)
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._clock = clock
        self._lock = threading.RLock()
        self._remove_partial_writes()

    def _remove_partial_writes(self) -> None:
        """Leftovers of a crash mid-``put``: temp files, and attachment folders whose entry never landed."""
        for path in self.directory.glob("*.tmp"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        for files in self.directory.glob("*.files"):
            if not files.with_suffix(".json").exists():
                shutil.rmtree(files)

    def _write(self, entry: SpoolEntry) -> None:
        path = self.directory / f"{entry.id}.json"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(entry.to_json(), fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        _fsync_dir(self.directory)

    def _load(self, path: Path) -> SpoolEntry:
        raw = json.loads(path.read_text())
        files = path.with_suffix(".files")
        return SpoolEntry(
            id=raw["id"],
            kind=raw["kind"],
            payload=raw["payload"],
            created_at=raw["created_at"],
            attempts=raw["attempts"],
            next_attempt_at=raw["next_attempt_at"],
            last_error=raw["last_error"],
            files_dir=files if files.is_dir() else None,
        )

    def put(
        self, kind: str, payload: dict[str, Any], attachments: Mapping[str, Path] | None = None
    ) -> SpoolEntry:
        """Durably record one item; ``attachments`` (name → file or folder) are copied in first."""
        with self._lock:
            now = self._clock()
            entry_id = f"{int(now * 1000):013d}-{uuid.uuid4().hex[:12]}"
            files_dir = None
            if attachments:
                files_dir = self.directory / f"{entry_id}.files"
                tmp = self.directory / f"{entry_id}.files.tmp"
                for name, src in attachments.items():
                    _copy_tree_or_file(Path(src), tmp / name)
                tmp.rename(files_dir)
            entry = SpoolEntry(
                entry_id, kind, payload, created_at=now, next_attempt_at=now, files_dir=files_dir
            )
            self._write(entry)
            logger.info("spooled", extra={"spool_id": entry_id, "kind": kind})
            return entry

    def pending(self) -> list[SpoolEntry]:
        with self._lock:
            return [self._load(p) for p in sorted(self.directory.glob("*.json"))]

    def dead(self) -> list[SpoolEntry]:
        with self._lock:
            return [self._load(p) for p in sorted(self.dead_directory.glob("*.json"))]

    def due(self, now: float | None = None) -> list[SpoolEntry]:
        now = self._clock() if now is None else now
        return [e for e in self.pending() if e.next_attempt_at <= now]

    def backoff_s(self, attempts: int) -> float:
        return min(self.retry_max_s, self.retry_initial_s * 2 ** max(0, attempts - 1))

    def complete(self, entry: SpoolEntry) -> None:
        with self._lock:
            (self.directory / f"{entry.id}.json").unlink(missing_ok=True)
            _fsync_dir(self.directory)
            files = self.directory / f"{entry.id}.files"
            if files.exists():
                shutil.rmtree(files)

    def retry_later(self, entry: SpoolEntry, error: str, payload: dict[str, Any] | None = None) -> SpoolEntry:
        with self._lock:
            entry.attempts += 1
            entry.last_error = error[:2000]
            entry.next_attempt_at = self._clock() + self.backoff_s(entry.attempts)
            if payload is not None:
                entry.payload = payload
            self._write(entry)
            logger.warning(
                "spooled item will be retried",
                extra={
                    "spool_id": entry.id,
                    "kind": entry.kind,
                    "attempts": entry.attempts,
                    "retry_in_s": round(entry.next_attempt_at - self._clock(), 1),
                    "error": entry.last_error,
                },
            )
            return entry

    def dead_letter(self, entry: SpoolEntry, error: str) -> None:
        with self._lock:
            entry.last_error = error[:2000]
            entry.attempts += 1
            source = self.directory / f"{entry.id}.json"
            (self.dead_directory / f"{entry.id}.json").write_text(json.dumps(entry.to_json(), sort_keys=True))
            files = self.directory / f"{entry.id}.files"
            if files.exists():
                files.rename(self.dead_directory / files.name)
            source.unlink(missing_ok=True)
            _fsync_dir(self.directory)
            logger.error(
                "spooled item given up",
                extra={"spool_id": entry.id, "kind": entry.kind, "error": entry.last_error},
            )

    def drain(
        self, handlers: Mapping[str, Callable[[SpoolEntry], None]], now: float | None = None
    ) -> DrainResult:
        """Run the handler of every due entry, oldest first.

        A handler that returns has finished the entry (it may have called
        ``retry_later`` itself for partial progress; then the entry stays).
        ``PermanentFailure`` dead-letters it; any other exception schedules a retry.
        """
        result = DrainResult()
        for entry in self.due(now):
            handler = handlers.get(entry.kind)
            if handler is None:
                continue
            attempts_before = entry.attempts
            try:
                handler(entry)
            except PermanentFailure as exc:
                self.dead_letter(entry, f"{type(exc).__name__}: {exc}")
                result.dead.append(entry.id)
                continue
            except Exception as exc:
                self.retry_later(entry, f"{type(exc).__name__}: {exc}")
                result.retrying.append(entry.id)
                continue
            if entry.attempts > attempts_before:
                result.retrying.append(entry.id)
            else:
                self.complete(entry)
                result.done.append(entry.id)
        return result

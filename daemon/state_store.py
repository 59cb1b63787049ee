"""The daemon's durable state: one SQLite file in the state dir.

Everything the daemon must not forget across a crash lives here: the next
offset per partition (written in the same transaction as the window state it
covers, which is what makes replay after a crash exact), detector window
state, policy state machines, and an append-only journal of decisions and
events. Offsets are committed to Kafka only after ``transaction()`` returns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS partition_offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS blobs (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_kind_model ON journal (kind, model, id);
"""


class StateStore:
    """SQLite-backed state. Thread-safe: one connection guarded by a lock.

    Writes made inside ``transaction()`` become durable together; writes made
    outside one are committed immediately.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a crash right after commit must not lose the transaction that
        # justified an offset commit
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[StateStore]:
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._conn.execute("COMMIT")

    def _exec(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    # offsets -------------------------------------------------------------
    def set_next_offset(self, topic: str, partition: int, next_offset: int) -> None:
        self._exec(
            "INSERT INTO partition_offsets VALUES (?, ?, ?) "
            "ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            (topic, partition, next_offset),
        )

    def next_offset(self, topic: str, partition: int) -> int | None:
        row = self._exec(
            "SELECT next_offset FROM partition_offsets WHERE topic = ? AND partition = ?", (topic, partition)
        ).fetchone()
        return None if row is None else int(row[0])

    def all_offsets(self) -> dict[tuple[str, int], int]:
        rows = self._exec("SELECT topic, partition, next_offset FROM partition_offsets").fetchall()
        return {(t, p): o for t, p, o in rows}

    # JSON key-value ------------------------------------------------------
    def put_json(self, namespace: str, key: str, value: Any) -> None:
        self._exec(
            "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT(namespace, key) DO UPDATE SET "
            "value = excluded.value, updated_at = excluded.updated_at",
            (namespace, key, json.dumps(value, default=str), time.time()),
        )

    def get_json(self, namespace: str, key: str, default: Any = None) -> Any:
        row = self._exec("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
        return default if row is None else json.loads(row[0])

    def items_json(self, namespace: str) -> dict[str, Any]:
        rows = self._exec(
            "SELECT key, value FROM kv WHERE namespace = ? ORDER BY key", (namespace,)
        ).fetchall()
        return {k: json.loads(v) for k, v in rows}

    def delete_json(self, namespace: str, key: str) -> None:
        self._exec("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    # binary blobs (serialised detector states) ---------------------------
    def put_blob(self, namespace: str, key: str, value: bytes) -> None:
        self._exec(
            "INSERT INTO blobs VALUES (?, ?, ?, ?) ON CONFLICT(namespace, key) DO UPDATE SET "
            "value = excluded.value, updated_at = excluded.updated_at",
            (namespace, key, value, time.time()),
        )

    def get_blob(self, namespace: str, key: str) -> bytes | None:
        row = self._exec(
            "SELECT value FROM blobs WHERE namespace = ? AND key = ?", (namespace, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def keys_blob(self, namespace: str) -> list[str]:
        rows = self._exec("SELECT key FROM blobs WHERE namespace = ? ORDER BY key", (namespace,)).fetchall()
        return [r[0] for r in rows]

    def delete_blob(self, namespace: str, key: str) -> None:
        self._exec("DELETE FROM blobs WHERE namespace = ? AND key = ?", (namespace, key))

    # append-only journal -------------------------------------------------
    def append_journal(self, kind: str, payload: dict[str, Any], model: str | None = None) -> int:
        cur = self._exec(
            "INSERT INTO journal (ts, kind, model, payload) VALUES (?, ?, ?, ?)",
            (time.time(), kind, model, json.dumps(payload, default=str)),
        )
        return int(cur.lastrowid)

    def journal(
        self, kind: str | None = None, model: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[dict[str, Any]]:
        sql = "SELECT id, ts, kind, model, payload FROM journal WHERE id > ?"
        params: list[Any] = [after_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = self._exec(sql, tuple(params)).fetchall()
        return [
            {"id": i, "ts": ts, "kind": k, "model": m, "payload": json.loads(p)}
            for i, ts, k, m, p in reversed(rows)
        ]

"""Windows of records per (model, model_version).

A window closes when it holds ``window_records`` records (a batch that would
overflow it is split so every window has exactly that many), or, if
``window_s`` is set, that long after its first record provided it holds
``min_window_records``. Each open window carries the detectors' accumulated
state; its bookkeeping (counts, event-time span, offset ranges per partition)
is what a decision record later cites.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, Protocol

import numpy as np

from distilld.daemon.config import WindowsConfig
from distilld.daemon.state_store import StateStore
from distilld.detectors.record_batch import RecordBatch

META_NS = "windows"
STATE_NS = "window_state"


class WindowState(Protocol):
    """What the detector suite keeps per window (see distilld.detectors.suite)."""

    def update(self, batch: RecordBatch) -> None: ...

    def to_bytes(self) -> bytes: ...


@dataclass
class WindowMeta:
    model: str
    version: str
    window_id: int
    n_classes: int
    n_records: int = 0
    first_event_ts: float | None = None
    last_event_ts: float | None = None
    opened_at: float = 0.0
    total_records: int = 0
    offsets: dict[str, list[int]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.model}\x1f{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClosedWindow:
    meta: WindowMeta
    state: WindowState | None
    closed_by: str

    def summary(self) -> dict[str, Any]:
        d = self.meta.to_dict()
        d["closed_by"] = self.closed_by
        return d


_partition_of = itemgetter(0, 1)

StateFactory = Callable[[str, str, int], WindowState]
StateLoader = Callable[[str, str, int, bytes], WindowState]


class WindowManager:
    def __init__(
        self,
        config: WindowsConfig,
        store: StateStore,
        new_state: StateFactory | None = None,
        load_state: StateLoader | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.store = store
        self.new_state = new_state
        self.load_state = load_state
        self.clock = clock
        self._open: dict[str, WindowMeta] = {}
        self._states: dict[str, WindowState] = {}
        self._dirty: set[str] = set()
        self._restore()

    def _restore(self) -> None:
        for key, raw in self.store.items_json(META_NS).items():
            meta = WindowMeta(**raw)
            self._open[key] = meta
            if self.load_state is not None:
                blob = self.store.get_blob(STATE_NS, key)
                if blob is not None:
                    self._states[key] = self.load_state(meta.model, meta.version, meta.n_classes, blob)
                elif self.new_state is not None:
                    self._states[key] = self.new_state(meta.model, meta.version, meta.n_classes)

    def n_classes(self, model: str, version: str) -> int | None:
        meta = self._open.get(f"{model}\x1f{version}")
        return meta.n_classes if meta else None

    def open_windows(self) -> list[WindowMeta]:
        return list(self._open.values())

    def _open_new(self, model: str, version: str, n_classes: int, prev: WindowMeta | None) -> WindowMeta:
        meta = WindowMeta(
            model=model,
            version=version,
            window_id=(prev.window_id + 1) if prev else 1,
            n_classes=n_classes,
            opened_at=self.clock(),
            total_records=prev.total_records if prev else 0,
        )
        self._open[meta.key] = meta
        if self.new_state is not None:
            self._states[meta.key] = self.new_state(model, version, n_classes)
        self._dirty.add(meta.key)
        return meta

    def add(
        self, model: str, version: str, batch: RecordBatch, sources: list[tuple[str, int, int]]
    ) -> list[ClosedWindow]:
        """Fold records (in offset order) into the open window, closing full ones.

        ``sources`` holds (topic, partition, offset) per record of ``batch``.
        """
        closed: list[ClosedWindow] = []
        key = f"{model}\x1f{version}"
        start = 0
        n = len(batch)
        while start < n:
            meta = self._open.get(key) or self._open_new(model, version, batch.n_classes, None)
            if meta.n_classes != batch.n_classes:
                raise ValueError(
                    f"batch has {batch.n_classes} classes, window of {model}/{version} has {meta.n_classes}"
                )
            take = min(n - start, self.config.window_records - meta.n_records)
            part = batch if (start == 0 and take == n) else batch.select(np.arange(start, start + take))
            self._fold(meta, part, sources[start : start + take])
            start += take
            if meta.n_records >= self.config.window_records:
                closed.append(self._close(meta, "records"))
        return closed

    def _fold(self, meta: WindowMeta, part: RecordBatch, sources: list[tuple[str, int, int]]) -> None:
        state = self._states.get(meta.key)
        if state is not None:
            state.update(part)
        meta.n_records += len(part)
        meta.total_records += len(part)
        lo, hi = float(part.ts.min()), float(part.ts.max())
        meta.first_event_ts = lo if meta.first_event_ts is None else min(meta.first_event_ts, lo)
        meta.last_event_ts = hi if meta.last_event_ts is None else max(meta.last_event_ts, hi)
        # records arrive as runs of one partition in offset order: look only at each run's ends
        for (topic, partition), run in groupby(sources, key=_partition_of):
            items = list(run)
            first, last = items[0][2], items[-1][2]
            span = meta.offsets.setdefault(f"{topic}:{partition}", [first, last])
            span[0] = min(span[0], first, last)
            span[1] = max(span[1], first, last)
        self._dirty.add(meta.key)

    def _close(self, meta: WindowMeta, reason: str) -> ClosedWindow:
        closed = ClosedWindow(meta=meta, state=self._states.pop(meta.key, None), closed_by=reason)
        self._open.pop(meta.key)
        self._open_new(meta.model, meta.version, meta.n_classes, meta)
        return closed

    def close_due(self) -> list[ClosedWindow]:
        """Close windows whose time is up (time-based windows)."""
        if self.config.window_s is None:
            return []
        now = self.clock()
        due = [
            m
            for m in self._open.values()
            if m.n_records >= self.config.min_window_records and now - m.opened_at >= self.config.window_s
        ]
        return [self._close(m, "time") for m in due]

    def persist(self) -> None:
        """Write changed windows to the store; call inside the store's transaction."""
        for key in self._dirty:
            meta = self._open.get(key)
            if meta is None:
                continue
            self.store.put_json(META_NS, key, meta.to_dict())
            state = self._states.get(key)
            if state is not None:
                self.store.put_blob(STATE_NS, key, state.to_bytes())
        self._dirty.clear()

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "model": m.model,
                "version": m.version,
                "window_id": m.window_id,
                "n_records": m.n_records,
                "window_records": self.config.window_records,
                "total_records": m.total_records,
                "open_for_s": round(self.clock() - m.opened_at, 1),
            }
            for m in self._open.values()
        ]

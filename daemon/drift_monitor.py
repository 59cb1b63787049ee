"""Detectors in the loop: references per (model, version), scores per closed window, rules on top.

The first ``detectors.reference_records`` records of a model version build
its reference (so after a promotion, when serving switches to the new
version, detectors re-baseline by themselves). Every record also goes to the
windows; a window that closes before its reference exists is counted but not
scored. Scores go to the journal (the
drift-over-time picture reads them) and to the policy engine, whose
decisions carry the scores and evidence.
"""

from __future__ import annotations

import logging
from typing import Any

from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.state_store import StateStore
from distilld.daemon.windows import ClosedWindow, WindowManager
from distilld.detectors.config import DetectorsConfig
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.reference import Reference, ReferenceBuilder
from distilld.detectors.suite import DetectorSuite, WindowState

log = logging.getLogger(__name__)

REFERENCE_NS = "reference"
# a builder is stored in parts: finished sub-windows once each, the open one
# every batch; rewriting all of them per batch cost more than the detectors
BUILDER_META_NS = "reference_builder"
BUILDER_PART_NS = "reference_builder_part"
BUILDER_OPEN_NS = "reference_builder_open"
SCORED_KIND = "window_scored"


def _key(model: str, version: str) -> str:
    return f"{model}\x1f{version}"


class DriftMonitor:
    def __init__(self, config: DetectorsConfig, store: StateStore, policy: PolicyEngine | None):
        self.config = config
        self.store = store
        self.policy = policy
        self._suites: dict[int, DetectorSuite] = {}
        self._references: dict[str, Reference] = {}
        self._builders: dict[str, ReferenceBuilder] = {}
        # the latest scored window per version, for the drift report a retrain attaches
        self._last_closed: dict[str, WindowState] = {}

    def suite(self, n_classes: int) -> DetectorSuite:
        if n_classes not in self._suites:
            self._suites[n_classes] = DetectorSuite(self.config, n_classes)
        return self._suites[n_classes]

    # window state factories for WindowManager ----------------------------
    def new_window(self, model: str, version: str, n_classes: int) -> WindowState:
        return self.suite(n_classes).new_window()

    def load_window(self, model: str, version: str, n_classes: int, blob: bytes) -> WindowState:
        return self.suite(n_classes).load_window(blob)

    def window_manager(self, windows_config, clock=None) -> WindowManager:
        kwargs = {} if clock is None else {"clock": clock}
        return WindowManager(
            windows_config, self.store, new_state=self.new_window, load_state=self.load_window, **kwargs
        )

    # references -------------------------------------------------------------
    def reference(self, model: str, version: str, n_classes: int) -> Reference | None:
        key = _key(model, version)
        if key not in self._references:
            blob = self.store.get_blob(REFERENCE_NS, key)
            if blob is None:
                return None
            self._references[key] = Reference.from_bytes(blob, self.suite(n_classes))
        return self._references[key]

    def _builder(self, model: str, version: str, n_classes: int) -> ReferenceBuilder:
        key = _key(model, version)
        if key not in self._builders:
            suite = self.suite(n_classes)
            builder = ReferenceBuilder(suite)
            meta = self.store.get_json(BUILDER_META_NS, key)
            if meta is not None:
                builder.source = meta["source"]
                builder.started_at = meta["started_at"]
                builder.first_ts, builder.last_ts = meta["first_ts"], meta["last_ts"]
                builder.subwindows = [
                    suite.load_window(self.store.get_blob(BUILDER_PART_NS, f"{key}\x1f{i}"))
                    for i in range(meta["subwindows"])
                ]
                open_blob = self.store.get_blob(BUILDER_OPEN_NS, key)
                if open_blob is not None:
                    builder.open = suite.load_window(open_blob)
            self._builders[key] = builder
        return self._builders[key]

    def _save_builder(self, key: str, builder: ReferenceBuilder, parts_before: int) -> None:
        for i in range(parts_before, len(builder.subwindows)):
            self.store.put_blob(BUILDER_PART_NS, f"{key}\x1f{i}", builder.subwindows[i].to_bytes())
        self.store.put_blob(BUILDER_OPEN_NS, key, builder.open.to_bytes())
        self.store.put_json(
            BUILDER_META_NS,
            key,
            {
                "source": builder.source,
                "started_at": builder.started_at,
                "first_ts": builder.first_ts,
                "last_ts": builder.last_ts,
                "subwindows": len(builder.subwindows),
            },
        )

    def _drop_builder(self, key: str, builder: ReferenceBuilder) -> None:
        for i in range(len(builder.subwindows)):
            self.store.delete_blob(BUILDER_PART_NS, f"{key}\x1f{i}")
        self.store.delete_blob(BUILDER_OPEN_NS, key)
        self.store.delete_json(BUILDER_META_NS, key)

    def feed_reference(self, model: str, version: str, batch: RecordBatch) -> None:
        """Feed a version's first records to its reference until it is built.

        Runs inside the ingest transaction, so the builder is persisted with the offsets it covers.
        """
        if self.reference(model, version, batch.n_classes) is not None:
            return
        key = _key(model, version)
        builder = self._builder(model, version, batch.n_classes)
        parts_before = len(builder.subwindows)
        builder.update(batch)
        if builder.complete:
            reference = builder.build()
            self._references[key] = reference
            self.store.put_blob(REFERENCE_NS, key, reference.to_bytes())
            self._drop_builder(key, builder)
            self._builders.pop(key, None)
            self.store.append_journal(
                "reference_built", {"model": model, "version": version, **reference.built}, model=model
            )
            log.info(
                "reference built", extra={"model": model, "version": version, "records": reference.n_records}
            )
        else:
            self._save_builder(key, builder, parts_before)

    # closed windows -----------------------------------------------------------
    def on_windows_closed(self, closed: list[ClosedWindow]) -> None:
        for w in closed:
            meta = w.meta
            reference = self.reference(meta.model, meta.version, meta.n_classes)
            if reference is None or w.state is None:
                continue
            self._last_closed[_key(meta.model, meta.version)] = w.state
            scores = self.suite(meta.n_classes).score(reference, w.state)
            window = {
                "id": meta.window_id,
                "n_records": meta.n_records,
                "start_ts": meta.first_event_ts,
                "end_ts": meta.last_event_ts,
                "offsets": meta.offsets,
            }
            self.store.append_journal(
                SCORED_KIND,
                {
                    "model": meta.model,
                    "version": meta.version,
                    "window": window,
                    "scores": {
                        k: {"value": s.value, "threshold": s.threshold, "breached": s.breached}
                        for k, s in scores.items()
                    },
                },
                model=meta.model,
            )
            breached = sorted(k for k, s in scores.items() if s.breached)
            log.info(
                "window scored",
                extra={
                    "model": meta.model,
                    "version": meta.version,
                    "window_id": meta.window_id,
                    "breached": breached,
                },
            )
            if self.policy is not None:
                self.policy.on_window_closed(meta.model, meta.version, window, scores)

    def last_closed_with_reference(
        self, model: str, version: str | None
    ) -> tuple[WindowState, WindowState] | None:
        """(reference window, latest scored window) of a version, if this process has scored one."""
        if version is None:
            return None
        current = self._last_closed.get(_key(model, version))
        reference = self._references.get(_key(model, version))
        if current is None or reference is None:
            return None
        return reference.window, current

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, ref in self._references.items():
            out[key.replace("\x1f", "/")] = {"state": "ready", **ref.built}
        for key, b in self._builders.items():
            out[key.replace("\x1f", "/")] = {
                "state": "building",
                "records": b.n_records,
                "needed": self.config.reference_records,
            }
        return out

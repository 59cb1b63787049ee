"""The daemon process: wires the state store, windows, consumer loop and HTTP endpoint together."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from distilld.daemon.config import DistilldConfig
from distilld.daemon.drift_monitor import DriftMonitor
from distilld.daemon.http_server import DaemonHttpServer
from distilld.daemon.ingest import IngestLoop
from distilld.daemon.metrics import DaemonMetrics
from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.scheduler import PolicyScheduler
from distilld.daemon.state_store import StateStore
from distilld.daemon.windows import ClosedWindow
from distilld.detectors.record_batch import RecordBatch

from distilld import __version__

log = logging.getLogger(__name__)

STATE_DB = "state.sqlite"


class Daemon:
    def __init__(self, config: DistilldConfig):
        self.config = config
        self.stop_event = threading.Event()
        state_dir = config.state.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = StateStore(state_dir / STATE_DB)
        self.metrics = DaemonMetrics()
        self.policy = PolicyEngine(config.policy, self.store)
        self.monitor = DriftMonitor(config.detectors, self.store, self.policy)
        self.windows = self.monitor.window_manager(config.windows)
        self.ingest = IngestLoop(
            config,
            self.store,
            self.windows,
            self.metrics,
            on_records=self._on_records,
            on_windows_closed=self._on_windows_closed,
        )
        # time-based windows close on the consumer thread (it owns the
        # windows); the scheduler re-checks waiting retrains and runs cron jobs
        self.scheduler = PolicyScheduler(self.policy)
        self.http = DaemonHttpServer(
            config.http.host,
            config.http.port,
            self.metrics,
            status=self.status,
            healthy=self._healthy,
            ready=lambda: self.ingest.ready,
            control_token_env=config.http.control_token_env,
        )
        self._started_at = time.time()
        self._last_loop = time.monotonic()
        self._last_status = (time.monotonic(), 0)

    def _on_records(
        self, model: str, version: str, batch: RecordBatch, sources: list[tuple[str, int, int]]
    ) -> None:
        self.monitor.feed_reference(model, version, batch)

    def _on_windows_closed(self, closed: list[ClosedWindow]) -> None:
        for w in closed:
            self.store.append_journal("window_closed", w.summary(), model=w.meta.model)
            log.info(
                "window closed",
                extra={
                    "model": w.meta.model,
                    "version": w.meta.version,
                    "window_id": w.meta.window_id,
                    "records": w.meta.n_records,
                    "closed_by": w.closed_by,
                },
            )
        self.monitor.on_windows_closed(closed)

    def _healthy(self) -> bool:
        # the loop polls at least every poll_timeout_ms; a minute of silence means it is stuck
        return time.monotonic() - self._last_loop < 60

    def _on_idle(self) -> None:
        now = time.monotonic()
        self._last_loop = now
        last_t, last_n = self._last_status
        if now - last_t >= self.config.logging.status_interval_s:
            consumed = self.ingest.stats.consumed
            log.info(
                "status",
                extra={
                    "records_per_s": round((consumed - last_n) / (now - last_t), 1),
                    "consumed": consumed,
                    "valid": self.ingest.stats.valid,
                    "dead_lettered": self.ingest.stats.dead_lettered,
                    "lag": sum(self.ingest.lag.values()),
                    "ready": self.ingest.ready,
                    "windows": {f"{w.model}/{w.version}": w.n_records for w in self.windows.open_windows()},
                },
            )
            self._last_status = (now, consumed)

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self._started_at, 1),
            "consumer": self.ingest.status(),
            "windows": self.windows.status(),
            "references": self.monitor.status(),
            "policy": self.policy.status(),
            "scheduler": self.scheduler.jobs(),
            "recent_windows": [
                {"id": e["id"], "ts": e["ts"], **e["payload"]}
                for e in self.store.journal("window_closed", limit=10)
            ],
        }

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame):
            log.info("shutdown requested", extra={"signal": signal.Signals(signum).name})
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self) -> None:
        self.http.start()
        log.info(
            "distilld started",
            extra={
                "version": __version__,
                "http": self.http.url,
                "topics": self.config.kafka.topics,
                "group_id": self.config.kafka.group_id,
                "state_dir": str(self.config.state.state_dir),
            },
        )
        try:
            self.scheduler.start()
            self.ingest.connect()
            self.ingest.run(self.stop_event, on_idle=self._on_idle)
        finally:
            self.scheduler.shutdown(wait=False)
            self.ingest.close()
            self.http.stop()
            self.store.close()
            log.info("distilld stopped", extra={"consumed": self.ingest.stats.consumed})

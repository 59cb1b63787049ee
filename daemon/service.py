"""The daemon process: wires state, windows, detectors, policy, training and promotion together.

Threads: the consumer loop (owns windows and detectors; starts and collects
training jobs from its idle hook), APScheduler's worker (maintenance windows,
cron re-distillation, housekeeping), and the HTTP server. All durable state
goes through the one ``StateStore``, whose lock serialises them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from distilld import __version__
from distilld.daemon.config import DistilldConfig
from distilld.daemon.drift_monitor import DriftMonitor
from distilld.daemon.http_server import ControlError, DaemonHttpServer
from distilld.daemon.ingest import IngestLoop
from distilld.daemon.job_runner import JobRunner
from distilld.daemon.metrics import DaemonMetrics
from distilld.daemon.notifications import rule_tripped
from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.promotion import Promotion
from distilld.daemon.retrain_coordinator import RetrainCoordinator
from distilld.daemon.scheduler import PolicyScheduler
from distilld.daemon.state_store import StateStore
from distilld.daemon.training_buffer import TrainingBuffer
from distilld.daemon.training_buffer_writer import TrainingBufferWriter
from distilld.daemon.windows import ClosedWindow
from distilld.detectors.record_batch import RecordBatch

log = logging.getLogger(__name__)

STATE_DB = "state.sqlite"
BUFFER_DB = "training_buffer.sqlite"


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
        self.buffer = TrainingBuffer(state_dir / BUFFER_DB, config.trainer.buffer_records)
        self.buffer_writer = TrainingBufferWriter(self.buffer)
        kafka = config.kafka.client_kwargs()
        self.promotion = Promotion.from_config(
            config.registry,
            config.signal,
            config.notifications,
            state_dir,
            bootstrap_servers=kafka.pop("bootstrap_servers"),
            producer_config=kafka,
        )
        self.runner = JobRunner(state_dir / "jobs", config.trainer)
        self.retrains = RetrainCoordinator(
            config, self.store, self.policy, self.monitor, self.buffer, self.runner, self.promotion
        )
        self.policy.subscribe(self._count_decision)
        self.policy.subscribe(self._notify_trip, kinds=["rule_tripped"])
        self.ingest = IngestLoop(
            config,
            self.store,
            self.windows,
            self.metrics,
            on_records=self._on_records,
            on_windows_closed=self._on_windows_closed,
            before_persist=self.buffer_writer.flush,
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
            controls={
                "retrain": self._control_retrain,
                "pause": self._control_pause,
                "resume": self._control_resume,
            },
            control_token_env=config.http.control_token_env,
        )
        self._started_at = time.time()
        self._last_loop = time.monotonic()
        self._last_status = (time.monotonic(), 0)

    # the consumer thread's hooks --------------------------------------------
    def _on_records(
        self, model: str, version: str, batch: RecordBatch, sources: list[tuple[str, int, int]]
    ) -> None:
        # the writer's SQLite work overlaps the detectors' below
        self.buffer_writer.submit(model, batch, sources, version)
        self.monitor.feed_reference(model, version, batch)

    def _on_windows_closed(self, closed: list[ClosedWindow]) -> None:
        for w in closed:
            self.store.append_journal("window_closed", w.summary(), model=w.meta.model)
        self.monitor.on_windows_closed(closed)

    def _on_idle(self) -> None:
        now = time.monotonic()
        self._last_loop = now
        self.retrains.pump()
        last_t, last_n = self._last_status
        if now - last_t >= self.config.logging.status_interval_s:
            jobs = self.runner.running()
            self.metrics.training_jobs_running.set(len(jobs))
            self.metrics.spooled_registrations.set(len(self.promotion.spool.pending()))
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
                    "training_jobs": [j.job_id for j in jobs],
                },
            )
            self._last_status = (now, consumed)

    # policy listeners --------------------------------------------------------
    def _count_decision(self, record) -> None:
        # the policy engine logs each decision itself
        self.metrics.decisions.labels(str(record.kind), record.model or "").inc()

    def _notify_trip(self, record) -> None:
        if self.promotion.notifier is None:
            return
        evidence = {w["id"]: w.get("score", {}).get("evidence") for w in record.windows[-1:]}
        self.promotion.notifier.notify(rule_tripped(record.model, record.rule, str(record.id), evidence))

    # operator controls ------------------------------------------------------
    def _control_retrain(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if not model:
            raise ValueError("'model' is required")
        records = self.policy.request_manual(
            model, str(body.get("reason") or "manual"), bool(body.get("force"))
        )
        if not records:
            raise ControlError(f"no decision was made for {model!r}")
        return {"decisions": [r.to_dict() for r in records]}

    def _control_pause(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"decisions": [r.to_dict() for r in self.policy.pause(str(body.get("reason") or "operator"))]}

    def _control_resume(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"decisions": [r.to_dict() for r in self.policy.resume()]}

    # status and health ------------------------------------------------------
    def _healthy(self) -> bool:
        # the loop polls at least every poll_timeout_ms; a minute of silence means it is stuck
        return time.monotonic() - self._last_loop < 60

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self._started_at, 1),
            "consumer": self.ingest.status(),
            "windows": self.windows.status(),
            "references": self.monitor.status(),
            "policy": self.policy.status(),
            "retrains": self.retrains.status(),
            "scheduler": self.scheduler.jobs(),
        }

    # lifecycle --------------------------------------------------------------
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
                "dry_run": self.config.policy.limits.dry_run,
            },
        )
        try:
            self.scheduler.start()
            self.ingest.connect()
            self.ingest.run(self.stop_event, on_idle=self._on_idle)
        finally:
            self.close()

    def close(self) -> None:
        self.scheduler.shutdown(wait=False)
        self.ingest.close()
        # nothing of ours outlives the daemon: a running job is cancelled and
        # reported; its retrain request is retried by the policy after restart
        self.runner.close()
        self.promotion.close()
        self.buffer_writer.close()
        self.buffer.close()
        self.http.stop()
        self.store.close()
        log.info("distilld stopped", extra={"consumed": self.ingest.stats.consumed})

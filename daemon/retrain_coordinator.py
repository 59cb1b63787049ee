"""From a retrain request to a registered candidate: snapshot, base model, job, promotion.

The policy engine decides *that* a model should be re-distilled; this module
does it, off the consumer's hot path. Requests are queued by the policy
listener and started from the loop's idle hook: the training buffer is
snapshotted (plus a replay sample of the champion's own training data or the
operator's golden set), the champion is downloaded and checked against its
recorded sha256, an Evidently drift report of the triggering window is
built, and the job runs in a subprocess. When the job ends its candidate goes
to ``Promotion`` (register → gate → promote → signal → notify); the policy
hears the outcome, which starts the cooldown.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from distilld.daemon.config import DistilldConfig
from distilld.daemon.decision_record import DecisionRecord
from distilld.daemon.drift_monitor import DriftMonitor
from distilld.daemon.job_runner import JobRunner, JobStatus
from distilld.daemon.notifications import retrain_failed, retrain_started
from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.promotion import Promotion
from distilld.daemon.state_store import StateStore
from distilld.daemon.training_buffer import TrainingBuffer
from distilld.registry.model_registry import HF_MODEL_DIR

log = logging.getLogger(__name__)

JOBS_NS = "retrain_jobs"
CHAMPION_SNAPSHOT_NS = "champion_snapshot"
RETRY_PENDING_PERIOD_S = 30.0
OUTCOME_FOR_POLICY = {
    "promoted": "promoted",
    "kept": "challenger",
    "awaiting_approval": "challenger",
    "spooled": "challenger",
    "rejected": "failed",
}


class RetrainCoordinator:
    def __init__(
        self,
        config: DistilldConfig,
        store: StateStore,
        policy: PolicyEngine,
        monitor: DriftMonitor,
        buffer: TrainingBuffer,
        runner: JobRunner,
        promotion: Promotion,
    ):
        self.config = config
        self.store = store
        self.policy = policy
        self.monitor = monitor
        self.buffer = buffer
        self.runner = runner
        self.promotion = promotion
        self.state_dir = config.state.state_dir
        self._queue: deque[DecisionRecord] = deque()
        self._lock = threading.Lock()
        self._last_retry = 0.0
        policy.on_retrain_requested(self._enqueue)
        self._collect_orphans()

    def _collect_orphans(self) -> None:
        """Jobs that ended while no daemon watched (finished, cancelled at shutdown, or lost in a crash)."""
        for job_id in self.store.items_json(JOBS_NS):
            try:
                status = self.runner.status(job_id)
            except KeyError:
                status = None
            if status is None:
                ctx = self.store.get_json(JOBS_NS, job_id)
                self.policy.on_retrain_finished(
                    ctx["model"], "failed", {"job_id": job_id, "error": "job folder lost"}
                )
                self.store.delete_json(JOBS_NS, job_id)
            elif status.finished:
                self._finish(status)

    def _enqueue(self, record: DecisionRecord) -> None:
        # called inside the policy's transaction, possibly on the scheduler
        # thread: starting a job (snapshot, download) waits for pump()
        self._queue.append(record)

    def pump(self) -> None:
        """Start queued retrains, collect finished jobs, retry spooled registrations."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            while self._queue:
                self._start(self._queue.popleft())
            for status in self.runner.poll():
                self._finish(status)
            now = time.monotonic()
            if now - self._last_retry >= RETRY_PENDING_PERIOD_S:
                self._last_retry = now
                for outcome in self.promotion.retry_pending():
                    log.info(
                        "spooled candidate retried", extra={"model": outcome.model, "status": outcome.status}
                    )
        finally:
            self._lock.release()

    def _replay_source(self, model: str) -> Path | None:
        path = self.store.get_json(CHAMPION_SNAPSHOT_NS, model)
        if path and Path(path).exists():
            return Path(path)
        return self.config.trainer.golden_set_path

    def _start(self, record: DecisionRecord) -> None:
        model = record.model
        job_id = f"{re.sub(r'[^A-Za-z0-9._-]', '-', model)}-{time.strftime('%Y%m%dT%H%M%S')}-{record.id}"
        job_dir = self.state_dir / "jobs" / job_id
        self.policy.on_retrain_started(model, {"job_id": job_id, "decision_id": record.id})
        try:
            champion = self.promotion.registry.champion(model)
            base = self.promotion.registry.download_verified(
                model, champion.version, self.state_dir / "models" / model / f"v{champion.version}"
            )
            trainer = self.config.trainer
            snapshot = self.buffer.snapshot(
                model,
                job_dir / "snapshot",
                replay_source=self._replay_source(model),
                holdout_fraction=trainer.holdout_fraction,
                replay_records=trainer.replay_records,
            )
            n_train = snapshot.counts["train"]
            if n_train < trainer.min_train_records:
                raise RuntimeError(
                    f"only {n_train} training records buffered; trainer.min_train_records is "
                    f"{trainer.min_train_records}"
                )
            reports = self._drift_report(model, record.version, job_dir / "reports")
            spec = trainer.job_spec(
                job_id=job_id,
                model=model,
                base_student_path=base / HF_MODEL_DIR,
                snapshot_uri=str(snapshot.path),
                output_dir=job_dir / "run",
            )
            self.runner.submit(spec)
        except Exception as err:
            log.exception("retrain could not start", extra={"model": model, "job_id": job_id})
            self.policy.on_retrain_finished(model, "failed", {"stage": "start", "error": repr(err)})
            self._notify(retrain_failed(model, "start", f"{type(err).__name__}: {err}", subject=job_id))
            return
        self.store.put_json(
            JOBS_NS,
            job_id,
            {
                "model": model,
                "decision": record.to_dict(),
                "parent_version": champion.version,
                "snapshot": str(snapshot.path),
                "offsets": snapshot.meta.get("offsets"),
                "reports": [str(p) for p in reports],
            },
        )
        self._notify(retrain_started(model, record.rule or "manual", job_id, champion.version))
        log.info(
            "retrain started",
            extra={
                "model": model,
                "job_id": job_id,
                "base_version": champion.version,
                "train_records": n_train,
            },
        )

    def _drift_report(self, model: str, version: str | None, out_dir: Path) -> list[Path]:
        from distilld.detectors.evidently_report import build_evidently_report

        pair = self.monitor.last_closed_with_reference(model, version)
        if pair is None:
            return []
        reference, current = pair
        try:
            build_evidently_report(reference, current, out_dir)
        except Exception:
            # the report is evidence for humans; its failure must not block the retrain
            log.exception("drift report failed", extra={"model": model})
            return []
        return sorted(p for p in out_dir.iterdir() if p.suffix in (".html", ".json"))

    def _finish(self, status: JobStatus) -> None:
        ctx = self.store.get_json(JOBS_NS, status.job_id)
        if ctx is None:
            log.warning("finished job has no retrain context", extra={"job_id": status.job_id})
            return
        model = ctx["model"]
        if status.state != "succeeded" or status.candidate_dir is None:
            details = {"job_id": status.job_id, "reason": status.reason, "error": status.error}
            self.policy.on_retrain_finished(model, "failed", details)
            self._notify(
                retrain_failed(
                    model, "training", f"{status.reason}: {status.error or ''}", subject=status.job_id
                )
            )
        else:
            decision = ctx["decision"]
            lineage: dict[str, Any] = {
                "rule": decision.get("rule") or "manual",
                "decision_id": decision.get("id"),
                "parent_version": ctx["parent_version"],
                "offsets": ctx["offsets"],
                "job_id": status.job_id,
            }
            outcome = self.promotion.submit_candidate(
                model,
                status.candidate_dir,
                decision,
                lineage,
                reports=tuple(Path(p) for p in ctx["reports"] if Path(p).exists()),
            )
            if outcome.status == "promoted":
                self.store.put_json(CHAMPION_SNAPSHOT_NS, model, ctx["snapshot"])
            self.policy.on_retrain_finished(
                model,
                OUTCOME_FOR_POLICY.get(outcome.status, "failed"),
                {
                    "job_id": status.job_id,
                    "status": outcome.status,
                    "version": outcome.version,
                    "reason": outcome.reason,
                    "metrics": outcome.metrics,
                },
            )
        self.store.delete_json(JOBS_NS, status.job_id)

    def _notify(self, notification) -> None:
        if self.promotion.notifier is not None:
            self.promotion.notifier.notify(notification)

    def status(self) -> dict[str, Any]:
        return {
            "queued": [r.id for r in self._queue],
            "jobs": [s.model_dump(mode="json", exclude={"stderr_tail"}) for s in self.runner.running()],
            "pending_registrations": len(self.promotion.spool.pending()),
        }

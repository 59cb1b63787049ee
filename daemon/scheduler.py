"""The time side of the policy, driven by an APScheduler ``BackgroundScheduler``.

Jobs:

- ``policy.evaluate`` every ``evaluation_period_s``: the daemon's callback
  closes time-based windows (and calls ``PolicyEngine.on_window_closed`` for
  each), then waiting retrains are re-checked (``PolicyEngine.tick``);
- ``policy.maintenance.<i>`` when each maintenance window opens: re-check
  waiting retrains at once rather than at the next evaluation;
- ``policy.scheduled_redistill`` on ``scheduled_redistill_cron``: a retrain
  request for every known model, subject to the retrain limits;
- ``policy.housekeeping`` every ``housekeeping_period_s``: prune stale policy
  state, then the daemon's own housekeeping callback.

The jobs live in APScheduler's memory store and are rebuilt from the config
on every start; what they act on lives in our state store. So on start the
scheduler re-checks waiting retrains at once (a maintenance window may have
opened while the daemon was down) and, if a scheduled re-distillation fell
due while it was down, runs it once (the last run time is in the store).
Jobs run one at a time on one worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from distilld.daemon.decision_record import iso
from distilld.daemon.policy_config import PolicyConfig, parse_cron
from distilld.daemon.policy_engine import PolicyEngine

logger = logging.getLogger(__name__)

NS_SCHEDULE = "policy.schedule"
SCHEDULED_KEY = "scheduled_redistill"
TimedCallback = Callable[[float], None]


class PolicyScheduler:
    """Owns a ``BackgroundScheduler`` whose jobs drive ``engine`` (and the daemon's callbacks)."""

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        evaluate: TimedCallback | None = None,
        housekeeping: TimedCallback | None = None,
    ):
        """``evaluate(now)``: close due time-based windows and feed them to the engine.
        ``housekeeping(now)``: the daemon's own periodic cleanup. Both run on the scheduler's thread.
        """
        self.engine = engine
        self.config: PolicyConfig = engine.config
        self.store = engine.store
        self._evaluate_cb = evaluate
        self._housekeeping_cb = housekeeping
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._add_jobs()

    def _add_jobs(self) -> None:
        sched = self.config.schedule
        self.scheduler.add_job(
            self._run,
            IntervalTrigger(seconds=sched.evaluation_period_s, timezone=UTC),
            args=["evaluate", self._evaluate],
            id="policy.evaluate",
            name="close time windows, evaluate rules, re-check waiting retrains",
            misfire_grace_time=max(1, int(sched.evaluation_period_s)),
        )
        for i, window in enumerate(self.config.limits.maintenance_windows):
            self.scheduler.add_job(
                self._run,
                window.trigger(),
                args=["maintenance", self._maintenance_opened],
                id=f"policy.maintenance.{i}",
                name=f"maintenance window opens ({window.cron}, {window.timezone})",
                misfire_grace_time=max(1, int(window.duration_s)),
            )
        if sched.scheduled_redistill_cron:
            self.scheduler.add_job(
                self._run,
                parse_cron(sched.scheduled_redistill_cron, sched.timezone),
                args=["scheduled_redistill", self._scheduled_redistill],
                id="policy.scheduled_redistill",
                name=f"scheduled re-distillation ({sched.scheduled_redistill_cron}, {sched.timezone})",
                misfire_grace_time=3600,
            )
        self.scheduler.add_job(
            self._run,
            IntervalTrigger(seconds=sched.housekeeping_period_s, timezone=UTC),
            args=["housekeeping", self._housekeeping],
            id="policy.housekeeping",
            name="prune stale policy state",
            misfire_grace_time=max(1, int(sched.housekeeping_period_s)),
        )

    # ---- lifecycle ------------------------------------------------------
    def start(self) -> None:
        """Catch up on what fell due while the daemon was down, then start the jobs."""
        self._run("startup", self._catch_up)
        self.scheduler.start()
        logger.info("policy scheduler started", extra={"jobs": [j["id"] for j in self.jobs()]})

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    def jobs(self) -> list[dict[str, Any]]:
        """The jobs and when each runs next, for ``/status``."""
        out = []
        for job in self.scheduler.get_jobs():
            nxt = getattr(job, "next_run_time", None)
            out.append(
                {
                    "id": job.id,
                    "name": job.name,
                    "trigger": str(job.trigger),
                    "next_run": iso(nxt.timestamp()) if nxt else None,
                }
            )
        return out

    # ---- jobs -----------------------------------------------------------
    def _run(self, what: str, fn: Callable[[float], None]) -> None:
        now = self.engine.clock()
        try:
            fn(now)
        except Exception:
            # one failed run must not unschedule the job; the next period tries again
            logger.exception("policy scheduler job failed", extra={"job": what})

    def _evaluate(self, now: float) -> None:
        if self._evaluate_cb is not None:
            self._evaluate_cb(now)
        self.engine.tick(now)

    def _maintenance_opened(self, now: float) -> None:
        self.engine.tick(now)

    def _scheduled_redistill(self, now: float) -> None:
        cron = self.config.schedule.scheduled_redistill_cron
        if cron is None:
            return
        self.store.put_json(NS_SCHEDULE, SCHEDULED_KEY, {"last_run_ts": now, "cron": cron})
        self.engine.request_scheduled(cron, now)

    def _housekeeping(self, now: float) -> None:
        self.engine.housekeeping(now)
        if self._housekeeping_cb is not None:
            self._housekeeping_cb(now)

    def _catch_up(self, now: float) -> None:
        self.engine.tick(now)
        cron = self.config.schedule.scheduled_redistill_cron
        if cron is None:
            return
        last = self.store.get_json(NS_SCHEDULE, SCHEDULED_KEY)
        if last is None or last.get("cron") != cron:
            # first start with this schedule: count from now, do not fire at once
            self.store.put_json(NS_SCHEDULE, SCHEDULED_KEY, {"last_run_ts": now, "cron": cron})
            return
        trig = parse_cron(cron, self.config.schedule.timezone)
        due = trig.get_next_fire_time(None, datetime.fromtimestamp(last["last_run_ts"] + 1, UTC))
        if due is not None and due.timestamp() <= now:
            logger.info(
                "scheduled re-distillation fell due while the daemon was down; running it now",
                extra={"due": iso(due.timestamp()), "cron": cron},
            )
            self._scheduled_redistill(now)

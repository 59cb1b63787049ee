"""The APScheduler-driven jobs, with a real BackgroundScheduler on short periods."""

import threading
import time

from policy_helpers import Feeder, fixed_rule, kinds

from distilld.daemon.policy_config import PolicyConfig
from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.scheduler import NS_SCHEDULE, SCHEDULED_KEY, PolicyScheduler


def _config(**schedule) -> PolicyConfig:
    return PolicyConfig(
        rules=[fixed_rule()],
        limits={
            "min_new_buffer_records": 0,
            "maintenance_windows": [{"cron": "0 2 * * *", "duration_s": 600}],
        },
        schedule={"evaluation_period_s": 0.05, "housekeeping_period_s": 0.05, **schedule},
    )


def test_evaluate_and_housekeeping_run_on_their_periods(store):
    engine = PolicyEngine(_config(scheduled_redistill_cron="0 3 * * 0"), store)
    evaluated, housekept = threading.Event(), threading.Event()
    sched = PolicyScheduler(
        engine, evaluate=lambda now: evaluated.set(), housekeeping=lambda now: housekept.set()
    )
    sched.start()
    try:
        assert evaluated.wait(10) and housekept.wait(10)
        ids = {j["id"] for j in sched.jobs()}
        assert ids == {
            "policy.evaluate",
            "policy.maintenance.0",
            "policy.scheduled_redistill",
            "policy.housekeeping",
        }
        assert all(j["next_run"] for j in sched.jobs())
    finally:
        sched.shutdown()


def test_a_failing_callback_does_not_stop_the_job(store):
    engine = PolicyEngine(_config(), store)
    calls = []

    def flaky(now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("window store hiccup")

    sched = PolicyScheduler(engine, evaluate=flaky)
    sched.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 2
    finally:
        sched.shutdown()


def test_restart_runs_a_missed_scheduled_redistill_once(store, clock):
    config = PolicyConfig(
        rules=[fixed_rule()],
        limits={"min_new_buffer_records": 0},
        schedule={"scheduled_redistill_cron": "0 3 * * 0", "evaluation_period_s": 3600},
    )
    engine = PolicyEngine(config, store, clock=clock)
    Feeder(engine, clock).windows([0.01])
    # first start: remembers the schedule, does not fire
    first = PolicyScheduler(engine)
    first.start()
    first.shutdown()
    assert not [r for r in engine.decisions() if r.kind == "retrain_requested"]
    # the daemon was down over a Sunday 03:00
    clock.advance(8 * 86400)
    second = PolicyScheduler(engine)
    second.start()
    second.shutdown()
    requested = [r for r in engine.decisions() if r.kind == "retrain_requested"]
    assert len(requested) == 1 and requested[0].sources[0]["kind"] == "schedule"
    assert store.get_json(NS_SCHEDULE, SCHEDULED_KEY)["last_run_ts"] == clock.t


def test_restart_fires_a_request_whose_maintenance_window_opened_while_down(store, clock):
    config = PolicyConfig(
        rules=[fixed_rule()],
        limits={
            "min_new_buffer_records": 0,
            "maintenance_windows": [{"cron": "0 2 * * *", "duration_s": 3600}],
        },
        schedule={"evaluation_period_s": 3600},
    )
    engine = PolicyEngine(config, store, clock=clock)
    assert kinds(Feeder(engine, clock).windows([0.2, 0.2, 0.2]))[-1] == "retrain_waiting"
    clock.t += 2 * 3600  # 02:30: inside the window
    restarted = PolicyEngine(config, store, clock=clock)
    sched = PolicyScheduler(restarted)
    sched.start()
    sched.shutdown()
    assert restarted.decisions(limit=1)[0].kind == "retrain_requested"

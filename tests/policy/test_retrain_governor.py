"""Retrain limits and operator controls: cooldown, budgets, maintenance windows, pause, manual, dry-run."""

import json
from datetime import UTC, datetime

from policy_helpers import T0, Feeder, fixed_rule, kinds, make_config

from distilld.daemon.decision_record import DecisionRecord, format_decision
from distilld.daemon.policy_config import MaintenanceWindow

TRIP = [0.2, 0.2, 0.2]
CLEAR = [0.01, 0.01]


def _trip_and_finish(engine, feed, outcome="promoted"):
    out = feed.windows(TRIP)
    assert "retrain_requested" in kinds(out)
    engine.on_retrain_started(feed.model, {"job": "j1"})
    engine.on_retrain_finished(feed.model, outcome, {"run_id": "r1"})
    return out


def test_cooldown_blocks_a_second_retrain_and_status_shows_it(make_engine, clock):
    engine = make_engine(make_config(cooldown_s=4 * 3600))
    feed = Feeder(engine, clock)
    _trip_and_finish(engine, feed)
    feed.windows(CLEAR)  # re-arm
    second = feed.windows(TRIP)
    assert kinds(second)[-2:] == ["rule_tripped", "retrain_blocked"]
    assert "cooldown" in second[-1].reason
    pending = engine.status()["models"]["intent"]["pending"]
    assert [b["check"] for b in pending["waiting_for"]] == ["cooldown"]
    assert pending["waiting_for"][0]["until"] is not None
    # more breaching windows do not repeat the same block
    assert "retrain_blocked" not in kinds(feed.windows([0.2, 0.2]))
    clock.t = pending["waiting_for"][0]["until"]
    fired = engine.tick()
    assert kinds(fired) == ["retrain_requested"]
    assert fired[0].governor["waited_for"] == ["cooldown"]


def test_daily_budget_blocks_and_frees_after_24h(make_engine, clock):
    engine = make_engine(make_config(cooldown_s=0, max_retrains_per_day=1))
    a, b = Feeder(engine, clock, model="a"), Feeder(engine, clock, model="b")
    assert "retrain_requested" in kinds(a.windows(TRIP))
    engine.on_retrain_finished("a", "promoted")
    blocked = b.windows(TRIP)
    assert kinds(blocked)[-1] == "retrain_blocked"
    status = engine.status()
    assert status["budget"]["day"]["used"] == 1 and status["budget"]["day"]["max"] == 1
    waiting = status["models"]["b"]["pending"]["waiting_for"]
    assert [w["check"] for w in waiting] == ["budget_day"]
    assert engine.next_wakeup() == waiting[0]["until"]
    clock.t = waiting[0]["until"] - 1
    assert engine.tick() == []
    clock.t += 1
    assert kinds(engine.tick()) == ["retrain_requested"]


def test_weekly_budget_counts_retrains_of_all_models(make_engine, clock):
    engine = make_engine(make_config(cooldown_s=0, max_retrains_per_day=5, max_retrains_per_week=2))
    for name in ("a", "b"):
        Feeder(engine, clock, model=name).windows(TRIP)
        engine.on_retrain_finished(name, "promoted")
        clock.advance(86400)
    blocked = Feeder(engine, clock, model="c").windows(TRIP)
    assert kinds(blocked)[-1] == "retrain_blocked"
    assert blocked[-1].governor["blocked_by"][0]["check"] == "budget_week"


def test_trip_outside_the_maintenance_window_waits_and_fires_when_it_opens(make_engine, clock):
    window = MaintenanceWindow(cron="0 2 * * *", duration_s=3600)
    engine = make_engine(make_config(maintenance_windows=[window]))
    feed = Feeder(engine, clock)  # T0 is 00:00 UTC; windows of 10 minutes
    out = feed.windows(TRIP)
    assert kinds(out)[-1] == "retrain_waiting"
    assert "next opens at 2026-11-23T02:00:00Z" in out[-1].reason
    opens = datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp()
    assert engine.next_wakeup() == opens
    clock.t = opens - 1
    assert engine.tick() == []
    clock.t = opens
    fired = engine.tick()
    assert kinds(fired) == ["retrain_requested"]
    rec = fired[0]
    assert rec.governor["waited_for"] == ["maintenance_window"]
    assert rec.governor["maintenance"]["open_until"] == "2026-11-23T03:00:00Z"
    assert "waited 1h30m" in rec.reason


def test_waiting_request_is_cancelled_when_the_rule_rearms(make_engine, clock):
    engine = make_engine(
        make_config(maintenance_windows=[MaintenanceWindow(cron="0 2 * * *", duration_s=600)])
    )
    feed = Feeder(engine, clock)
    feed.windows(TRIP)
    out = feed.windows(CLEAR)
    assert kinds(out) == ["rule_clearing", "rule_rearmed", "retrain_cancelled"]
    assert engine.status()["models"]["intent"]["pending"] is None


def test_min_new_buffer_records_waits_for_fresh_traffic(make_engine, clock):
    engine = make_engine(make_config(min_new_buffer_records=5000, cooldown_s=0))
    feed = Feeder(engine, clock, n_records=1000)
    feed.windows([0.01, 0.01, 0.01, 0.01])  # 4000 records
    out = feed.windows(TRIP)  # 7000: enough
    assert kinds(out)[-1] == "retrain_requested"
    engine.on_retrain_finished("intent", "promoted")
    feed.windows(CLEAR)
    out = feed.windows(TRIP)  # only 5000 records since the last retrain, counted after the tripping window
    assert kinds(out)[-1] == "retrain_requested"
    engine.on_retrain_finished("intent", "promoted")
    feed.windows(CLEAR)
    feed.n_records = 500
    blocked = feed.windows(TRIP)
    assert kinds(blocked)[-1] == "retrain_blocked" and "min_new_buffer_records" in blocked[-1].reason
    fired = feed.windows([0.3] * 5)  # breaching windows keep bringing records
    assert kinds(fired)[-1] == "retrain_requested"


def test_pause_blocks_retrains_but_detection_continues(make_engine, clock):
    engine = make_engine()
    feed = Feeder(engine, clock)
    assert kinds(engine.pause("incident INC-42")) == ["paused"]
    out = feed.windows(TRIP)
    assert kinds(out) == ["rule_breaching", "rule_breaching", "rule_tripped", "retrain_blocked"]
    assert "INC-42" in out[-1].reason
    status = engine.status()
    assert status["paused"]["paused"] and status["paused"]["reason"] == "incident INC-42"
    assert status["models"]["intent"]["rules"]["1"]["div"]["state"] == "tripped"
    # force does not skip pause
    forced = engine.request_manual("intent", "need it now", force=True)
    assert kinds(forced) == ["retrain_blocked"]
    resumed = engine.resume()
    assert kinds(resumed) == ["resumed", "retrain_requested"]
    assert resumed[1].force


def test_manual_trigger_respects_limits_unless_forced(make_engine, clock):
    engine = make_engine(make_config(cooldown_s=3600))
    feed = Feeder(engine, clock)
    feed.windows([0.01])
    first = engine.request_manual("intent", "new labelled data landed")
    assert kinds(first) == ["retrain_requested"]
    assert first[0].sources[0] == {
        "kind": "manual",
        "reason": "new labelled data landed",
        "force": False,
        "requested_ts": clock.t,
    }
    assert first[0].version == "1"
    engine.on_retrain_finished("intent", "promoted")
    blocked = engine.request_manual("intent", "again")
    assert kinds(blocked) == ["retrain_blocked"] and "cooldown" in blocked[0].reason
    forced = engine.request_manual("intent", "again, really", force=True)
    assert kinds(forced) == ["retrain_requested"]
    assert forced[0].force and "forced past cooldown" in forced[0].reason
    # both manual sources are in the one retrain
    assert [s["reason"] for s in forced[0].sources] == ["again", "again, really"]
    # a running retrain is never doubled, even forced
    assert kinds(engine.request_manual("intent", "third", force=True)) == ["retrain_blocked"]


def test_dry_run_decides_and_notifies_but_never_hands_a_job_to_the_runner(make_engine, clock):
    engine = make_engine(make_config(dry_run=True, cooldown_s=3600))
    jobs, notified = [], []
    engine.on_retrain_requested(jobs.append)
    engine.subscribe(notified.append, kinds=["retrain_requested", "retrain_blocked"])
    feed = Feeder(engine, clock)
    out = feed.windows(TRIP)
    assert kinds(out)[-1] == "retrain_requested" and out[-1].dry_run
    assert jobs == [] and kinds(notified) == ["retrain_requested"]
    # the would-be retrain counts: cooldown and budget apply
    feed.windows(CLEAR)
    again = feed.windows(TRIP)
    assert kinds(again)[-1] == "retrain_blocked" and "cooldown" in again[-1].reason
    assert engine.status()["budget"]["day"]["used"] == 1


def test_live_requests_reach_the_job_runner_once(make_engine, clock):
    engine = make_engine()
    jobs = []
    engine.on_retrain_requested(jobs.append)
    Feeder(engine, clock).windows(TRIP)
    assert len(jobs) == 1 and not jobs[0].dry_run
    assert engine.status()["models"]["intent"]["running"]["decision_id"] == jobs[0].id


def test_rule_still_tripped_after_a_challenger_asks_again_after_cooldown(make_engine, clock):
    engine = make_engine(make_config(cooldown_s=3600))
    feed = Feeder(engine, clock)
    _trip_and_finish(engine, feed, outcome="challenger")
    status = engine.status()["models"]["intent"]
    assert status["pending"]["sources"][0]["kind"] == "retry"
    clock.advance(3600)
    fired = engine.tick()
    assert kinds(fired) == ["retrain_requested"]
    assert "still tripped after a challenger retrain" in fired[0].reason


def test_one_record_explains_a_retrain(make_engine, clock, store):
    engine = make_engine(
        make_config(maintenance_windows=[MaintenanceWindow(cron="0 3 * * *", duration_s=3600)])
    )
    feed = Feeder(engine, clock, window_s=3000)  # the trip closes at 02:30
    feed.window(0.2, evidence={"agreement_ref": 0.93, "agreement_now": 0.71})
    feed.window(0.3)
    feed.window(0.25)
    clock.t = T0 + 3 * 3600 + 12 * 60  # 03:12
    fired = engine.tick()
    [rec] = fired
    text = json.dumps(rec.to_dict())
    again = DecisionRecord.from_dict(json.loads(text))
    assert again.kind == "retrain_requested" and again.id == rec.id
    source = again.sources[0]
    assert source["rule"] == "div" and source["values"] == [0.2, 0.3, 0.25]
    assert source["windows"][0]["score"]["evidence"] == {"agreement_ref": 0.93, "agreement_now": 0.71}
    assert source["windows"][0]["offsets"] == {"0": [1000, 1999]}
    line = format_decision(again)
    assert line.startswith("2026-11-23T03:12:00Z retrain_requested")
    assert "rule div" in line and "0.2, 0.3, 0.25" in line and "maintenance_window" in line
    # and it is in the journal the CLI and /status read
    assert engine.decisions(limit=1)[0].id == rec.id
    assert engine.status()["recent_decisions"][-1]["id"] == rec.id


def test_housekeeping_drops_idle_superseded_versions(make_engine, clock):
    engine = make_engine(make_config(rules=[fixed_rule(action="notify")]))
    Feeder(engine, clock, version="1").windows([0.01])
    Feeder(engine, clock, version="2").windows([0.01])
    assert engine.housekeeping() == 0
    clock.advance(8 * 86400)
    Feeder(engine, clock, version="2").windows([0.01])
    assert engine.housekeeping() == 1
    assert set(engine.rule_states()["intent"]) == {"2"}


def test_status_text_shows_rules_and_what_a_request_waits_for(make_engine, clock):
    from distilld.daemon.policy_engine import format_status

    engine = make_engine(
        make_config(maintenance_windows=[MaintenanceWindow(cron="0 2 * * *", duration_s=600)])
    )
    feed = Feeder(engine, clock)
    feed.windows([0.2, 0.2, 0.2, 0.04])
    text = format_status(engine.status())
    assert "v1 div" in text and "clearing 1/2" in text
    assert "waits for maintenance_window: outside the maintenance windows" in text
    assert "retrain_waiting" in text


def test_a_promotion_cancels_trips_measured_on_the_old_champion(make_engine, clock):
    second_rule = fixed_rule(name="second", metric="m2")
    engine = make_engine(make_config(rules=[fixed_rule(), second_rule], cooldown_s=3600))
    feed = Feeder(engine, clock)
    out = feed.windows(TRIP)
    assert "retrain_requested" in kinds(out)
    engine.on_retrain_started(feed.model, {"job": "j1"})
    blocked = [r for _ in range(3) for r in feed.window(0.2, metric="m2")]
    assert "retrain_blocked" in kinds(blocked), "the second rule's trip waits behind the running retrain"
    finished = engine.on_retrain_finished(feed.model, "promoted", {"version": "2"})
    assert kinds(finished) == ["retrain_finished", "retrain_cancelled"]
    assert "new champion" in finished[-1].reason
    assert engine.status()["models"]["intent"]["pending"] is None
    clock.advance(7200)
    assert "retrain_requested" not in kinds(engine.tick())

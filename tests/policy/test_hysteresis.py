"""The per-rule state machine, driven through the engine (persisted after every window)."""

from policy_helpers import Feeder, fixed_rule, kinds, make_config

from distilld.daemon.hysteresis import RuleState


def _state(engine, rule="div", model="intent", version="1"):
    return engine.rule_states()[model][version][rule]


def test_oscillating_inside_the_band_never_trips(make_engine, clock):
    engine = make_engine()
    feed = Feeder(engine, clock)
    records = feed.windows([0.06, 0.099, 0.07, 0.1, 0.051, 0.095] * 20)
    assert records == []
    assert _state(engine)["state"] == RuleState.ARMED


def test_n_minus_one_breaching_windows_do_not_trip_n_do(make_engine, clock):
    engine = make_engine()
    feed = Feeder(engine, clock)
    first = feed.windows([0.2, 0.3])
    assert kinds(first) == ["rule_breaching", "rule_breaching"]
    assert _state(engine)["state"] == RuleState.BREACHING
    assert _state(engine)["breach_count"] == 2
    third = feed.window(0.25)
    assert kinds(third) == ["rule_tripped", "retrain_requested"]
    trip = third[0]
    assert [w["value"] for w in trip.windows] == [0.2, 0.3, 0.25]
    assert trip.thresholds["trip"] == 0.10 and trip.thresholds["clear"] == 0.05
    assert trip.counts["trip_windows"] == 3


def test_a_window_in_the_band_interrupts_the_breaching_run(make_engine, clock):
    engine = make_engine()
    feed = Feeder(engine, clock)
    records = feed.windows([0.2, 0.2, 0.08, 0.2, 0.2, 0.07, 0.2, 0.2])
    assert "rule_tripped" not in kinds(records)
    assert kinds(records).count("rule_reset") == 2
    assert _state(engine)["breach_count"] == 2


def test_rearming_needs_the_clear_level_for_the_configured_windows(make_engine, clock):
    engine = make_engine(make_config(rules=[fixed_rule(action="notify")]))
    feed = Feeder(engine, clock)
    assert "rule_tripped" in kinds(feed.windows([0.2, 0.2, 0.2]))
    # inside the band is not clear: stays tripped however long it lasts
    assert feed.windows([0.08] * 10) == []
    assert _state(engine)["state"] == RuleState.TRIPPED
    # one clear window, then a band window: the clear run starts over
    assert kinds(feed.window(0.04)) == ["rule_clearing"]
    assert kinds(feed.window(0.09)) == ["rule_reset"]
    assert _state(engine)["state"] == RuleState.TRIPPED
    assert kinds(feed.window(0.05)) == ["rule_clearing"]  # at the clear level counts as clear
    rearm = feed.window(0.01)
    assert kinds(rearm) == ["rule_rearmed"]
    assert _state(engine)["state"] == RuleState.ARMED
    assert [w["value"] for w in rearm[0].windows] == [0.05, 0.01]


def test_small_windows_neither_breach_nor_interrupt(make_engine, clock):
    engine = make_engine()
    feed = Feeder(engine, clock)
    feed.windows([0.2, 0.2])
    assert feed.window(0.01, n_records=10) == []  # too few records: skipped
    assert feed.window(0.5, n_records=10) == []
    st = _state(engine)
    assert st["breach_count"] == 2 and st["windows_skipped"] == 2
    assert "min_window_records" in st["last"]["skip_reason"]
    assert "rule_tripped" in kinds(feed.window(0.2))


def test_calibrated_trip_uses_the_detectors_threshold(make_engine, clock):
    rule = fixed_rule(
        trip="calibrated",
        clear=None,
        clear_margin_fraction=0.5,
        trip_windows=1,
        clear_windows=1,
        action="notify",
    )
    engine = make_engine(make_config(rules=[rule]))
    feed = Feeder(engine, clock)
    assert feed.window(0.5, threshold=None) == []  # no calibrated threshold: does not count
    assert feed.window(0.5, threshold=0.6) == []
    tripped = feed.window(0.5, threshold=0.4)
    assert kinds(tripped) == ["rule_tripped"]
    assert tripped[0].thresholds == {
        "direction": "above",
        "trip": 0.4,
        "clear": 0.2,
        "calibrated": True,
        "action": "notify",
    }
    assert feed.window(0.25, threshold=0.4) == []  # 0.25 is inside the band [0.2, 0.4]
    assert kinds(feed.window(0.2, threshold=0.4)) == ["rule_rearmed"]


def test_restart_in_the_middle_of_a_breaching_count_keeps_the_count(make_engine, clock, store_path):
    from distilld.daemon.state_store import StateStore

    first_store = StateStore(store_path)
    engine = make_engine(on_store=first_store)
    Feeder(engine, clock).windows([0.2, 0.2])
    first_store.close()

    second_store = StateStore(store_path)
    try:
        restarted = make_engine(on_store=second_store)
        assert _state(restarted)["breach_count"] == 2
        feed = Feeder(restarted, clock)
        assert kinds(feed.window(0.3))[:1] == ["rule_tripped"]
    finally:
        second_store.close()


def test_rules_are_per_model_version_and_respect_the_models_filter(make_engine, clock):
    rules = [fixed_rule(name="only-search", models=["search-*"], trip_windows=1, action="notify")]
    engine = make_engine(make_config(rules=rules))
    assert Feeder(engine, clock, model="intent").window(0.9) == []
    assert kinds(Feeder(engine, clock, model="search-ranker").window(0.9)) == ["rule_tripped"]
    assert set(engine.rule_states()) == {"search-ranker"}


def test_direction_below_trips_on_low_values(make_engine, clock):
    rule = fixed_rule(
        direction="below", trip=0.80, clear=0.90, trip_windows=2, clear_windows=1, action="notify"
    )
    engine = make_engine(make_config(rules=[rule]))
    feed = Feeder(engine, clock)
    assert feed.windows([0.85, 0.95, 0.81]) == []  # never below the trip level
    assert kinds(feed.windows([0.7, 0.75])) == ["rule_breaching", "rule_tripped"]
    assert feed.window(0.85) == []  # in the band [0.8, 0.9]
    assert kinds(feed.window(0.9)) == ["rule_rearmed"]


def test_a_failing_listener_does_not_stop_the_policy(make_engine, clock):
    engine = make_engine(make_config(rules=[fixed_rule(trip_windows=1)]))
    seen = []

    def broken(record):
        raise RuntimeError("webhook down")

    engine.subscribe(broken)
    engine.subscribe(seen.append)
    out = Feeder(engine, clock).window(0.5)
    assert kinds(out) == ["rule_tripped", "retrain_requested"]
    assert kinds(seen) == kinds(out)
    assert engine.decisions(limit=5)[-1].kind == "retrain_requested"

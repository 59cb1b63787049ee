"""References per model version, their persistence, and scoring of closed windows."""

from __future__ import annotations

import numpy as np

from distilld.daemon.config import WindowsConfig
from distilld.daemon.drift_monitor import SCORED_KIND, DriftMonitor
from distilld.daemon.policy_config import PolicyConfig
from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.record import decode_record, records_to_batch
from distilld.daemon.state_store import StateStore
from distilld.daemon.traffic_synth import encode, generate_records
from distilld.detectors.config import DetectorsConfig

CONFIG = DetectorsConfig(reference_records=2000, calibration_subwindows=4)
WINDOWS = WindowsConfig(window_records=500, window_s=None, min_window_records=10)


def _batch(n, seed, shift_at=None, strength=0.6):
    recs = [
        decode_record(encode(r))
        for r in generate_records(n, seed=seed, shift_at=shift_at, shift_strength=strength)
    ]
    return records_to_batch(recs)


def _sources(batch, start=0):
    return [("t", 0, start + i) for i in range(len(batch))]


def test_reference_survives_a_restart_mid_build(tmp_path):
    store = StateStore(tmp_path / "s.sqlite")
    monitor = DriftMonitor(CONFIG, store, None)
    batch = _batch(1300, seed=1)
    with store.transaction():
        monitor.feed_reference("m", "1", batch)
    assert monitor.status()["m/1"] == {"state": "building", "records": 1300, "needed": 2000}

    again = DriftMonitor(CONFIG, store, None)
    more = _batch(700, seed=2)
    with store.transaction():
        again.feed_reference("m", "1", more)
    assert again.reference("m", "1", 45) is not None
    assert again.reference("m", "1", 45).n_records == 2000
    assert DriftMonitor(CONFIG, store, None).reference("m", "1", 45).n_records == 2000


def test_closed_windows_are_scored_and_reach_the_policy(tmp_path):
    store = StateStore(tmp_path / "s.sqlite")
    policy = PolicyEngine(PolicyConfig(), store)
    monitor = DriftMonitor(CONFIG, store, policy)
    windows = monitor.window_manager(WINDOWS)
    stationary = _batch(3000, seed=3)
    with store.transaction():
        monitor.feed_reference("m", "1", stationary.select(np.arange(2000)))
        closed = windows.add("m", "1", stationary.select(np.arange(2000, 3000)), _sources(stationary, 2000))
        monitor.on_windows_closed(closed)
    shifted = _batch(1000, seed=4, shift_at=0, strength=1.0)
    with store.transaction():
        closed = windows.add("m", "1", shifted, _sources(shifted, 3000))
        monitor.on_windows_closed(closed)

    scored = store.journal(SCORED_KIND)
    assert [e["payload"]["window"]["id"] for e in scored] == [1, 2, 3, 4]
    calm, drifted = scored[0]["payload"]["scores"], scored[-1]["payload"]["scores"]
    assert not calm["prediction.class_js"]["breached"]
    assert drifted["prediction.class_js"]["breached"]
    assert drifted["prediction.class_js"]["value"] > calm["prediction.class_js"]["value"]
    rules = policy.rule_states()["m"]["1"]
    assert rules["prediction-drift"]["state"] != "armed"

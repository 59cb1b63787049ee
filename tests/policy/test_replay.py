"""Replay over synthetic WordNet traffic: a known drift point, a stationary stream, the CLI, the picture."""

import json

import numpy as np
import pytest
import yaml

from distilld.daemon.policy_config import PolicyConfig
from distilld.daemon.replay import KafkaSource, ReplaySettings, replay_main, run_replay
from distilld.daemon.traffic_synth import encode, generate_records, write_jsonl
from distilld.detectors.config import DetectorsConfig

WINDOW = 1000
REFERENCE = 8000
SHIFT_AT = 16000
DETECTORS = {"reference_records": REFERENCE, "calibration_subwindows": 8}


@pytest.fixture(scope="module")
def drift_lines() -> list[bytes]:
    return [encode(r) for r in generate_records(30000, shift_at=SHIFT_AT, seed=3)]


def _settings(**policy) -> ReplaySettings:
    return ReplaySettings(
        detectors=DetectorsConfig(**DETECTORS),
        policy=PolicyConfig.model_validate(policy),
        window_records=WINDOW,
    )


def test_drift_trips_at_the_expected_window_and_the_picture_is_written(drift_lines, tmp_path):
    result = run_replay(_settings(), drift_lines, plot_dir=tmp_path)
    trips = {d.rule: d for d in result.trips()}
    # the reference takes windows' worth of records 1..8; scored windows start after it, so the window
    # ending at record SHIFT_AT + k*WINDOW has id (SHIFT_AT - REFERENCE) / WINDOW + k
    first_shifted = (SHIFT_AT - REFERENCE) // WINDOW + 1
    assert trips["prediction-drift"].windows[-1]["window_id"] == first_shifted + 2
    assert [w["window_id"] for w in trips["prediction-drift"].windows] == [
        first_shifted + i for i in range(3)
    ]
    # no rule tripped on pre-shift windows
    assert all(w["window_id"] >= first_shifted for d in result.trips() for w in d.windows)
    # one would-be retrain, then the reference is rebuilt from the records that follow
    assert result.retrains == 1
    assert [r["reason"].split(" #")[0] for r in result.references] == [
        "first records",
        "re-baseline after retrain decision",
    ]
    assert result.gpu_hours == pytest.approx(0.5) and result.gpu_cost == pytest.approx(1.25)
    [png] = result.plots
    assert png.name == "replay-intent-classifier.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_and_cooldown_apply_in_replay(drift_lines):
    # without re-baselining, the drifted traffic keeps rules tripped; a tiny cooldown and a retry would
    # retrain again, but the daily budget of one stops it and the timeline says so
    settings = _settings(limits={"cooldown_s": 1, "max_retrains_per_day": 1, "min_new_buffer_records": 0})
    result = run_replay(settings, drift_lines, rebaseline=False)
    assert result.retrains == 1
    lines = result.timeline()
    assert any("retrain_requested" in line for line in lines)


def test_stationary_stream_never_trips_with_default_rules(tmp_path):
    lines = (encode(r) for r in generate_records(40000, seed=11))
    result = run_replay(_settings(), lines)
    assert len(result.windows) == (40000 - REFERENCE) // WINDOW
    assert result.trips() == [] and result.retrains == 0


def test_cli_replays_a_jsonl_file(drift_lines, tmp_path, capsys):
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(b"\n".join(drift_lines) + b"\n{not json}\n")
    config = tmp_path / "distilld.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "windows": {"window_records": WINDOW},
                "detectors": DETECTORS,
                "policy": {"limits": {"maintenance_windows": [{"cron": "20 0 * * *", "duration_s": 300}]}},
            }
        )
    )
    assert replay_main(["-c", str(config), "--from", str(stream), "--out-dir", str(tmp_path / "pics")]) == 0
    out = capsys.readouterr().out
    assert "rule_tripped" in out and "retrain_waiting" in out
    # the stream runs at 20 records/s from 00:00: the trip (record 19000) is at 00:15:50, and the
    # retrain starts when the window opens, not when the next detector window closes
    assert "next opens at 2026-11-01T00:20:00Z" in out
    assert "2026-11-01T00:20:00Z retrain_requested" in out
    assert "retrains that would have started: 1" in out
    assert "1 bad" in out and "not_json" in out
    assert (tmp_path / "pics" / "replay-intent-classifier.png").exists()


def test_synthetic_records_decode_and_shift(tmp_path):
    from distilld.daemon.record import decode_record

    recs = list(generate_records(3000, shift_at=1500, seed=5, shadow_fraction=0.5, label_fraction=0.1))
    decoded = [decode_record(encode(r)) for r in recs]
    assert all(d.n_classes == 45 for d in decoded)
    assert 0.4 < sum(d.teacher_logits is not None for d in decoded) / 3000 < 0.6
    assert 0.05 < sum(d.label is not None for d in decoded) / 3000 < 0.15
    assert decoded[1].ts > decoded[0].ts
    before = np.bincount([d.prediction for d in decoded[:1500]], minlength=45) / 1500
    after = np.bincount([d.prediction for d in decoded[1500:]], minlength=45) / 1500
    assert 0.5 * np.abs(before - after).sum() > 0.2  # total variation distance of the prediction mix
    again = list(generate_records(10, shift_at=1500, seed=5, shadow_fraction=0.5, label_fraction=0.1))
    assert json.dumps(again) == json.dumps(recs[:10])  # same seed, same stream
    path = tmp_path / "s.jsonl"
    assert write_jsonl(path, iter(recs[:100])) == 100
    assert len(path.read_bytes().splitlines()) == 100


@pytest.mark.kafka
def test_replay_from_a_kafka_topic_range(kafka_broker, drift_lines):
    from kafka import KafkaProducer

    topic = kafka_broker.new_topic(partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=20)
    for line in drift_lines[:12000]:
        producer.send(topic, line)
    producer.flush()
    producer.close()
    source = KafkaSource(bootstrap=kafka_broker.bootstrap, topic=topic, start_offset=1000, end_offset=11000)
    result = run_replay(_settings(), source)
    assert result.records == 10000
    assert len(result.windows) == (10000 - REFERENCE) // WINDOW

"""The whole loop on real parts, with a tiny student: drift → trip → re-distil → register → promote → event.

Real Kafka broker, the real `distilld run` process, the real trainer in its
subprocess, a real MLflow store; only the model is tiny so CI runs it in
about a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from kafka import KafkaConsumer

from distilld.daemon.serving_signal import EVENT_PROMOTED
from distilld.daemon.traffic_synth import encode, generate_records
from distilld.trainers.tiny_models import make_tiny_classifier
from tests.conftest import kafka_kit
from tests.ingest.daemon_harness import DaemonProcess, produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MODEL = "intent-classifier"
N_RECORDS = 9000
SHIFT_AT = 5000


def _golden_set(records, path):
    """The operator's golden set: earlier traffic with teacher targets (the replay set of the gate)."""
    with path.open("w") as fh:
        for r in records:
            if "teacher" in r:
                row = {
                    "request_id": r["request_id"],
                    "text": r["input"]["text"],
                    "teacher_logits": r["teacher"]["logits"],
                    "label": r.get("label"),
                }
                fh.write(json.dumps(row) + "\n")
    return path


def _config(tmp, bootstrap, topic, events_topic, port):
    return {
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "topics": [topic],
            "dead_letter_topic": f"{topic}.dead-letter",
            "group_id": "e2e",
            "max_poll_records": 500,
            "poll_timeout_ms": 200,
            "create_topics": True,
        },
        "models": {MODEL: {"num_classes": 45}},
        "windows": {"window_records": 1000, "window_s": None, "min_window_records": 100},
        "detectors": {"reference_records": 4000, "calibration_subwindows": 4},
        "policy": {
            "rules": [
                {
                    "name": "prediction-drift",
                    "metric": "prediction.class_js",
                    "trip": "calibrated",
                    "trip_windows": 2,
                }
            ],
            "limits": {"cooldown_s": 3600, "min_new_buffer_records": 1000},
        },
        "trainer": {
            "golden_set_path": str(tmp / "golden.jsonl"),
            "replay_records": 400,
            "min_train_records": 200,
            "device": "cpu",
            "hyperparameters": {
                "epochs": 2,
                "batch_size_records": 32,
                "max_length_tokens": 32,
                "learning_rate": 0.003,
            },
        },
        "registry": {"gate": {"min_agreement_gain": 0.0, "max_replay_drop": 1.0}},
        "signal": {"topic": events_topic},
        "state": {"state_dir": str(tmp / "state")},
        "http": {"port": port},
        "logging": {"format": "kv", "status_interval_s": 5},
    }


def test_drift_is_redistilled_promoted_and_announced(kafka_broker, tmp_path):
    topic = kafka_broker.new_topic(partitions=2)
    events_topic = kafka_broker.new_topic(partitions=1, prefix="model-events")
    port = kafka_kit.free_port()
    cfg_path = tmp_path / "distilld.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, kafka_broker.bootstrap, topic, events_topic, port)))

    records = list(generate_records(N_RECORDS, shift_at=SHIFT_AT, shift_strength=1.0, seed=11, model=MODEL))
    _golden_set(generate_records(3000, seed=5, model=MODEL), tmp_path / "golden.jsonl")
    student = make_tiny_classifier(
        "bert", 45, tmp_path / "student", texts=[r["input"]["text"] for r in records[:2000]]
    )
    registered = subprocess.run(
        [
            sys.executable,
            "-m",
            "distilld.daemon",
            "register-base",
            "-c",
            str(cfg_path),
            "--model",
            MODEL,
            str(student),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["version"] == "1"

    produce(kafka_broker.bootstrap, topic, [encode(r) for r in records])
    daemon = DaemonProcess(cfg_path, port, tmp_path / "daemon.log").start()
    try:
        doc = daemon.wait_for(
            lambda d: any(r["kind"] == "retrain_finished" for r in d["policy"]["recent_decisions"]),
            timeout_s=420,
            what="a finished retrain",
        )
        kinds = [r["kind"] for r in doc["policy"]["recent_decisions"]]
        for kind in ("rule_tripped", "retrain_requested", "retrain_started", "retrain_finished"):
            assert kind in kinds, f"{kind} missing from {kinds}"
        tripped = next(r for r in doc["policy"]["recent_decisions"] if r["kind"] == "rule_tripped")
        assert tripped["rule"] == "prediction-drift"
        finished = next(r for r in doc["policy"]["recent_decisions"] if r["kind"] == "retrain_finished")
        assert "promoted" in finished["reason"], finished
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()

    consumer = KafkaConsumer(
        events_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    events = [json.loads(m.value) for m in consumer]
    consumer.close()
    promoted = [e for e in events if e["type"] == EVENT_PROMOTED]
    assert [e["data"]["version"] for e in promoted] == ["1", "2"], events
    assert promoted[-1]["data"]["alias"] == "champion"
    assert promoted[-1]["data"]["sha256"]

    decisions = subprocess.run(
        [sys.executable, "-m", "distilld.daemon", "decisions", "-c", str(cfg_path), "--model", MODEL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert decisions.returncode == 0 and "prediction-drift" in decisions.stdout

    picture = tmp_path / "timeline.png"
    timeline = subprocess.run(
        [
            sys.executable,
            "-m",
            "distilld.daemon",
            "timeline",
            "-c",
            str(cfg_path),
            "--model",
            MODEL,
            "--out",
            str(picture),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert timeline.returncode == 0, timeline.stderr
    assert picture.read_bytes().startswith(b"\x89PNG")

"""Run the real ``distilld run`` process against the real broker, and read what it persisted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from kafka import KafkaProducer

from distilld.daemon.state_store import StateStore
from distilld.daemon.windows import META_NS

N_CLASSES = 45


def record(i: int, model: str = "intent", version: str = "1", rng: random.Random | None = None) -> dict:
    rng = rng or random.Random(i)
    logits = [rng.gauss(0, 1) for _ in range(N_CLASSES)]
    rec = {
        "request_id": f"req-{i}",
        "ts": "2026-11-22T14:03:11.201Z",
        "model": model,
        "model_version": version,
        "input": {"text": f"where is my parcel number {i}"},
        "student": {"logits": logits},
        "prediction": max(range(N_CLASSES), key=logits.__getitem__),
        "latency_ms": 8.4,
    }
    if i % 5 == 0:
        rec["teacher"] = {"logits": [x + rng.gauss(0, 0.3) for x in logits]}
    if i % 20 == 0:
        rec["label"] = rec["prediction"]
    return rec


MALFORMED = [
    b"not json at all",
    b'{"request_id": "x"}',
    json.dumps({**record(1), "student": {"logits": [1.0] * 7}}).encode(),
    b'{"request_id":"n","ts":"2026-11-22T14:03:11Z","model":"intent","model_version":"1",'
    b'"input":{"text":"a"},"student":{"logits":[NaN, 1.0, 2.0]}}',
    json.dumps({**record(2), "prediction": 99}).encode(),
    json.dumps({**record(3), "teacher": {"logits": [0.0, 1.0]}}).encode(),
]


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    for i, v in enumerate(values):
        producer.send(topic, value=v, partition=None if partitions is None else i % partitions)
    producer.flush()
    producer.close()


def write_config(tmp: Path, bootstrap: str, topic: str, group: str, port: int, **windows) -> Path:
    cfg = {
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "topics": [topic],
            "dead_letter_topic": f"{topic}.dlq",
            "group_id": group,
            "max_poll_records": 500,
            "poll_timeout_ms": 200,
            "create_topics": True,
            "session_timeout_ms": 6000,
        },
        "windows": {"window_records": 1000, "window_s": None, "min_window_records": 10, **windows},
        "models": {"intent": {"num_classes": N_CLASSES}},
        "detectors": {"reference_records": 4000, "calibration_subwindows": 4},
        "state": {"state_dir": str(tmp / "state")},
        "http": {"port": port},
        "logging": {"format": "kv", "status_interval_s": 2},
    }
    path = tmp / "distilld.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class DaemonProcess:
    def __init__(self, config: Path, port: int, log_path: Path):
        self.config, self.port, self.log_path = config, port, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distilld.daemon", "run", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        return self

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def wait_for(self, predicate, timeout_s: float = 90.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            doc = self.status()
            if doc is not None and predicate(doc):
                return doc
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last status {self.status()}\n{self.log_tail()}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text()[-n:] if self.log_path.exists() else ""


def counted_records(state_dir: Path) -> dict[str, int]:
    """Records each (model, version) window series has folded in, as persisted."""
    store = StateStore(state_dir / "state.sqlite")
    try:
        return {k.replace("\x1f", "/"): v["total_records"] for k, v in store.items_json(META_NS).items()}
    finally:
        store.close()

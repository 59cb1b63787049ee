"""What an SRE touches on a running daemon: health, readiness, metrics, status, controls."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import kafka_kit
from tests.ingest.daemon_harness import MALFORMED, DaemonProcess, produce, record, write_config

pytestmark = pytest.mark.kafka


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "distilld.daemon", *args], capture_output=True, text=True, timeout=120
    )


def test_endpoints_status_and_controls(kafka_broker, tmp_path):
    topic = kafka_broker.new_topic(partitions=1)
    produce(
        kafka_broker.bootstrap, topic, [json.dumps(record(i)).encode() for i in range(1500)] + MALFORMED[:2]
    )
    port = kafka_kit.free_port()
    cfg = write_config(tmp_path, kafka_broker.bootstrap, topic, "g-ops", port)
    daemon = DaemonProcess(cfg, port, tmp_path / "daemon.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        daemon.wait_for(lambda d: d["consumer"]["ready"] and d["consumer"]["records"]["consumed"] >= 1502)
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert f'distilld_records_consumed_total{{topic="{topic}"}} 1502.0' in metrics
        assert 'distilld_records_dead_lettered_total{reason="not_json"} 1.0' in metrics
        assert "distilld_ready 1.0" in metrics
        assert 'distilld_window_records{model="intent",version="1"}' in metrics

        status = _cli("status", "--url", base)
        assert status.returncode == 0, status.stderr
        assert "consumed 1502" in status.stdout and "dead-lettered 2" in status.stdout
        assert "window intent/1" in status.stdout

        paused = _cli("pause", "--url", base, "--reason", "incident 4711")
        assert paused.returncode == 0 and "paused" in paused.stdout
        asked = _cli("retrain", "--url", base, "--model", "intent", "--reason", "operator test")
        assert asked.returncode == 0, asked.stderr
        doc = daemon.status()
        assert doc["policy"]["paused"]["paused"] is True
        assert doc["policy"]["paused"]["reason"] == "incident 4711"
        assert not doc["retrains"]["jobs"], "no retrain may start while paused"
        resumed = _cli("resume", "--url", base)
        assert resumed.returncode == 0
        assert daemon.status()["policy"]["paused"]["paused"] is False

        bad = urllib.request.Request(f"{base}/v1/retrain", data=b"[1]", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=5)
        assert err.value.code == 400
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()

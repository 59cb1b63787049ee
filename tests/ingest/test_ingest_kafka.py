"""The ingest loop against the real broker: nothing lost, nothing counted twice."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from distilld.daemon.dead_letter import HEADER_OFFSET, HEADER_REASON
from tests.conftest import kafka_kit
from tests.ingest.daemon_harness import (
    MALFORMED,
    DaemonProcess,
    counted_records,
    produce,
    record,
    write_config,
)

pytestmark = pytest.mark.kafka


def _consumed(n):
    return lambda doc: doc["consumer"]["records"]["consumed"] >= n


@pytest.fixture
def make_daemon(kafka_broker, tmp_path):
    started: list[DaemonProcess] = []

    def make(topic, group, name="d"):
        port = kafka_kit.free_port()
        d = tmp_path / name
        d.mkdir()
        cfg = write_config(d, kafka_broker.bootstrap, topic, group, port)
        daemon = DaemonProcess(cfg, port, d / "daemon.log")
        started.append(daemon)
        return daemon, d / "state"

    yield make
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


def test_good_and_malformed_records(kafka_broker, make_daemon):
    topic = kafka_broker.new_topic(partitions=2)
    n_good = 2500
    values = [json.dumps(record(i)).encode() for i in range(n_good)]
    values[100:100] = MALFORMED
    produce(kafka_broker.bootstrap, topic, values)

    daemon, state = make_daemon(topic, "g-a")
    daemon.start()
    doc = daemon.wait_for(_consumed(len(values)), what="all records consumed")
    assert doc["consumer"]["records"]["dead_lettered"] == len(MALFORMED)
    assert daemon.terminate() == 0
    assert counted_records(state) == {"intent/1": n_good}

    dlq = KafkaConsumer(
        f"{topic}.dlq",
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    dead = list(dlq)
    dlq.close()
    assert sorted(m.value for m in dead) == sorted(MALFORMED)
    reasons = {dict(m.headers)[HEADER_REASON].decode() for m in dead}
    assert {"not_json", "missing_field", "logits_length", "non_finite", "schema"} <= reasons
    assert all(dict(m.headers)[HEADER_OFFSET].decode().isdigit() for m in dead)

    # a consumer that never subscribes does not join the group; it only reads its commits
    probe = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id="g-a", enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(2)]
    ends = probe.end_offsets(tps)
    committed = {tp: probe.committed(tp) for tp in tps}
    probe.close()
    assert committed == ends


def test_sigkill_mid_stream_counts_every_record_once(kafka_broker, make_daemon):
    topic = kafka_broker.new_topic(partitions=1)
    # large enough that the kill lands mid-stream even on a fast machine
    n = 60_000
    produce(kafka_broker.bootstrap, topic, [json.dumps(record(i)).encode() for i in range(n)])
    daemon, state = make_daemon(topic, "g-b")
    daemon.start()
    daemon.wait_for(_consumed(3000), what="first records")
    daemon.kill()
    assert 0 < sum(counted_records(state).values()) < n, "kill must land mid-stream"

    daemon.start()
    daemon.wait_for(
        lambda d: (
            d["consumer"]["ready"]
            and sum(d["consumer"]["lag"].values()) == 0
            and d["windows"]
            and d["windows"][0]["total_records"] == n
        ),
        what="catch-up",
    )
    assert daemon.terminate() == 0
    assert counted_records(state) == {"intent/1": n}


def test_two_instances_share_a_four_partition_topic(kafka_broker, make_daemon):
    topic = kafka_broker.new_topic(partitions=4)
    n = 8000
    a, state_a = make_daemon(topic, "g-c", "a")
    b, state_b = make_daemon(topic, "g-c", "b")
    a.start()
    b.start()
    # records go out only once the group has settled on two members, so the
    # split is the group's doing and not a race between the two starts
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        docs = [a.status(), b.status()]
        assigned = [len(d["consumer"]["assigned"]) if d else 0 for d in docs]
        if sum(assigned) == 4 and all(assigned):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the group never split the partitions between both instances: {assigned}")
    produce(kafka_broker.bootstrap, topic, [json.dumps(record(i)).encode() for i in range(n)], partitions=4)
    while time.monotonic() < deadline + 120:
        docs = [a.status(), b.status()]
        if all(docs) and sum(d["consumer"]["records"]["valid"] for d in docs) >= n:
            break
        time.sleep(0.3)
    assert a.terminate() == 0 and b.terminate() == 0
    counts = [sum(counted_records(s).values()) for s in (state_a, state_b)]
    assert sum(counts) == n
    assert all(c > 0 for c in counts), f"both instances should have worked: {counts}"


def test_broker_restart_while_running_loses_nothing(kafka_broker, make_daemon):
    topic = kafka_broker.new_topic(partitions=1)
    first = [json.dumps(record(i)).encode() for i in range(2000)]
    second = [json.dumps(record(i)).encode() for i in range(2000, 5000)]
    produce(kafka_broker.bootstrap, topic, first)
    daemon, state = make_daemon(topic, "g-d")
    daemon.start()
    daemon.wait_for(_consumed(len(first)), what="first half")

    kafka_broker.stop()
    time.sleep(3)
    assert daemon.proc.poll() is None, "the daemon must survive a broker outage"
    kafka_broker.start()
    produce(kafka_broker.bootstrap, topic, second)
    daemon.wait_for(
        lambda d: d["windows"] and d["windows"][0]["total_records"] == 5000,
        timeout_s=120,
        what="records after the restart",
    )
    assert daemon.terminate() == 0
    assert counted_records(state) == {"intent/1": 5000}


def test_a_new_model_with_mixed_logit_lengths_in_one_batch(kafka_broker, make_daemon):
    """No class count configured: the first record fixes it; the others are dead-lettered, not a crash."""
    topic = kafka_broker.new_topic(partitions=1)
    first = [json.dumps(record(i, model="unconfigured")).encode() for i in range(50)]
    short = {**record(50, model="unconfigured"), "student": {"logits": [0.1] * 44}, "prediction": 3}
    short.pop("teacher", None)
    short.pop("label", None)
    values = [*first, json.dumps(short).encode(), *first[:10]]
    produce(kafka_broker.bootstrap, topic, values)
    daemon, state = make_daemon(topic, "g-e")
    daemon.start()
    doc = daemon.wait_for(_consumed(len(values)), what="all records consumed")
    assert doc["consumer"]["records"]["dead_lettered"] == 1
    assert daemon.terminate() == 0
    assert counted_records(state) == {"unconfigured/1": 60}

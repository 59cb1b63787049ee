"""Ingest throughput: the daemon's consumer path versus a bare kafka-python loop, same topic, same run.

    .venv/bin/python bench/ingest.py --records 200000 --rounds 3

A real local broker (deploy/kafka) gets ``--records`` realistic inference
records (45-class logits, 20 % with teacher logits, 5 % labelled; from
``distilld.daemon.traffic_synth``). Each round reads the whole topic twice
with fresh consumer groups: once with a bare ``KafkaConsumer.poll`` loop that
only counts messages, once with the daemon itself (decode + validate, dead
letters, detectors' window updates, reference building, training-buffer,
SQLite persistence and the offset commit per batch). Rounds alternate so
machine noise hits both alike; the ratio is daemon / bare records per second.

Both are measured twice, in separate worker processes: with kafka-python's
CRC check in C (the ``crc32c`` package, a distilld dependency) and with its
pure-Python fallback, which is what a consumer without that package runs and
which made the bare loop several times slower.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("DISTILLD_BENCH_PURE_PYTHON_CRC") == "1":
    # kafka-python picks its CRC implementation at import: hide the C one
    sys.modules["crc32c"] = None

import argparse
import importlib.util
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from tqdm import tqdm

from distilld.daemon.config import load_config
from distilld.daemon.service import Daemon
from distilld.daemon.traffic_synth import encode, generate_records

REPO = Path(__file__).resolve().parent.parent
TOPIC = "bench-inference-logs"


def _kit():
    spec = importlib.util.spec_from_file_location("kafka_kit", REPO / "deploy" / "kafka" / "broker.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def fill_topic(bootstrap: str, n: int, partitions: int) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, partitions, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20, acks=1)
    size = 0
    for rec in tqdm(generate_records(n, seed=7), total=n, unit="rec", desc="producing"):
        value = encode(rec)
        size += len(value)
        producer.send(TOPIC, value)
    producer.flush()
    producer.close()
    return size // n


def bare_loop(bootstrap: str, n: int, group: str, max_poll_records: int) -> float:
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
    )
    seen, started = 0, None
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            if started is None:
                started = time.perf_counter()
            seen += len(records)
    elapsed = time.perf_counter() - started
    consumer.close(autocommit=False)
    return n / elapsed


def daemon_loop(bootstrap: str, n: int, group: str, max_poll_records: int, state_dir: Path) -> float:
    config = load_config(
        None,
        kafka={
            "bootstrap_servers": [bootstrap],
            "topics": [TOPIC],
            "dead_letter_topic": TOPIC + ".dead-letter",
            "group_id": group,
            "max_poll_records": max_poll_records,
            "create_topics": True,
        },
        state={"state_dir": str(state_dir)},
        http={"port": 0},
        logging={"level": "WARNING"},
    )
    daemon = Daemon(config)
    stop = threading.Event()
    started: list[float] = []
    ingest = daemon.ingest
    process = ingest.process

    def timed_process(polled):
        if not started:
            started.append(time.perf_counter())
        process(polled)
        if ingest.stats.consumed >= n:
            stop.set()

    ingest.process = timed_process
    ingest.connect()
    try:
        ingest.run(stop)
    finally:
        elapsed = time.perf_counter() - started[0]
        ingest.close()
        daemon.http.server.server_close()
        daemon.store.close()
    return n / elapsed


def worker(args) -> int:
    rows = []
    for r in range(args.rounds):
        bare = bare_loop(args.bootstrap, args.records, f"bare-{args.crc}-{r}", args.max_poll_records)
        with tempfile.TemporaryDirectory() as tmp:
            daemon = daemon_loop(
                args.bootstrap,
                args.records,
                f"daemon-{args.crc}-{r}",
                args.max_poll_records,
                Path(tmp) / "state",
            )
        rows.append(
            {"crc": args.crc, "round": r + 1, "bare_rps": bare, "daemon_rps": daemon, "ratio": daemon / bare}
        )
    print(json.dumps(rows))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-poll-records", type=int, default=2000)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", default=None, help=argparse.SUPPRESS)
    p.add_argument("--crc", choices=["c", "python"], default="c", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    kit = _kit()
    rows = []
    with kit.LocalKafka(heap_mb=768) as broker:
        avg_bytes = fill_topic(broker.bootstrap, args.records, args.partitions)
        for crc in ("c", "python"):
            env = {**os.environ, "DISTILLD_BENCH_PURE_PYTHON_CRC": "1" if crc == "python" else "0"}
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--crc",
                    crc,
                    "--bootstrap",
                    broker.bootstrap,
                    "--records",
                    str(args.records),
                    "--rounds",
                    str(args.rounds),
                    "--max-poll-records",
                    str(args.max_poll_records),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            rows.extend(json.loads(out.stdout.strip().splitlines()[-1]))
    for row in rows:
        print(
            f"crc={row['crc']:<6} round {row['round']}: bare {row['bare_rps']:,.0f} rec/s  "
            f"daemon {row['daemon_rps']:,.0f} rec/s  ratio {row['ratio']:.2f}"
        )
    summary = {
        "records": args.records,
        "avg_record_bytes": avg_bytes,
        "rounds": rows,
        "median": {
            crc: {
                key: statistics.median(r[key] for r in rows if r["crc"] == crc)
                for key in ("bare_rps", "daemon_rps", "ratio")
            }
            for crc in ("c", "python")
        },
    }
    print(json.dumps(summary["median"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

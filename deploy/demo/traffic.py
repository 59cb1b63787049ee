"""The serving side of the demo: real predictions from the served champion, logged to Kafka.

Texts come from WordNet glosses of class mix A, then mix B (the drift). Each
batch is sent to the reference serving consumer's ``/predict``, so the logged
student logits and ``model_version`` are whatever is being served at that
moment, before and after the hot swap. A shadow sample carries the teacher's
logits and a few records carry their label, as feedback would.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
from kafka import KafkaProducer

MODEL = "intent-classifier"


class ServingTraffic:
    def __init__(
        self,
        pools: dict[str, list[dict]],
        serving_url: str,
        bootstrap: str,
        topic: str,
        shadow_fraction: float = 0.3,
        label_fraction: float = 0.05,
        records_per_s: float = 250.0,
        batch_records: int = 50,
        seed: int = 0,
    ):
        self.pools = pools
        self.serving_url = serving_url
        self.topic = topic
        self.shadow_fraction = shadow_fraction
        self.label_fraction = label_fraction
        self.records_per_s = records_per_s
        self.batch_records = batch_records
        self.rng = np.random.default_rng(seed)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
        self.mix = "A"
        self.sent = 0
        self.sent_by_mix: dict[str, int] = defaultdict(int)
        # (mix, served version) -> [records, records whose prediction equals the teacher's]
        self.agreement: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.served_version: str | None = None
        self.drift_onset: float | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.producer.flush(timeout=10)
        self.producer.close(timeout=10)

    def shift_to(self, mix: str) -> None:
        self.mix = mix
        self.drift_onset = time.time()

    def agreement_rate(self, mix: str, version: str) -> tuple[float | None, int]:
        n, agree = self.agreement.get((mix, version), (0, 0))
        return (agree / n if n else None), n

    def _predict(self, texts: list[str]) -> tuple[str, np.ndarray]:
        req = urllib.request.Request(
            f"{self.serving_url}/predict",
            data=json.dumps({"texts": texts}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            doc = json.loads(resp.read())
        return str(doc["version"]), np.asarray(doc["probabilities"], dtype=np.float64)

    def _run(self) -> None:
        interval = self.batch_records / self.records_per_s
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._send_batch()
            except Exception as err:  # the demo shows it and keeps trying: serving may be swapping
                self.error = f"{type(err).__name__}: {err}"
                self._stop.wait(1.0)
                continue
            self._stop.wait(max(0.0, interval - (time.monotonic() - began)))

    def _send_batch(self) -> None:
        mix = self.mix
        pool = self.pools[mix]
        rows = [pool[i] for i in self.rng.integers(len(pool), size=self.batch_records)]
        version, probs = self._predict([r["text"] for r in rows])
        self.served_version = version
        logits = np.log(np.clip(probs, 1e-9, None))
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        stats = self.agreement[(mix, version)]
        for row, student in zip(rows, logits, strict=True):
            teacher = np.asarray(row["teacher_logits"])
            stats[0] += 1
            stats[1] += int(student.argmax() == teacher.argmax())
            record = {
                "request_id": uuid.uuid4().hex,
                "ts": now,
                "model": MODEL,
                "model_version": version,
                "input": {"text": row["text"]},
                "student": {"logits": student.round(5).tolist()},
                "prediction": int(student.argmax()),
                "latency_ms": 5.0,
            }
            if self.rng.random() < self.shadow_fraction:
                record["teacher"] = {"logits": teacher.round(5).tolist()}
            if self.rng.random() < self.label_fraction:
                record["label"] = int(row["label"])
            self.producer.send(self.topic, json.dumps(record).encode())
        self.sent += len(rows)
        self.sent_by_mix[mix] += len(rows)

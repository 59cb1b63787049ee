"""distilld end to end, on the embedded default stack: `make demo`.

1. starts the local Kafka broker (deploy/kafka) and uses a local MLflow store;
2. builds (first run) or reuses the real teacher/student pair: MiniLM-L6 teacher
   with a head trained on WordNet glosses, 2-layer student distilled on mix A;
   registers the student as champion;
3. starts the reference serving consumer, and traffic that plays the serving
   side: WordNet texts, the served student's logits, teacher logits on a
   shadow sample, some labels; partway through the class mix shifts to B;
4. runs `distilld run` with deploy/examples/demo.yaml;
5. shows, as it happens, window scores, decisions, the re-distillation's
   progress, the gate's verdict, the CloudEvent and the serving reload;
6. ends with a summary and a picture (var/demo/timeline.png).

Ctrl-C at any point stops everything it started.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from traffic import MODEL, ServingTraffic  # noqa: E402

from distilld.daemon.decision_record import DecisionRecord, format_decision  # noqa: E402
from distilld.daemon.drift_monitor import SCORED_KIND  # noqa: E402
from distilld.daemon.state_store import StateStore  # noqa: E402
from distilld.daemon.timeline_plot import plot_timeline  # noqa: E402
from distilld.trainers.pair_bootstrap import bootstrap_pair, default_cache_dir  # noqa: E402

CONFIG = REPO / "deploy" / "examples" / "demo.yaml"
TOPIC = "inference-logs"
EVENTS_TOPIC = "model-events"
SHOWN_METRICS = ("divergence.agreement_drop", "prediction.class_js", "input.ngram_js")


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self) -> None:
        self.t0 = time.time()

    def say(self, kind: str, text: str) -> None:
        elapsed = time.time() - self.t0
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {kind:<9} {text}", flush=True)


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _wait(predicate, timeout_s: float, what: str, stop: threading.Event):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    if stop.is_set():
        raise KeyboardInterrupt
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.clock = Clock()
        self.stop = threading.Event()
        self.work = REPO / "var" / "demo"
        self.processes: list[subprocess.Popen] = []
        self.broker = None
        self.traffic: ServingTraffic | None = None
        self.events: list[dict] = []
        self.marks: list[tuple[float, str]] = []
        self.trip_ts: float | None = None
        self.promoted_ts: float | None = None
        self.swapped_ts: float | None = None
        self.retrain_outcome: dict | None = None

    # set-up -------------------------------------------------------------------
    def _start(self, cmd: list[str], log_name: str, env: dict | None = None) -> subprocess.Popen:
        log = (self.work / log_name).open("ab")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        log.close()
        self.processes.append(proc)
        return proc

    def setup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        kit = _load_module("kafka_kit", REPO / "deploy" / "kafka" / "broker.py")
        self.clock.say("setup", "starting the local Kafka broker (Apache Kafka 4.1, KRaft, 127.0.0.1)")
        self.broker = kit.LocalKafka(work_dir=self.work / "kafka", heap_mb=512).start()
        self.clock.say("setup", f"kafka ready at {self.broker.bootstrap}")

        cache = self.args.pair_cache or default_cache_dir()
        self.clock.say(
            "models",
            f"teacher/student pair from {cache} (built there first if missing or stale: a few minutes on 2 cores)",
        )
        self.pair = bootstrap_pair(cache)
        info = self.pair.info
        self.clock.say(
            "models",
            f"teacher: MiniLM-L6 + WordNet head, held-out accuracy {info['teacher_heldout_accuracy']:.1%} on 45 classes",
        )
        self.clock.say(
            "models", f"student: first {info['config']['student_layers']} layers, distilled on mix A"
        )

        self.http_port = kit.free_port()
        self.serving_port = kit.free_port()
        state_dir = self.work / "state"
        self.tracking_uri = f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"
        self.env = {
            "DISTILLD_KAFKA__BOOTSTRAP_SERVERS": json.dumps([self.broker.bootstrap]),
            "DISTILLD_HTTP__PORT": str(self.http_port),
            "DISTILLD_STATE__STATE_DIR": str(state_dir),
            "DISTILLD_TRAINER__TEACHER__KIND": "local",
            "DISTILLD_TRAINER__TEACHER__MODEL_PATH": str(self.pair.teacher_dir),
            "DISTILLD_TRAINER__GOLDEN_SET_PATH": str(self.pair.champion_snapshot_dir),
        }
        cli = [sys.executable, "-m", "distilld.daemon"]
        self.clock.say("registry", f"registering the student as champion in MLflow ({self.tracking_uri})")
        reg = subprocess.run(
            [*cli, "register-base", "-c", str(CONFIG), "--model", MODEL, str(self.pair.student_dir)],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
        )
        if reg.returncode != 0:
            raise RuntimeError(f"register-base failed:\n{reg.stderr[-3000:]}")
        self.clock.say("registry", f"{MODEL} v{json.loads(reg.stdout)['version']} is champion")

        self._start(
            [
                sys.executable,
                str(REPO / "deploy" / "examples" / "serving_consumer.py"),
                "--model",
                MODEL,
                "--tracking-uri",
                self.tracking_uri,
                "--bootstrap",
                self.broker.bootstrap,
                "--topic",
                EVENTS_TOPIC,
                "--port",
                str(self.serving_port),
            ],
            "serving.log",
        )
        self.serving_url = f"http://127.0.0.1:{self.serving_port}"
        health = _wait(lambda: _get(f"{self.serving_url}/healthz"), 180, "the serving consumer", self.stop)
        self.clock.say("serving", f"reference serving consumer up, serving v{health['version']}")

        self._start([*cli, "run", "-c", str(CONFIG)], "daemon.log", self.env)
        self.daemon_url = f"http://127.0.0.1:{self.http_port}"
        _wait(lambda: _get(f"{self.daemon_url}/healthz"), 180, "the daemon", self.stop)
        self.clock.say(
            "daemon", f"distilld run up ({self.daemon_url}/status, log: {self.work / 'daemon.log'})"
        )
        self.store = StateStore(state_dir / "state.sqlite")

        threading.Thread(target=self._watch_events, daemon=True).start()
        self.traffic = ServingTraffic(
            {"A": self.pair.pool("A"), "B": self.pair.pool("B")},
            self.serving_url,
            self.broker.bootstrap,
            TOPIC,
            shadow_fraction=self.args.shadow_fraction,
            records_per_s=self.args.records_per_s,
        )

    def _watch_events(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            EVENTS_TOPIC, bootstrap_servers=self.broker.bootstrap, auto_offset_reset="earliest"
        )
        while not self.stop.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                for m in records:
                    event = json.loads(m.value)
                    self.events.append(event)
                    data = event["data"]
                    self.clock.say(
                        "event",
                        f"CloudEvent {event['type']} {data['model']} v{data['version']} "
                        f"alias={data['alias']} manifest sha256={str(data.get('manifest_sha256'))[:12]}…",
                    )
        consumer.close()

    # the live view ------------------------------------------------------------
    def _show_new_journal(self, last: dict[str, int]) -> None:
        for entry in self.store.journal(SCORED_KIND, after_id=last["scored"], limit=50):
            last["scored"] = entry["id"]
            p = entry["payload"]
            parts = []
            for metric in SHOWN_METRICS:
                s = p["scores"].get(metric)
                if s is None:
                    continue
                thr = "-" if s["threshold"] is None else f"{s['threshold']:.3f}"
                flag = " BREACH" if s["breached"] else ""
                parts.append(f"{metric}={s['value']:.3f}/{thr}{flag}")
            self.clock.say("window", f"v{p['version']} #{p['window']['id']}: " + "  ".join(parts))
        for entry in self.store.journal("decision", after_id=last["decision"], limit=50):
            last["decision"] = entry["id"]
            record = DecisionRecord.from_dict(entry["payload"])
            if record.kind in ("rule_breaching", "rule_clearing"):
                continue
            self.clock.say("decision", format_decision(record))
            if record.kind == "rule_tripped" and self.trip_ts is None:
                self.trip_ts = record.ts
                self.marks.append((record.ts, f"tripped: {record.rule}"))
            if record.kind == "retrain_started":
                self.marks.append((record.ts, "re-distillation started"))
            if record.kind == "retrain_finished":
                self.marks.append((record.ts, "retrain finished"))
                self.retrain_outcome = record.governor
        for entry in self.store.journal("reference_built", after_id=last["reference"], limit=10):
            last["reference"] = entry["id"]
            p = entry["payload"]
            self.clock.say(
                "reference", f"v{p['version']}: reference of {p['records']} records built and calibrated"
            )

    def _show_training(self, bar_state: dict) -> None:
        doc = _get(f"{self.daemon_url}/status")
        jobs = (doc or {}).get("retrains", {}).get("jobs", [])
        if not jobs:
            return
        p = jobs[0].get("progress") or {}
        phase = p.get("phase", "starting")
        now = time.monotonic()
        if phase == bar_state.get("phase") and now - bar_state.get("at", 0) < 15:
            return
        bar_state.update(phase=phase, at=now)
        if phase == "train" and p.get("samples_total"):
            done = p["samples_done"] / p["samples_total"]
            bar = "#" * int(done * 20) + "-" * (20 - int(done * 20))
            eta = p.get("eta_s")
            self.clock.say(
                "training",
                f"[{bar}] {done:4.0%} epoch {p['epoch']}/{p['epochs']} loss {p['loss']:.3f} "
                f"{p['samples_per_s']:.0f} samples/s" + (f" ETA {eta:.0f}s" if eta is not None else ""),
            )
        else:
            self.clock.say("training", f"job {jobs[0]['job_id']}: {phase}")

    def run(self) -> dict:
        self.setup()
        self.traffic.start()
        self.clock.say("traffic", f"serving traffic of mix A at ~{self.args.records_per_s:.0f} records/s")
        last = {"scored": 0, "decision": 0, "reference": 0}
        bar_state: dict = {}
        shift_after = self.args.shift_after_records
        deadline = time.monotonic() + self.args.timeout_s
        post_swap_until = None
        while not self.stop.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the demo ran past --timeout-s without a promotion")
            self._show_new_journal(last)
            self._show_training(bar_state)
            training = self.trip_ts is not None and self.swapped_ts is None
            # two cores serve traffic, run the daemon and train: while the job
            # runs, traffic slows so the demo's training is not starved
            self.traffic.records_per_s = (
                self.args.records_per_s_training if training else self.args.records_per_s
            )
            if self.traffic.error:
                self.clock.say("traffic", f"retrying: {self.traffic.error}")
                self.traffic.error = None
            if self.traffic.mix == "A" and self.traffic.sent >= shift_after:
                self.traffic.shift_to("B")
                self.marks.append((time.time(), "drift: mix A → B"))
                self.clock.say("DRIFT", f"after {self.traffic.sent} records the class mix shifts to B")
            promoted = [
                e
                for e in self.events
                if e["type"] == "distilld.model.promoted" and e["data"]["version"] != "1"
            ]
            if promoted and self.promoted_ts is None:
                self.promoted_ts = time.time()
                self.marks.append((self.promoted_ts, f"promoted v{promoted[0]['data']['version']}"))
            served = self.traffic.served_version
            if self.promoted_ts and served and served != "1" and self.swapped_ts is None:
                self.swapped_ts = time.time()
                self.clock.say("serving", f"the serving consumer reloaded: now serving v{served}")
                post_swap_until = self.traffic.sent_by_mix["B"] + self.args.post_swap_records
            if post_swap_until is not None and self.traffic.sent_by_mix["B"] >= post_swap_until:
                break
            outcome = (self.retrain_outcome or {}).get("outcome")
            if outcome in ("challenger", "failed"):
                details = self.retrain_outcome.get("details", {})
                self.clock.say(
                    "gate",
                    f"no promotion: the candidate was {outcome} ({details.get('reason') or details.get('error')}); "
                    "the rule asks again after the cooldown. The summary below is the champion's.",
                )
                break
            time.sleep(1.0)
        self._show_new_journal(last)
        return self.summary()

    def summary(self) -> dict:
        onset = self.traffic.drift_onset
        before, n_before = self.traffic.agreement_rate("B", "1")
        new_version = self.traffic.served_version
        after, n_after = self.traffic.agreement_rate("B", new_version)
        a_before, _ = self.traffic.agreement_rate("A", "1")
        a_after, n_a_after = self.traffic.agreement_rate("A", new_version)
        scored = self.store.journal(SCORED_KIND, limit=10_000)
        picture = plot_timeline(
            scored, self.marks, self.clock.t0, self.work / "timeline.png", "seconds since the demo started"
        )
        result = {
            "drift_onset_to_trip_s": None if self.trip_ts is None else round(self.trip_ts - onset, 1),
            "drift_onset_to_promotion_s": None
            if self.promoted_ts is None
            else round(self.promoted_ts - onset, 1),
            "drift_onset_to_serving_swap_s": None
            if self.swapped_ts is None
            else round(self.swapped_ts - onset, 1),
            "teacher_agreement_on_mix_B": {
                "v1": before,
                "records_v1": n_before,
                f"v{new_version}": after,
                f"records_v{new_version}": n_after,
            },
            "teacher_agreement_on_mix_A_v1": a_before,
            "records_sent": self.traffic.sent,
            "demo_wall_s": round(time.time() - self.clock.t0, 1),
            "picture": str(picture),
        }
        if n_a_after:
            result[f"teacher_agreement_on_mix_A_v{new_version}"] = a_after
        print("\n=== summary ===")
        if new_version == "1":
            print(
                f"teacher agreement on the new traffic (mix B): v1 {before:.1%} ({n_before} records); no new champion"
            )
        else:
            print(
                f"teacher agreement on the new traffic (mix B): v1 {before:.1%} ({n_before} records) "
                f"-> v{new_version} {after:.1%} ({n_after} records)"
            )
        print(
            f"drift onset -> rule tripped: {result['drift_onset_to_trip_s']} s; -> promoted: "
            f"{result['drift_onset_to_promotion_s']} s; -> serving swapped: {result['drift_onset_to_serving_swap_s']} s"
        )
        print(f"picture of the metrics over time: {picture}")
        print(
            f"the daemon's decisions: distilld decisions -c {CONFIG} (with DISTILLD_STATE__STATE_DIR={self.work / 'state'})"
        )
        (self.work / "summary.json").write_text(json.dumps(result, indent=2))
        return result

    def cleanup(self) -> None:
        self.stop.set()
        if self.traffic is not None:
            self.traffic.stop()
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.broker is not None:
            self.broker.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records-per-s", type=float, default=250.0, help="traffic rate")
    p.add_argument(
        "--records-per-s-training", type=float, default=25.0, help="traffic rate while a retrain runs"
    )
    p.add_argument("--shift-after-records", type=int, default=8000, help="records of mix A before the drift")
    p.add_argument(
        "--post-swap-records", type=int, default=1500, help="mix-B records served by the new champion"
    )
    p.add_argument("--shadow-fraction", type=float, default=0.3, help="share of records with teacher logits")
    p.add_argument(
        "--pair-cache", type=Path, default=None, help="teacher/student cache (default ~/.cache/distilld/pair)"
    )
    p.add_argument("--timeout-s", type=float, default=1500.0)
    args = p.parse_args()
    demo = Demo(args)
    signal.signal(signal.SIGTERM, lambda *_: demo.stop.set())
    try:
        demo.run()
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started", flush=True)
        return 130
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())

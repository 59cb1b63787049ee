"""Reference serving consumer for distilld: serve the champion, hot-swap on model events.

Copy this file into your serving service. It depends on mlflow, kafka-python,
torch and transformers, not on distilld.

What it does:

1. At start it remembers the end of the ``model-events`` topic, then loads the
   ``champion`` alias from the MLflow registry, checking every file against the
   model's ``manifest.json`` and the manifest against the digest recorded on
   the model version (tag ``distilld.manifest_sha256``).
2. It serves ``POST /predict`` ``{"texts": [...]}`` → ``{"model", "version",
   "predictions", "probabilities"}`` and ``GET /healthz`` on a threaded HTTP server.
3. A background thread reads CloudEvents from the topic (every replica reads
   every event: partitions are assigned, there is no consumer group). For an
   event about this model's champion (``distilld.model.promoted`` or
   ``distilld.model.rolled_back``) it downloads ``data.artifact_uri``, checks
   each file against ``data.sha256`` and the manifest against
   ``data.manifest_sha256``, loads the model next to the serving one, and then
   swaps a single reference. A request reads that reference once, so requests
   in flight finish on the old model and none is dropped. A model that fails
   its hash check is refused and the old one keeps serving.

Run: ``python serving_consumer.py --model intent --tracking-uri http://mlflow:5000
--bootstrap kafka:9092 --port 8080``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

logger = logging.getLogger("serving_consumer")

CHAMPION_EVENTS = {"distilld.model.promoted", "distilld.model.rolled_back"}
MANIFEST = "manifest.json"
MANIFEST_TAG = "distilld.manifest_sha256"


class HashMismatch(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, as recorded by distilld."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify(folder: Path, sha256: dict[str, str], expected_manifest_digest: str) -> None:
    """Every listed file matches, nothing unlisted is present, the manifest is the registered one."""
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest_digest(manifest) != expected_manifest_digest:
        raise HashMismatch(f"{folder}/{MANIFEST} is not the registered manifest")
    if {rel: entry["sha256"] for rel, entry in manifest["files"].items()} != sha256:
        raise HashMismatch("the announced sha256 map differs from the model's manifest")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    if present != set(sha256):
        raise HashMismatch(f"files differ from the manifest: {sorted(present ^ set(sha256))}")
    bad = sorted(rel for rel, expected in sha256.items() if sha256_file(folder / rel) != expected)
    if bad:
        raise HashMismatch(f"sha256 mismatch: {bad}")


@dataclass
class LoadedModel:
    version: str
    folder: Path
    tokenizer: Any
    model: Any

    def predict(self, texts: list[str]) -> tuple[list[int], list[list[float]]]:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            probs = torch.softmax(self.model(**batch).logits, dim=-1)
        return probs.argmax(dim=-1).tolist(), probs.tolist()


def load(bundle: Path, version: str) -> LoadedModel:
    """Load the Hugging Face model of a distilld bundle (its ``model/`` folder)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(bundle / "model")
    model.eval()
    return LoadedModel(version, bundle, AutoTokenizer.from_pretrained(bundle / "model"), model)


class ServingConsumer:
    def __init__(
        self,
        model_name: str,
        tracking_uri: str,
        bootstrap: str | None,
        topic: str = "model-events",
        host: str = "127.0.0.1",
        port: int = 8080,
        work_dir: Path | None = None,
    ):
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.bootstrap = bootstrap
        self.topic = topic
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="serving-"))
        self.current: LoadedModel | None = None
        self.swaps: list[str] = []
        self.refused: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._consumer = None
        self._threads: list[threading.Thread] = []
        self._http = ThreadingHTTPServer((host, port), self._handler())
        self._http.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def _fetch(self, artifact_uri: str, version: str) -> Path:
        import mlflow.artifacts

        dest = self.work_dir / f"v{version}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(dest), tracking_uri=self.tracking_uri
        )
        return Path(local)

    def _load_champion_from_registry(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        mv = client.get_model_version_by_alias(self.model_name, "champion")
        folder = self._fetch(f"runs:/{mv.run_id}/bundle", str(mv.version))
        manifest = json.loads((folder / MANIFEST).read_text())
        verify(
            folder, {rel: entry["sha256"] for rel, entry in manifest["files"].items()}, mv.tags[MANIFEST_TAG]
        )
        self._swap(load(folder, str(mv.version)))

    def _swap(self, new: LoadedModel) -> None:
        old, self.current = self.current, new
        self.swaps.append(new.version)
        logger.info("serving model %s v%s", self.model_name, new.version)
        if old is not None and old.folder != new.folder:
            # In-flight requests hold a reference to ``old``; its files are no longer needed on disk.
            shutil.rmtree(old.folder.parent, ignore_errors=True)

    def handle_event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event.get("type") not in CHAMPION_EVENTS or data.get("model") != self.model_name:
            return
        if data.get("alias") != "champion":
            return
        version = str(data["version"])
        if self.current is not None and self.current.version == version:
            return
        try:
            folder = self._fetch(data["artifact_uri"], version)
            verify(folder, data["sha256"], data["manifest_sha256"])
        except HashMismatch as exc:
            logger.error("refusing %s v%s: %s", self.model_name, version, exc)
            self.refused.append((version, str(exc)))
            shutil.rmtree(self.work_dir / f"v{version}", ignore_errors=True)
            return
        self._swap(load(folder, version))

    def _consume(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:
                        self.handle_event(json.loads(record.value))
                    except Exception:
                        # One bad event (unreachable store, unloadable model) must not stop the loop.
                        logger.exception("model event at offset %s not applied", record.offset)

    def start(self, listen_kafka: bool = True) -> None:
        """Load the champion and serve. ``listen_kafka=False``: events arrive through ``handle_event``
        instead (e.g. from your own webhook endpoint, after checking ``X-Distilld-Signature``)."""
        if listen_kafka:
            from kafka import KafkaConsumer, TopicPartition

            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
            )
            partitions = self._consumer.partitions_for_topic(self.topic) or {0}
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self._consumer.assign(assigned)
            # Position at the end before reading the registry: an event published in between is still seen.
            self._consumer.seek_to_end(*assigned)
            for tp in assigned:
                self._consumer.position(tp)
        self._load_champion_from_registry()
        targets = [self._http.serve_forever] + ([self._consume] if listen_kafka else [])
        for target in targets:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._consumer is not None:
            self._consumer.close()

    def _handler(self):
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != "/healthz":
                    self._reply(404, {"error": "not found"})
                    return
                model = consumer.current
                self._reply(
                    200 if model else 503, {"model": consumer.model_name, "version": model and model.version}
                )

            def do_POST(self) -> None:
                if self.path != "/predict":
                    self._reply(404, {"error": "not found"})
                    return
                try:
                    texts = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))["texts"]
                except (ValueError, KeyError, TypeError):
                    self._reply(400, {"error": 'expected {"texts": [...]}'})
                    return
                model = consumer.current  # read once: a swap during this request does not affect it
                predictions, probabilities = model.predict(texts)
                self._reply(
                    200,
                    {
                        "model": consumer.model_name,
                        "version": model.version,
                        "predictions": predictions,
                        "probabilities": probabilities,
                    },
                )

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="model-events")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    consumer = ServingConsumer(
        args.model, args.tracking_uri, args.bootstrap, args.topic, args.host, args.port
    )
    consumer.start()
    logger.info("serving %s on %s", args.model, consumer.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        consumer.stop()


if __name__ == "__main__":
    main()

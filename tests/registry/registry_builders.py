"""Builders for the registry tests: tiny real Hugging Face models and trainer-format export folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NUM_LABELS = 3
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"abcdefghijklmnopqrstuvwxyz",
    "where",
    "is",
    "my",
    "parcel",
]


def write_tiny_model(folder: Path, seed: int) -> Path:
    """A randomly initialised 1-layer BERT classifier with a real tokenizer (a few KB)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder.parent / f"vocab-{seed}.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=NUM_LABELS,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(vocab_file)).save_pretrained(folder)
    vocab_file.unlink()
    return folder


def split_metrics(agreement: float, n: int = 200) -> dict[str, Any]:
    """One split in the trainer's format (``trainers/evaluate.py``), no labels."""
    return {
        "n_records": n,
        "n_with_teacher": n,
        "n_with_label": 0,
        "teacher_agreement": agreement,
        "mean_kl_to_teacher": round(1.0 - agreement, 4),
        "accuracy": None,
        "ece": None,
    }


def metrics_doc(
    candidate_holdout: float,
    champion_holdout: float,
    candidate_replay: float = 0.9,
    champion_replay: float = 0.9,
) -> dict[str, Any]:
    """A metrics.json as the trainer writes it (``trainers/run_job.py``)."""
    return {
        "job_id": "job-test",
        "model": "intent",
        "method": "lora",
        "candidate": {"holdout": split_metrics(candidate_holdout), "replay": split_metrics(candidate_replay)},
        "champion": {"holdout": split_metrics(champion_holdout), "replay": split_metrics(champion_replay)},
        "training": {"steps": 10, "final_loss": 0.5},
    }


def write_export(folder: Path, seed: int, metrics: dict[str, Any]) -> Path:
    """A candidate folder written by the trainer's own exporter, from a tiny LoRA-wrapped model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distilld.trainers.export import export_candidate

    source = write_tiny_model(folder.parent / f"{folder.name}-source", seed)
    model = AutoModelForSequenceClassification.from_pretrained(source)
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    spec = {"job_id": "job-test", "model": "intent", "hyperparameters": {"lora_rank": 2, "epochs": 1}}
    export_candidate(lora, AutoTokenizer.from_pretrained(source), folder, metrics, json.dumps(spec))
    return folder


class Receiver:
    """A real HTTP server on 127.0.0.1 that records POSTs; ``fail_next`` answers 503 that many times."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[bytes]:
        with self._lock:
            return [body for p, _, body in self.requests if p == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def read_events(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    """Read ``expected`` records from the start of ``topic`` with a real consumer."""
    import time

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` subprocess on 127.0.0.1; the port is fixed up front so it can start late."""

    def __init__(self, work_dir: Path, artifacts_destination: str, env: dict[str, str]):
        self.work_dir = work_dir
        self.artifacts_destination = artifacts_destination
        self.env = env
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        import os
        import subprocess
        import sys
        import time

        import requests

        if self.process is not None:
            return
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        command = [
            str(mlflow_bin), "server",
            "--backend-store-uri", f"sqlite:///{self.work_dir / 'server.db'}",
            "--artifacts-destination", self.artifacts_destination,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log_path = self.work_dir / "mlflow-server.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"mlflow server exited: {log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError("mlflow server did not become healthy")

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self.process is None:
            return
        # The server forks workers into its own session; end exactly that process group.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


def load_serving_consumer():
    """The reference consumer is a script under deploy/examples/, not a package module."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "serving_consumer.py"
    spec = importlib.util.spec_from_file_location("serving_consumer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

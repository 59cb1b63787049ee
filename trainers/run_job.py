"""One re-distillation job, from a snapshot folder to an exported, evaluated candidate.

Steps: fetch the snapshot; fill missing teacher targets; apply the
missing-teacher policy; train on the recent traffic plus the training part of
the replay sample (LoRA on the champion, or full fine-tuning); evaluate the
candidate and the champion on the fresh holdout and on the held-back part of
the replay sample; export. ``run_job`` never raises for a failed job: the
error comes back in the ``JobResult`` (and in ``result.json``).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilld.trainers.dataset import encode_split
from distilld.trainers.device import resolve_device
from distilld.trainers.evaluate import split_metrics
from distilld.trainers.export import export_candidate
from distilld.trainers.inference import predict_logits
from distilld.trainers.job_spec import JobSpec
from distilld.trainers.lora import parameter_counts, wrap_with_lora
from distilld.trainers.progress import ProgressFile
from distilld.trainers.snapshot import Split, fetch_snapshot, read_snapshot
from distilld.trainers.teacher import apply_missing_teacher_policy, fill_teacher_targets, make_teacher
from distilld.trainers.train_loop import seed_everything, train

log = logging.getLogger(__name__)


class JobResult(BaseModel):
    job_id: str
    model: str
    status: Literal["succeeded", "failed"]
    error: str | None = Field(None, description="Exception type and message when the job failed.")
    traceback: str | None = None
    candidate_dir: Path | None = None
    metrics: dict = Field(default_factory=dict, description="Contents of the candidate's metrics.json.")
    wall_s: float = 0.0


def _in_eval_part(request_id: str, fraction: float) -> bool:
    # stable across runs and machines, unlike Python's salted hash()
    h = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def split_replay(replay: Split, eval_fraction: float) -> tuple[Split, Split]:
    """(training part, evaluation part) of the replay sample, chosen by request_id."""
    in_eval = np.fromiter((_in_eval_part(r, eval_fraction) for r in replay.request_ids), bool, len(replay))
    return replay.select(~in_eval), replay.select(in_eval)


def _evaluate(model, tokenizer, splits: dict[str, Split], spec: JobSpec, device) -> dict:
    hp = spec.hyperparameters
    return {
        name: split_metrics(
            predict_logits(
                model, tokenizer, split.texts, device, hp.eval_batch_size_records, hp.max_length_tokens
            ),
            split,
        ).to_dict()
        for name, split in splits.items()
        if len(split)
    }


def _execute(spec: JobSpec, progress: ProgressFile, started: float) -> JobResult:
    hp = spec.hyperparameters
    deadline = started + spec.time_limit_s
    seed_everything(hp.seed)
    device = resolve_device(spec.device)
    if spec.cpu_threads is not None:
        torch.set_num_threads(spec.cpu_threads)
    progress.phase("loading")
    with tempfile.TemporaryDirectory(prefix="distilld-snapshot-") as tmp:
        snapshot = read_snapshot(fetch_snapshot(spec.snapshot_uri, Path(tmp), spec.s3_endpoint_url))
    replay_train, replay_eval = split_replay(snapshot.replay, hp.replay_eval_fraction)

    progress.phase("teacher")
    teacher = make_teacher(spec.teacher, device)
    splits = {
        "train": snapshot.train,
        "replay_train": replay_train,
        "holdout": snapshot.holdout,
        "replay": replay_eval,
    }
    teacher_report = {name: asdict(fill_teacher_targets(split, teacher)) for name, split in splits.items()}
    del teacher
    train_split = Split.concat([snapshot.train, replay_train])
    train_split, dropped = apply_missing_teacher_policy(train_split, spec.missing_teacher_policy)
    labels_only = int((~train_split.has_teacher).sum())
    log.info(
        "training data ready",
        extra={
            "job_id": spec.job_id,
            "records": len(train_split),
            "dropped": dropped,
            "labels_only": labels_only,
        },
    )

    tokenizer = AutoTokenizer.from_pretrained(spec.base_student_path)
    model = AutoModelForSequenceClassification.from_pretrained(spec.base_student_path)
    if model.config.num_labels != snapshot.n_classes:
        raise ValueError(
            f"student has {model.config.num_labels} classes, the snapshot has {snapshot.n_classes}"
        )
    if hp.method == "lora":
        model = wrap_with_lora(model, hp)
    elif hp.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    trainable, total = parameter_counts(model)

    progress.phase("train")
    stats = train(
        model, encode_split(tokenizer, train_split, hp.max_length_tokens), hp, device, progress, deadline
    )

    progress.phase("evaluate")
    eval_splits = {"holdout": snapshot.holdout, "replay": replay_eval}
    champion = AutoModelForSequenceClassification.from_pretrained(spec.base_student_path).to(device)
    champion_metrics = _evaluate(champion, tokenizer, eval_splits, spec, device)
    del champion
    metrics = {
        "job_id": spec.job_id,
        "model": spec.model,
        "method": hp.method,
        "device": device.type,
        "candidate": _evaluate(model, tokenizer, eval_splits, spec, device),
        "champion": champion_metrics,
        "data": {
            "snapshot": snapshot.meta,
            "teacher_targets": teacher_report,
            "missing_teacher_policy": spec.missing_teacher_policy,
            "train_records": len(train_split),
            "dropped_no_teacher": dropped,
            "trained_on_labels_only": labels_only,
            "replay_train_records": len(replay_train),
            "replay_eval_records": len(replay_eval),
        },
        "parameters": {"trainable": trainable, "total": total, "trainable_share": trainable / total},
        "training": asdict(stats),
    }

    progress.phase("export")
    export_candidate(model.cpu(), tokenizer, spec.candidate_dir, metrics, spec.model_dump_json(indent=2))
    return JobResult(
        job_id=spec.job_id,
        model=spec.model,
        status="succeeded",
        candidate_dir=spec.candidate_dir,
        metrics=metrics,
    )


def run_job(spec: JobSpec) -> JobResult:
    """Run ``spec`` to completion; write ``progress.json`` and ``result.json`` into its output dir."""
    started = time.monotonic()
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    progress = ProgressFile(spec.progress_path)
    try:
        result = _execute(spec, progress, started)
    except Exception as err:
        log.exception("job failed", extra={"job_id": spec.job_id})
        result = JobResult(
            job_id=spec.job_id,
            model=spec.model,
            status="failed",
            error=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc(),
        )
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result.wall_s = time.monotonic() - started
    progress.update(force=True, phase=result.status)
    spec.result_path.write_text(result.model_dump_json(indent=2))
    return result

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilld.trainers.export import ManifestError, verify_manifest
from distilld.trainers.job_spec import JobSpec, TeacherSource
from distilld.trainers.run_job import run_job
from tests.trainers.builders import N_CLASSES, tiny_job_spec, write_synthetic_snapshot


def test_job_runs_from_snapshot_to_verified_export(tmp_path, tiny_student, snapshot_dir):
    spec = tiny_job_spec(tmp_path, tiny_student, snapshot_dir)
    result = run_job(spec)
    assert result.status == "succeeded", result.traceback
    manifest = verify_manifest(result.candidate_dir)
    files = set(manifest["files"])
    assert {"model/model.safetensors", "model/config.json", "metrics.json", "spec.json"} <= files
    assert any(f.startswith("adapter/adapter_model") for f in files)
    assert JobSpec.model_validate_json((result.candidate_dir / "spec.json").read_text()) == spec

    metrics = json.loads((result.candidate_dir / "metrics.json").read_text())
    for who in ("candidate", "champion"):
        for split in ("holdout", "replay"):
            m = metrics[who][split]
            assert 0.0 <= m["teacher_agreement"] <= 1.0
            assert m["mean_kl_to_teacher"] >= 0.0
            assert 0.0 <= m["ece"] <= 1.0
    assert 0 < metrics["parameters"]["trainable_share"] < 1
    assert metrics["training"]["samples"] == metrics["data"]["train_records"] * 2
    assert json.loads(spec.result_path.read_text())["status"] == "succeeded"
    assert json.loads(spec.progress_path.read_text())["phase"] == "succeeded"

    model = AutoModelForSequenceClassification.from_pretrained(result.candidate_dir / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(result.candidate_dir / "model")
    with torch.no_grad():
        assert model(**tokenizer(["where is my parcel"], return_tensors="pt")).logits.shape == (1, N_CLASSES)

    (result.candidate_dir / "metrics.json").write_text("{}")
    with pytest.raises(ManifestError, match="sha256 mismatch: metrics.json"):
        verify_manifest(result.candidate_dir)


def test_full_fine_tuning_exports_without_adapter(tmp_path, tiny_bert, snapshot_dir):
    spec = tiny_job_spec(tmp_path, tiny_bert, snapshot_dir)
    spec.hyperparameters.method = "full"
    result = run_job(spec)
    assert result.status == "succeeded", result.traceback
    assert not (result.candidate_dir / "adapter").exists()
    assert result.metrics["parameters"]["trainable_share"] == 1.0


@pytest.mark.parametrize(
    ("policy", "expect_dropped", "expect_labels_only"),
    [("drop", "all_missing", 0), ("labels_only", "missing_without_label", "missing_with_label")],
)
def test_missing_teacher_targets_follow_the_policy(
    tmp_path, tiny_bert, policy, expect_dropped, expect_labels_only
):
    snapshot = write_synthetic_snapshot(tmp_path / "snap", n_train=64, teacher_share=0.5)
    spec = tiny_job_spec(tmp_path, tiny_bert, snapshot, missing_teacher_policy=policy)
    spec.hyperparameters.replay_eval_fraction = 0.0
    result = run_job(spec)
    assert result.status == "succeeded", result.traceback
    data = result.metrics["data"]

    train_rows = [json.loads(line) for line in (snapshot / "train.jsonl").read_text().splitlines()]
    replay_rows = [json.loads(line) for line in (snapshot / "replay.jsonl").read_text().splitlines()]
    rows = train_rows + replay_rows
    missing = [r for r in rows if r["teacher_logits"] is None]
    counts = {
        "all_missing": len(missing),
        "missing_without_label": sum(r["label"] is None for r in missing),
        "missing_with_label": sum(r["label"] is not None for r in missing),
        0: 0,
    }
    assert len(missing) > 0
    assert data["teacher_targets"]["train"]["failed"] == sum(r["teacher_logits"] is None for r in train_rows)
    assert data["dropped_no_teacher"] == counts[expect_dropped]
    assert data["trained_on_labels_only"] == counts[expect_labels_only]
    assert data["train_records"] == len(rows) - counts[expect_dropped]


def test_local_teacher_fills_missing_targets(tmp_path, tiny_bert, tiny_distilbert):
    snapshot = write_synthetic_snapshot(tmp_path / "snap", teacher_share=0.5)
    teacher = TeacherSource(kind="local", model_path=tiny_distilbert, batch_size_records=5)
    result = run_job(
        tiny_job_spec(tmp_path, tiny_bert, snapshot, teacher=teacher, missing_teacher_policy="drop")
    )
    assert result.status == "succeeded", result.traceback
    report = result.metrics["data"]["teacher_targets"]["train"]
    assert report["filled"] > 0 and report["failed"] == 0
    assert result.metrics["data"]["dropped_no_teacher"] == 0


def test_bad_snapshot_fails_with_the_error(tmp_path, tiny_bert):
    result = run_job(tiny_job_spec(tmp_path, tiny_bert, tmp_path / "nowhere"))
    assert result.status == "failed"
    assert "FileNotFoundError" in result.error
    assert json.loads((tmp_path / "job" / "result.json").read_text())["status"] == "failed"

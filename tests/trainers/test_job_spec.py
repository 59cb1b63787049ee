from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from distilld.trainers.config import TrainerConfig
from distilld.trainers.job_spec import JobSpec, TeacherSource


def test_spec_from_trainer_config_round_trips_through_json(tmp_path):
    config = TrainerConfig(
        teacher=TeacherSource(kind="http", url="http://teacher:8080/logits", max_concurrency=2),
        missing_teacher_policy="drop",
        job_time_limit_s=120,
    )
    spec = config.job_spec(
        job_id="intent-7-1",
        model="intent",
        base_student_path=Path("/m"),
        snapshot_uri="s3://b/p",
        output_dir=tmp_path,
    )
    spec.write(tmp_path / "spec.json")
    again = JobSpec.read(tmp_path / "spec.json")
    assert again == spec
    assert again.time_limit_s == 120 and again.teacher.max_concurrency == 2


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"job_id": "../escape"}, "job_id"),
        ({"snapshot_uri": "gs://bucket/x"}, "snapshot_uri"),
        ({"teacher": {"kind": "http"}}, "teacher"),
        ({"hyperparameters": {"alpha": 1.5}}, "hyperparameters.alpha"),
        ({"hyperparameters": {"lora_rnak": 4}}, "hyperparameters.lora_rnak"),
    ],
)
def test_bad_specs_are_rejected_with_the_field(tmp_path, fields, where):
    base = {
        "job_id": "j",
        "model": "m",
        "base_student_path": "/m",
        "snapshot_uri": "/s",
        "output_dir": str(tmp_path),
    }
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate({**base, **fields})
    assert where in str(err.value).replace("\n", ".")

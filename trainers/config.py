"""The daemon's ``trainer`` config section: training buffer, snapshots, job defaults, job runner.

Composed into the daemon's top-level config; ``job_spec`` turns it into the
``JobSpec`` of one job, so the YAML file holds the defaults and the spec file
holds the values a job actually ran with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distilld.trainers.job_spec import Hyperparameters, JobSpec, TeacherSource


class TrainerConfig(BaseModel):
    """Re-distillation: what the daemon keeps to train on, and how it runs jobs."""

    model_config = ConfigDict(extra="forbid")

    buffer_records: int = Field(
        50_000,
        ge=100,
        description="Recent valid records kept per model for re-distillation (oldest evicted).",
    )
    holdout_fraction: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Share of the (deduplicated) buffer, newest first, held out for evaluation.",
    )
    min_train_records: int = Field(
        200,
        ge=1,
        description="A retrain is skipped (and reported) when the buffer has fewer training records.",
    )
    replay_records: int = Field(
        2_000,
        ge=0,
        description="Records of earlier data mixed into each snapshot so the update does not forget.",
    )
    golden_set_path: Path | None = Field(
        None,
        description="JSONL golden set used as replay source (lines with text, label and/or teacher_logits); "
        "None: replay from the champion's training snapshot.",
    )
    teacher: TeacherSource = Field(
        default_factory=TeacherSource, description="Teacher targets for records logged without them."
    )
    missing_teacher_policy: Literal["drop", "labels_only"] = Field(
        "labels_only", description="Records with no teacher target: drop them, or train on their label only."
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="Training knobs.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Training device policy for jobs.")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads for jobs (None: torch's default)."
    )
    job_time_limit_s: float = Field(
        3600.0, gt=0, description="A job still running after this long is killed and reported as failed."
    )
    kill_grace_s: float = Field(
        10.0, ge=0, description="Wait between SIGTERM and SIGKILL when stopping a job."
    )
    max_parallel_jobs: int = Field(
        1, ge=1, description="Jobs running at once across all models (one per model at most, always)."
    )
    python_executable: str | None = Field(
        None, description="Interpreter for `python -m distilld.trainers`; None: the daemon's own."
    )
    stderr_tail_chars: int = Field(
        4_000, ge=100, description="How much of a failed job's stderr is reported."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for s3:// snapshots.")

    def job_spec(
        self, *, job_id: str, model: str, base_student_path: Path, snapshot_uri: str, output_dir: Path
    ) -> JobSpec:
        return JobSpec(
            job_id=job_id,
            model=model,
            base_student_path=base_student_path,
            snapshot_uri=snapshot_uri,
            teacher=self.teacher,
            missing_teacher_policy=self.missing_teacher_policy,
            hyperparameters=self.hyperparameters,
            device=self.device,
            cpu_threads=self.cpu_threads,
            time_limit_s=self.job_time_limit_s,
            output_dir=output_dir,
            s3_endpoint_url=self.s3_endpoint_url,
        )

"""The re-distillation job spec: everything one training job needs, as JSON.

The daemon writes a ``JobSpec`` to a file and runs ``python -m distilld.trainers
run SPEC.json``; the same file runs unchanged on a GPU box. Paths in it are
local (the daemon resolves registry URIs before writing it); the data snapshot
may also be an ``s3://`` URI.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SNAPSHOT_URI_SCHEMES = ("s3://",)


class TeacherSource(BaseModel):
    """Where teacher targets come from for records that were logged without them."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["logged", "local", "http"] = Field(
        "logged",
        description="'logged': only teacher logits present in the records; 'local': a Hugging Face "
        "sequence-classification model folder; 'http': a JSON endpoint. Logged logits are always "
        "preferred when a record has them.",
    )
    model_path: Path | None = Field(None, description="Local teacher model folder (kind 'local').")
    url: str | None = Field(
        None,
        description='Teacher endpoint (kind \'http\'): POST {"texts": [...]} returns {"logits": [[...], ...]}.',
    )
    timeout_s: float = Field(10.0, gt=0, description="Per-request timeout for the HTTP teacher, seconds.")
    retries: int = Field(3, ge=0, le=20, description="Retries per HTTP request after the first attempt.")
    retry_backoff_s: float = Field(
        0.5, ge=0, description="Base back-off between HTTP retries, doubled each retry."
    )
    max_concurrency: int = Field(4, ge=1, le=64, description="HTTP requests in flight at once.")
    batch_size_records: int = Field(
        32, ge=1, description="Texts per teacher call (HTTP request or local batch)."
    )
    max_length_tokens: int = Field(128, ge=8, description="Truncation length for the local teacher, tokens.")

    @model_validator(mode="after")
    def _source_is_complete(self) -> TeacherSource:
        if self.kind == "local" and self.model_path is None:
            raise ValueError("teacher kind 'local' needs model_path")
        if self.kind == "http" and not self.url:
            raise ValueError("teacher kind 'http' needs url")
        return self


class Hyperparameters(BaseModel):
    """Distillation and LoRA knobs. Defaults follow the DistilBERT / Hinton KD recipe."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = Field(
        "lora", description="'lora': PEFT LoRA adapters (exported merged); 'full': fine-tune every weight."
    )
    freeze_embeddings: bool = Field(
        False,
        description="With method 'full': keep the token-embedding matrix fixed (most of a small student's "
        "weights, and most of its optimiser time).",
    )
    temperature: float = Field(4.0, gt=0, le=20, description="Softmax temperature for the KD term.")
    alpha: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Weight of the KD term when a record has a label; (1 - alpha) goes to cross-entropy.",
    )
    learning_rate: float = Field(
        5e-4, gt=0, description="AdamW learning rate (LoRA wants higher than full FT)."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_fraction: float = Field(0.06, ge=0, lt=1, description="Share of steps with linear LR warm-up.")
    epochs: int = Field(3, ge=1, le=100, description="Passes over the training set.")
    batch_size_records: int = Field(
        32, ge=1, description="Records per optimiser step (halved on out-of-memory)."
    )
    max_length_tokens: int = Field(128, ge=8, le=4096, description="Truncation length, tokens.")
    lora_rank: int = Field(8, ge=1, le=512, description="LoRA rank r.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (effective scale alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; None picks by architecture (BERT query,value; DistilBERT q_lin,v_lin).",
    )
    modules_to_save: list[str] | None = Field(
        None,
        description="Modules trained in full next to the adapters; None picks the classifier head by architecture.",
    )
    replay_eval_fraction: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of replay records kept out of training to measure forgetting (stable by request_id).",
    )
    eval_batch_size_records: int = Field(128, ge=1, description="Records per forward pass during evaluation.")
    seed: int = Field(0, description="Seed for data order, LoRA init and dropout.")


class JobSpec(BaseModel):
    """One re-distillation job. Serialised to JSON; the trainer needs nothing else."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="Unique id; names the job folder and appears in every report.")
    model: str = Field(description="Served model name the job re-distils (for reports and lineage).")
    base_student_path: Path = Field(description="Local Hugging Face folder of the current champion student.")
    snapshot_uri: str = Field(
        description="Training data snapshot: a local folder or an s3://bucket/prefix URI."
    )
    teacher: TeacherSource = Field(default_factory=TeacherSource, description="Teacher targets.")
    missing_teacher_policy: Literal["drop", "labels_only"] = Field(
        "labels_only",
        description="Records with no teacher target: 'drop' them, or train on their label only "
        "('labels_only'; records with neither are dropped). Counts are reported either way.",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="Training knobs.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses CUDA (bf16 autocast) when present, else CPU."
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads on CPU (None: torch's default); on a shared CPU fewer threads "
        "often train faster.",
    )
    time_limit_s: float = Field(
        3600.0, gt=0, description="The trainer fails the job once this much time has passed."
    )
    output_dir: Path = Field(
        description="Job folder: progress.json, result.json and the exported candidate/."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint for an s3:// snapshot (None: AWS default resolution)."
    )

    @field_validator("job_id")
    @classmethod
    def _job_id_is_a_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", v):
            raise ValueError("job_id must be 1-128 characters of letters, digits, '.', '_', '-'")
        return v

    @field_validator("snapshot_uri")
    @classmethod
    def _snapshot_is_local_or_s3(cls, v: str) -> str:
        if "://" in v and not v.startswith(SNAPSHOT_URI_SCHEMES):
            raise ValueError(f"snapshot_uri must be a local folder or one of {SNAPSHOT_URI_SCHEMES}")
        return v

    @property
    def progress_path(self) -> Path:
        return self.output_dir / "progress.json"

    @property
    def result_path(self) -> Path:
        return self.output_dir / "result.json"

    @property
    def candidate_dir(self) -> Path:
        return self.output_dir / "candidate"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> JobSpec:
        return cls.model_validate_json(Path(path).read_text())

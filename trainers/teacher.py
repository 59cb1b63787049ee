"""Teacher targets for records logged without them.

Shadow traffic usually covers only a sample of requests, so a job fills the
gaps from a configured teacher: a local Hugging Face classifier (batched, on
the job's device) or an HTTP endpoint (``POST {"texts": [...]}`` returning
``{"logits": [[...], ...]}``; per-request timeout, retries with back-off,
bounded concurrency). Logged logits are never overwritten. Records the
teacher could not score stay without a target; the missing-teacher policy then
decides their fate.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import requests
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilld.trainers.inference import predict_logits
from distilld.trainers.job_spec import TeacherSource
from distilld.trainers.snapshot import Split

log = logging.getLogger(__name__)


class TeacherError(RuntimeError):
    pass


@dataclass
class FillReport:
    logged: int = 0
    filled: int = 0
    failed: int = 0

    def add(self, other: FillReport) -> None:
        self.logged += other.logged
        self.filled += other.filled
        self.failed += other.failed


class LocalTeacher:
    def __init__(self, source: TeacherSource, device: torch.device):
        self.source = source
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(source.model_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(source.model_path).to(device).eval()

    def logits(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = predict_logits(
            self.model,
            self.tokenizer,
            texts,
            self.device,
            batch_size_records=self.source.batch_size_records,
            max_length_tokens=self.source.max_length_tokens,
        )
        return out, np.ones(len(texts), bool)


class HttpTeacher:
    def __init__(self, source: TeacherSource):
        self.source = source

    def _post(self, session: requests.Session, texts: list[str]) -> list[list[float]] | None:
        delay = self.source.retry_backoff_s
        for attempt in range(self.source.retries + 1):
            try:
                resp = session.post(self.source.url, json={"texts": texts}, timeout=self.source.timeout_s)
                resp.raise_for_status()
                logits = resp.json()["logits"]
                if len(logits) != len(texts):
                    raise TeacherError(f"teacher returned {len(logits)} rows for {len(texts)} texts")
                return logits
            except (requests.RequestException, ValueError, KeyError, TeacherError) as err:
                log.warning(
                    "teacher request failed",
                    extra={"attempt": attempt + 1, "records": len(texts), "error": type(err).__name__},
                )
                if attempt < self.source.retries:
                    time.sleep(delay)
                    delay *= 2
        return None

    def logits(self, texts: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        size = self.source.batch_size_records
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        with requests.Session() as session, ThreadPoolExecutor(self.source.max_concurrency) as pool:
            answers = list(pool.map(lambda chunk: self._post(session, chunk), chunks))
        width = next((len(a[0]) for a in answers if a), None)
        if width is None:
            return None, np.zeros(len(texts), bool)
        out = np.zeros((len(texts), width), np.float32)
        ok = np.zeros(len(texts), bool)
        for k, answer in enumerate(answers):
            if answer is not None:
                out[k * size : k * size + len(answer)] = np.asarray(answer, dtype=np.float32)
                ok[k * size : k * size + len(answer)] = True
        return out, ok


def make_teacher(source: TeacherSource, device: torch.device) -> LocalTeacher | HttpTeacher | None:
    if source.kind == "local":
        return LocalTeacher(source, device)
    if source.kind == "http":
        return HttpTeacher(source)
    return None


def fill_teacher_targets(split: Split, teacher: LocalTeacher | HttpTeacher | None) -> FillReport:
    """Fill ``split``'s missing teacher logits in place; count what was logged, filled and not."""
    missing = np.flatnonzero(~split.has_teacher)
    report = FillReport(logged=int(split.has_teacher.sum()))
    if len(missing) == 0:
        return report
    if teacher is None:
        report.failed = len(missing)
        return report
    logits, ok = teacher.logits([split.texts[i] for i in missing])
    if logits is not None and ok.any():
        if logits.shape[1] != split.teacher_logits.shape[1]:
            raise TeacherError(
                f"teacher gives {logits.shape[1]} classes, the snapshot has {split.teacher_logits.shape[1]}"
            )
        split.teacher_logits[missing[ok]] = logits[ok]
        split.has_teacher[missing[ok]] = True
    report.filled = int(ok.sum())
    report.failed = len(missing) - report.filled
    return report


def apply_missing_teacher_policy(split: Split, policy: str) -> tuple[Split, int]:
    """Keep what the policy allows; return the kept split and how many records were dropped."""
    keep = split.has_teacher | split.has_label if policy == "labels_only" else split.has_teacher.copy()
    return split.select(keep), int((~keep).sum())

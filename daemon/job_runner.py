"""Runs re-distillation jobs as subprocesses, so consuming and detection carry on meanwhile.

Each job is ``python -m distilld.trainers run SPEC.json`` in its own process
group, with stdout/stderr in its job folder. The runner allows one job per
model (and ``max_parallel_jobs`` in all), enforces the time limit (SIGTERM,
then SIGKILL after ``kill_grace_s``), and reports every ending exactly once:
success with the candidate and its metrics, or failure with a reason
(``job_failed``, ``crashed``, ``time_limit``, ``cancelled``, ``daemon_restarted``),
the error and the tail of stderr. Nothing is retried: the policy decides
whether to ask again.

The daemon drives it by calling ``poll()`` from its loop (finished jobs are
returned and handed to ``on_finished``); ``status()`` answers at any time.
Every state change is written to ``status.json`` in the job folder, so a
restarted daemon knows what became of jobs it had started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from distilld.trainers.config import TrainerConfig
from distilld.trainers.job_spec import JobSpec
from distilld.trainers.progress import read_progress

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
SPEC_FILE = "spec.json"

FailureReason = Literal["job_failed", "crashed", "time_limit", "cancelled", "daemon_restarted"]


class JobStatus(BaseModel):
    job_id: str
    model: str
    state: Literal["running", "succeeded", "failed"]
    reason: FailureReason | None = Field(None, description="Why a failed job failed.")
    error: str | None = None
    stderr_tail: str | None = None
    returncode: int | None = None
    pid: int | None = None
    started_at: float
    finished_at: float | None = None
    time_limit_s: float
    output_dir: Path
    progress: dict | None = Field(None, description="Latest progress.json of the job (phase, samples, ETA).")
    candidate_dir: Path | None = None
    metrics: dict | None = None

    @property
    def finished(self) -> bool:
        return self.state != "running"


class JobRejected(RuntimeError):
    pass


@dataclass
class _Running:
    status: JobStatus
    process: subprocess.Popen
    deadline: float
    stop_reason: FailureReason | None = None
    term_sent_at: float | None = None


def _tail(path: Path, chars: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars * 4))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    # progress bars redraw with carriage returns; keep only the lines a human would see
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return "\n".join(lines)[-chars:]


class JobRunner:
    def __init__(
        self,
        jobs_dir: Path,
        config: TrainerConfig,
        on_finished: Callable[[JobStatus], None] | None = None,
    ):
        self.jobs_dir = Path(jobs_dir)
        self.config = config
        self.on_finished = on_finished
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._recover()

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def submit(self, spec: JobSpec) -> JobStatus:
        """Start ``spec``; raise ``JobRejected`` if its model already has a job or the runner is full."""
        with self._lock:
            if any(r.status.model == spec.model for r in self._running.values()):
                raise JobRejected(f"model {spec.model!r} already has a training job running")
            if len(self._running) >= self.config.max_parallel_jobs:
                raise JobRejected(f"{len(self._running)} jobs running; max_parallel_jobs is reached")
            job_dir = self.job_dir(spec.job_id)
            if (job_dir / STATUS_FILE).exists():
                raise JobRejected(f"job id {spec.job_id!r} was used before")
            job_dir.mkdir(parents=True, exist_ok=True)
            spec_path = job_dir / SPEC_FILE
            spec.write(spec_path)
            python = self.config.python_executable or sys.executable
            with (job_dir / "stdout.log").open("wb") as out, (job_dir / "stderr.log").open("wb") as err:
                process = subprocess.Popen(
                    [python, "-m", "distilld.trainers", "run", str(spec_path)],
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            status = JobStatus(
                job_id=spec.job_id,
                model=spec.model,
                state="running",
                pid=process.pid,
                started_at=time.time(),
                time_limit_s=spec.time_limit_s,
                output_dir=spec.output_dir,
            )
            # the trainer enforces the limit itself and reports cleanly; the kill is the backstop
            deadline = time.monotonic() + spec.time_limit_s + self.config.kill_grace_s
            self._running[spec.job_id] = _Running(status=status, process=process, deadline=deadline)
            self._write(status)
        log.info(
            "training job started", extra={"job_id": spec.job_id, "model": spec.model, "pid": process.pid}
        )
        return status

    def poll(self) -> list[JobStatus]:
        """Enforce time limits and collect jobs that ended since the last call."""
        finished = []
        with self._lock:
            now = time.monotonic()
            for job_id, run in list(self._running.items()):
                if run.process.poll() is None:
                    if now > run.deadline and run.stop_reason is None:
                        log.warning("training job over its time limit; stopping it", extra={"job_id": job_id})
                        self._stop(run, "time_limit")
                    elif run.term_sent_at is not None and now - run.term_sent_at > self.config.kill_grace_s:
                        self._signal(run, signal.SIGKILL)
                    continue
                finished.append(self._finish(run))
                del self._running[job_id]
        for status in finished:
            log.info(
                "training job finished",
                extra={
                    "job_id": status.job_id,
                    "model": status.model,
                    "state": status.state,
                    "reason": status.reason,
                },
            )
            if self.on_finished is not None:
                self.on_finished(status)
        return finished

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            run = self._running.get(job_id)
            if run is not None:
                run.status.progress = read_progress(run.status.output_dir / "progress.json")
                return run.status.model_copy()
        path = self.job_dir(job_id) / STATUS_FILE
        if not path.exists():
            raise KeyError(f"no job {job_id!r}")
        return JobStatus.model_validate_json(path.read_text())

    def running(self) -> list[JobStatus]:
        with self._lock:
            ids = list(self._running)
        return [self.status(job_id) for job_id in ids]

    def active_job(self, model: str) -> JobStatus | None:
        return next((s for s in self.running() if s.model == model), None)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            run = self._running.get(job_id)
            if run is None:
                raise KeyError(f"no running job {job_id!r}")
            self._stop(run, "cancelled")

    def wait(self, job_id: str, timeout_s: float, poll_interval_s: float = 0.2) -> JobStatus:
        """Poll until ``job_id`` ends (for CLI use and tests); raise ``TimeoutError`` if it does not."""
        end = time.monotonic() + timeout_s
        while True:
            self.poll()
            status = self.status(job_id)
            if status.finished:
                return status
            if time.monotonic() > end:
                raise TimeoutError(f"job {job_id} still running after {timeout_s} s")
            time.sleep(poll_interval_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every running job (reported as cancelled) and wait for them to end."""
        with self._lock:
            for run in self._running.values():
                self._stop(run, "cancelled")
        end = time.monotonic() + (self.config.kill_grace_s + 5 if timeout_s is None else timeout_s)
        while self.running() and time.monotonic() < end:
            self.poll()
            time.sleep(0.1)
        with self._lock:
            for run in self._running.values():
                self._signal(run, signal.SIGKILL)
        self.poll()

    def _stop(self, run: _Running, reason: FailureReason) -> None:
        run.stop_reason = reason
        run.term_sent_at = time.monotonic()
        self._signal(run, signal.SIGTERM)

    @staticmethod
    def _signal(run: _Running, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, sig)

    def _finish(self, run: _Running) -> JobStatus:
        status = run.status
        status.returncode = run.process.returncode
        status.finished_at = time.time()
        status.progress = read_progress(status.output_dir / "progress.json")
        result = self._read_result(status.output_dir / "result.json")
        if run.stop_reason is None and result is not None and result.get("status") == "succeeded":
            status.state = "succeeded"
            status.candidate_dir = Path(result["candidate_dir"])
            status.metrics = result.get("metrics")
        else:
            status.state = "failed"
            if run.stop_reason is not None:
                status.reason = run.stop_reason
                status.error = (
                    f"stopped: {run.stop_reason} after {status.finished_at - status.started_at:.1f} s"
                )
            elif result is not None and result.get("status") == "failed":
                status.reason = "job_failed"
                status.error = result.get("error")
            else:
                status.reason = "crashed"
                status.error = f"trainer exited with code {status.returncode} without a result"
            status.stderr_tail = _tail(
                self.job_dir(status.job_id) / "stderr.log", self.config.stderr_tail_chars
            )
        self._write(status)
        return status

    @staticmethod
    def _read_result(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write(self, status: JobStatus) -> None:
        path = self.job_dir(status.job_id) / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(status.model_dump_json(indent=2))
        os.replace(tmp, path)

    def _recover(self) -> None:
        """Jobs a previous daemon process left 'running' did not report; stop them and mark them failed."""
        for path in sorted(self.jobs_dir.glob(f"*/{STATUS_FILE}")):
            status = JobStatus.model_validate_json(path.read_text())
            if status.state != "running":
                continue
            if status.pid is not None and self._is_our_trainer(status.pid, path.parent / SPEC_FILE):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(status.pid, signal.SIGKILL)
            status.state = "failed"
            status.reason = "daemon_restarted"
            status.error = "the daemon restarted while the job ran; its outcome was not collected"
            status.finished_at = time.time()
            self._write(status)
            log.warning("abandoned training job marked failed", extra={"job_id": status.job_id})

    @staticmethod
    def _is_our_trainer(pid: int, spec_path: Path) -> bool:
        # pids are reused: only a process running this very spec file is ours to stop
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(spec_path).encode() in cmdline

from __future__ import annotations

import time

import pytest

from distilld.daemon.job_runner import JobRejected, JobRunner
from distilld.trainers.config import TrainerConfig
from distilld.trainers.export import verify_manifest
from distilld.trainers.tiny_models import make_tiny_classifier
from tests.trainers.builders import N_CLASSES, tiny_job_spec, write_synthetic_snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_tiny_classifier("distilbert", N_CLASSES, tmp_path_factory.mktemp("student"))


@pytest.fixture
def runner(tmp_path):
    finished = []
    runner = JobRunner(tmp_path / "jobs", TrainerConfig(kill_grace_s=2), on_finished=finished.append)
    runner.finished_log = finished
    yield runner
    runner.close()


def test_job_runs_in_a_subprocess_and_reports_its_candidate(tmp_path, runner, student):
    spec = tiny_job_spec(tmp_path, student, write_synthetic_snapshot(tmp_path / "snap"), job_id="ok-1")
    started = runner.submit(spec)
    assert started.state == "running" and started.pid
    with pytest.raises(JobRejected, match="already has a training job"):
        runner.submit(spec.model_copy(update={"job_id": "ok-2"}))
    status = runner.wait("ok-1", timeout_s=300)
    assert status.state == "succeeded", status.stderr_tail
    assert status.returncode == 0
    assert status.progress["phase"] == "succeeded"
    assert status.metrics["candidate"]["holdout"]["teacher_agreement"] is not None
    verify_manifest(status.candidate_dir)
    assert [s.job_id for s in runner.finished_log] == ["ok-1"]
    assert runner.status("ok-1") == status
    assert runner.active_job("tiny") is None


def test_failing_job_is_reported_with_its_error(tmp_path, runner, student):
    spec = tiny_job_spec(tmp_path, tmp_path / "no-such-student", write_synthetic_snapshot(tmp_path / "snap"))
    runner.submit(spec)
    status = runner.wait(spec.job_id, timeout_s=300)
    assert status.state == "failed"
    assert status.reason == "job_failed"
    assert "no-such-student" in status.error
    assert "no-such-student" in status.stderr_tail
    assert status.returncode == 1
    assert runner.finished_log == [status]
    # ended once, reported once; never retried
    assert runner.poll() == [] and runner.running() == []


def test_job_over_its_time_limit_is_killed_and_reported(tmp_path, runner, student):
    spec = tiny_job_spec(tmp_path, student, write_synthetic_snapshot(tmp_path / "snap"), time_limit_s=0.2)
    runner.config = TrainerConfig(kill_grace_s=0)
    runner.submit(spec)
    status = runner.wait(spec.job_id, timeout_s=60, poll_interval_s=0.05)
    assert status.state == "failed"
    assert status.reason == "time_limit"
    assert status.returncode != 0


def test_a_restarted_runner_fails_the_jobs_it_lost(tmp_path, student):
    config = TrainerConfig(job_time_limit_s=600)
    first = JobRunner(tmp_path / "jobs", config)
    spec = tiny_job_spec(tmp_path, student, write_synthetic_snapshot(tmp_path / "snap"), time_limit_s=600)
    first.submit(spec)
    process = first._running[spec.job_id].process
    second = JobRunner(tmp_path / "jobs", config)
    status = second.status(spec.job_id)
    assert (status.state, status.reason) == ("failed", "daemon_restarted")
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.returncode is not None

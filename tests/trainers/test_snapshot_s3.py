from __future__ import annotations

import boto3
import pytest
from moto.server import ThreadedMotoServer

from distilld.trainers.snapshot import fetch_snapshot, read_snapshot
from tests.trainers.builders import write_synthetic_snapshot


@pytest.fixture
def s3_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_snapshot_is_fetched_from_s3(tmp_path, s3_endpoint):
    local = write_synthetic_snapshot(tmp_path / "snap")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="snapshots")
    for f in local.iterdir():
        s3.upload_file(str(f), "snapshots", f"intent/42/{f.name}")
    fetched = fetch_snapshot("s3://snapshots/intent/42", tmp_path / "fetched", s3_endpoint)
    a, b = read_snapshot(local), read_snapshot(fetched)
    assert a.train.texts == b.train.texts and a.replay.request_ids == b.replay.request_ids
    assert (a.holdout.teacher_logits == b.holdout.teacher_logits).all()

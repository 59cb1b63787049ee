"""Through a real `mlflow server` whose artifacts live in S3 (moto in server mode), with the real Kafka broker.

One server per module: it is slow to start. It is created with a fixed port but started
only inside the first test, so that test can first try to register while it is down.
"""

import json
import threading
import time

import boto3
import pytest
import requests
from registry_builders import MlflowServer, load_serving_consumer, metrics_doc

from distilld.daemon.promotion import Promotion
from distilld.daemon.serving_signal import SIGNATURE_HEADER, verify_signature
from distilld.registry.artifact_store import S3ArtifactStore, artifact_store_from_location
from distilld.registry.config import (
    GateConfig,
    NotificationsConfig,
    RegistryConfig,
    SignalConfig,
    WebhookConfig,
)
from distilld.registry.integrity import IntegrityError
from distilld.registry.model_registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BUCKET = "distilld-artifacts"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
DECISION = {"id": "dec-9", "rule": "input-drift"}


def lineage(parent: str | None) -> dict:
    return {"rule": "input-drift", "decision_id": "dec-9", "parent_version": parent}


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for key, value in CREDENTIALS.items():
        mp.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()
    mp.undo()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, s3_endpoint):
    server = MlflowServer(
        tmp_path_factory.mktemp("mlflow-server"),
        artifacts_destination=f"s3://{BUCKET}/mlflow",
        env={**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint},
    )
    yield server
    server.stop()


def server_config(server: MlflowServer, **gate) -> RegistryConfig:
    return RegistryConfig(
        tracking_uri=server.url,
        http_max_retries=0,
        http_timeout_s=10,
        spool_retry_initial_s=0.01,
        gate=GateConfig(min_agreement_gain=0.01, max_replay_drop=0.02, **gate),
    )


def s3_keys(endpoint: str, prefix: str = "") -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for obj in listing.get("Contents", [])]


def test_candidate_spooled_while_mlflow_is_down_survives_restart(
    mlflow_server, s3_endpoint, base_model, make_export, tmp_path
):
    state = tmp_path / "state"
    before = Promotion.from_config(
        server_config(mlflow_server), SignalConfig(), NotificationsConfig(), state, bootstrap_servers=None
    )
    outcome = before.submit_candidate("intent", make_export(metrics_doc(0.93, 0.88)), DECISION, lineage("1"))
    assert outcome.status == "spooled"
    [entry] = before.spool.pending()
    assert entry.attempts == 1 and "Connection" in entry.last_error
    before.close()

    mlflow_server.start()
    after = Promotion.from_config(
        server_config(mlflow_server), SignalConfig(), NotificationsConfig(), state, bootstrap_servers=None
    )
    assert after.register_base("intent", base_model).version == "1"
    [retried] = after.retry_pending()
    assert (retried.status, retried.version) == ("promoted", "2")
    assert after.spool.pending() == []
    assert after.registry.aliases("intent") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    info = after.registry.champion("intent")
    assert info.uri.startswith("mlflow-artifacts:/")
    assert any(
        k.endswith(f"{info.run_id}/artifacts/bundle/model/model.safetensors") for k in s3_keys(s3_endpoint)
    )
    assert after.retry_pending() == []
    after.close()


def test_tampered_s3_object_is_refused(mlflow_server, s3_endpoint, base_model, tmp_path):
    mlflow_server.start()
    promotion = Promotion.from_config(
        server_config(mlflow_server), SignalConfig(), NotificationsConfig(), tmp_path / "state", None
    )
    info = promotion.register_base("tamper", base_model)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    [key] = [
        k for k in s3_keys(s3_endpoint) if k.endswith(f"{info.run_id}/artifacts/bundle/model/config.json")
    ]
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"model_type": "bert", "num_labels": 9}')
    with pytest.raises(IntegrityError, match="config.json"):
        promotion.registry.download_verified("tamper", CHAMPION, tmp_path / "served")
    promotion.close()


def test_serving_consumer_follows_the_champion(
    mlflow_server, kafka_broker, base_model, make_export, tmp_path, receiver, monkeypatch
):
    monkeypatch.setenv("SERVING_HOOK_SECRET", "k3y")
    mlflow_server.start()
    serving = load_serving_consumer()
    topic = kafka_broker.new_topic()
    promotion = Promotion.from_config(
        server_config(mlflow_server),
        SignalConfig(
            topic=topic,
            webhooks=[WebhookConfig(url=receiver.url("/events"), secret_env="SERVING_HOOK_SECRET")],
        ),
        NotificationsConfig(),
        tmp_path / "state",
        kafka_broker.bootstrap,
    )
    promotion.register_base("support", base_model)
    consumer = serving.ServingConsumer(
        "support",
        mlflow_server.url,
        kafka_broker.bootstrap,
        topic=topic,
        port=0,
        work_dir=tmp_path / "serving",
    )
    consumer.start()
    stop = threading.Event()
    answers: list[tuple[int, str | None]] = []

    def traffic() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(
                    f"{consumer.url}/predict", json={"texts": ["where is my parcel", "a b"]}
                )
                answers.append((response.status_code, response.json().get("version")))

    def wait_for_version(version: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while consumer.current.version != version and time.monotonic() < deadline:
            time.sleep(0.2)
        assert consumer.current.version == version

    client = threading.Thread(target=traffic)
    try:
        assert consumer.current.version == "1"
        client.start()
        better = promotion.submit_candidate(
            "support", make_export(metrics_doc(0.93, 0.88)), DECISION, lineage("1")
        )
        assert better.status == "promoted"
        wait_for_version("2")

        worse = promotion.submit_candidate(
            "support", make_export(metrics_doc(0.90, 0.93)), DECISION, lineage("2")
        )
        assert worse.status == "kept"
        assert promotion.registry.aliases("support")[CHALLENGER] == "3"

        promotion.rollback("support")
        wait_for_version("1")

        forged = promotion.registry.version_info("support", "3")
        forged_sha = {**forged.sha256, "model/model.safetensors": "0" * 64}
        event = {
            "specversion": "1.0", "id": "forged", "source": "urn:test", "type": "distilld.model.promoted",
            "subject": "support",
            "data": {"model": "support", "version": "3", "alias": "champion", "artifact_uri": forged.uri,
                     "sha256": forged_sha, "manifest_sha256": forged.manifest_sha256},
        }  # fmt: skip
        promotion.signal._kafka().send(topic, key=b"support", value=json.dumps(event).encode()).get(
            timeout=10
        )
        deadline = time.monotonic() + 60
        while not consumer.refused and time.monotonic() < deadline:
            time.sleep(0.2)
        assert consumer.refused and consumer.refused[0][0] == "3"
        assert consumer.current.version == "1"
    finally:
        stop.set()
        if client.is_alive():
            client.join(timeout=30)
        consumer.stop()
        promotion.close()

    assert consumer.swaps == ["1", "2", "1"]
    hooks = [(headers, body) for path, headers, body in receiver.requests if path == "/events"]
    assert [(json.loads(b)["type"], json.loads(b)["data"]["version"]) for _, b in hooks] == [
        ("distilld.model.promoted", "1"),
        ("distilld.model.promoted", "2"),
        ("distilld.model.rolled_back", "1"),
    ]
    assert all(verify_signature(body, "k3y", headers[SIGNATURE_HEADER]) for headers, body in hooks)
    assert answers and all(status == 200 for status, _ in answers)
    served = [version for _, version in answers]
    assert "2" in served
    # Versions change only at the swaps, never back and forth: no request saw a half-swapped model.
    changes = [v for i, v in enumerate(served) if i == 0 or served[i - 1] != v]
    assert changes == ["1", "2", "1"]


def test_snapshot_store_on_s3(s3_endpoint, tmp_path):
    source = tmp_path / "snapshot"
    (source / "part").mkdir(parents=True)
    (source / "records.jsonl").write_text('{"a": 1}\n')
    (source / "part" / "offsets.json").write_text('{"0": [0, 10]}')
    store = artifact_store_from_location(f"s3://{BUCKET}/snapshots", endpoint_url=s3_endpoint)
    assert isinstance(store, S3ArtifactStore)
    assert store.put_dir(source, "intent/job-1") == f"s3://{BUCKET}/snapshots/intent/job-1"
    assert store.list_keys("intent/job-1") == ["intent/job-1/part/offsets.json", "intent/job-1/records.jsonl"]
    restored = store.get_dir("intent/job-1", tmp_path / "restored")
    assert (restored / "part" / "offsets.json").read_text() == '{"0": [0, 10]}'
    assert (restored / "records.jsonl").read_text() == '{"a": 1}\n'

import json

import pytest
from registry_builders import read_events

from distilld.daemon.serving_signal import (
    EVENT_PROMOTED,
    KAFKA_TARGET,
    SIGNATURE_HEADER,
    ServingSignal,
    model_event,
    sign,
    verify_signature,
)
from distilld.registry.config import SignalConfig, WebhookConfig
from distilld.registry.model_registry import ModelVersionInfo

INFO = ModelVersionInfo(
    model="intent",
    version="4",
    uri="file:///tmp/a/model",
    run_id="r1",
    manifest_sha256="ab" * 32,
    sha256={"model/model.safetensors": "cd" * 32},
)


def test_event_is_a_cloudevent():
    event = model_event(
        EVENT_PROMOTED, INFO, "urn:distilld:test", metrics={"candidate.holdout.agreement": 0.9}
    )
    assert {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"} <= set(event)
    assert event["specversion"] == "1.0"
    assert event["subject"] == "intent"
    assert event["time"].endswith("Z")
    assert event["data"]["sha256"] == {"model/model.safetensors": "cd" * 32}
    assert event["data"]["model_uri"] == "models:/intent/4"


def test_signature_round_trip():
    body = b'{"a":1}'
    header = sign(body, "s3cret")
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(body, "s3cret", header)
    assert not verify_signature(body + b" ", "s3cret", header)
    assert not verify_signature(body, "other", header)
    assert not verify_signature(body, "s3cret", None)


def test_signed_webhook_retried_after_503(receiver, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    hook = WebhookConfig(
        url=receiver.url("/hook"), secret_env="HOOK_SECRET", max_retries=2, backoff_initial_s=0.01
    )
    signal = ServingSignal(SignalConfig(webhooks=[hook]), bootstrap_servers=None)
    receiver.fail_next = 2
    event = model_event(EVENT_PROMOTED, INFO, "urn:distilld:test")
    assert signal.deliver(event) == []
    [(path, headers, body)] = receiver.requests
    assert verify_signature(body, "s3cret", headers[SIGNATURE_HEADER])
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert json.loads(body)["id"] == event["id"]


def test_unreachable_webhook_is_left_for_retry_and_missing_secret_refused(receiver, monkeypatch):
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    dead = WebhookConfig(url="http://127.0.0.1:9/x", max_retries=0, timeout_s=1)
    unsigned = WebhookConfig(url=receiver.url("/u"), secret_env="NOPE_SECRET", max_retries=0)
    signal = ServingSignal(SignalConfig(webhooks=[dead, unsigned]), bootstrap_servers=None)
    remaining = signal.deliver(model_event(EVENT_PROMOTED, INFO, "urn:distilld:test"))
    assert remaining == ["webhook:http://127.0.0.1:9/x", f"webhook:{receiver.url('/u')}"]
    assert receiver.requests == []


@pytest.mark.kafka
def test_event_on_kafka_keyed_by_model(kafka_broker):
    topic = kafka_broker.new_topic()
    signal = ServingSignal(SignalConfig(topic=topic), bootstrap_servers=kafka_broker.bootstrap)
    try:
        event = model_event(EVENT_PROMOTED, INFO, "urn:distilld:test")
        assert signal.targets() == [KAFKA_TARGET]
        assert signal.deliver(event) == []
    finally:
        signal.close()
    [record] = read_events(kafka_broker.bootstrap, topic, expected=1)
    assert record.key == b"intent"
    assert json.loads(record.value) == event
    assert ("content-type", b"application/cloudevents+json; charset=UTF-8") in list(record.headers)

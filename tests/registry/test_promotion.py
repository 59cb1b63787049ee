"""Promotion end to end on the embedded store (SQLite + local artifacts) and the real Kafka broker."""

import json
from pathlib import Path

import pytest
from registry_builders import metrics_doc, read_events

from distilld.daemon.notifications import Notifier
from distilld.daemon.promotion import Promotion
from distilld.daemon.serving_signal import (
    EVENT_PROMOTED,
    EVENT_ROLLED_BACK,
    SIGNATURE_HEADER,
    verify_signature,
)
from distilld.daemon.spool import Spool
from distilld.registry.config import (
    GateConfig,
    NotificationsConfig,
    RegistryConfig,
    SignalConfig,
    WebhookConfig,
)
from distilld.registry.model_registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, ModelRegistry

pytestmark = pytest.mark.kafka

DECISION = {"id": "dec-7", "rule": "divergence-high", "evidence": {"mean_kl": 0.41}}


def lineage(parent: str) -> dict:
    return {
        "rule": "divergence-high",
        "decision_id": "dec-7",
        "parent_version": parent,
        "offsets": [{"topic": "inference-logs", "partition": 0, "start": 0, "end": 4000}],
    }


@pytest.fixture
def wired(tmp_path: Path, kafka_broker, receiver, monkeypatch):
    monkeypatch.setenv("DISTILLD_HOOK_SECRET", "hook-secret")
    topic = kafka_broker.new_topic()
    registry_config = RegistryConfig(gate=GateConfig(min_agreement_gain=0.01, max_replay_drop=0.02))
    signal_config = SignalConfig(
        topic=topic,
        webhooks=[WebhookConfig(url=receiver.url("/events"), secret_env="DISTILLD_HOOK_SECRET")],
    )
    notifications = NotificationsConfig(
        slack_webhook_url=receiver.url("/slack"), json_webhook_urls=[receiver.url("/notify")]
    )
    promotion = Promotion.from_config(
        registry_config, signal_config, notifications, tmp_path / "state", kafka_broker.bootstrap
    )
    yield promotion, topic
    promotion.close()


def test_candidate_lifecycle(wired, base_model, make_export, receiver, kafka_broker):
    promotion, topic = wired
    registry = promotion.registry

    base = promotion.register_base("intent", base_model)
    assert base.version == "1"

    better = promotion.submit_candidate(
        "intent", make_export(metrics_doc(0.93, 0.88)), DECISION, lineage("1")
    )
    assert (better.status, better.version) == ("promoted", "2")
    assert registry.aliases("intent") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    assert better.metrics["candidate.holdout.teacher_agreement"] == pytest.approx(0.93)

    worse = promotion.submit_candidate("intent", make_export(metrics_doc(0.90, 0.93)), DECISION, lineage("2"))
    assert (worse.status, worse.version) == ("kept", "3")
    assert "below the required" in worse.reason
    assert registry.aliases("intent") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1", CHALLENGER: "3"}
    assert "below the required" in registry.version_info("intent", "3").tags["distilld.gate_reason"]

    rolled = promotion.rollback("intent")
    assert (rolled.status, rolled.version) == ("rolled_back", "1")
    assert registry.aliases("intent")[CHAMPION] == "1"
    assert promotion.spool.pending() == []

    records = read_events(kafka_broker.bootstrap, topic, expected=3)
    events = [json.loads(r.value) for r in records]
    assert [(e["type"], e["data"]["version"]) for e in events] == [
        (EVENT_PROMOTED, "1"),
        (EVENT_PROMOTED, "2"),
        (EVENT_ROLLED_BACK, "1"),
    ]
    assert {r.key for r in records} == {b"intent"}
    promoted = events[1]["data"]
    assert promoted["previous_version"] == "1"
    assert promoted["sha256"] == registry.version_info("intent", "2").sha256
    assert promoted["metrics"]["champion.holdout.teacher_agreement"] == pytest.approx(0.88)

    hooks = [(headers, body) for path, headers, body in receiver.requests if path == "/events"]
    assert [json.loads(body)["id"] for _, body in hooks] == [e["id"] for e in events]
    assert all(verify_signature(body, "hook-secret", headers[SIGNATURE_HEADER]) for headers, body in hooks)

    slack_texts = [json.loads(b)["text"] for b in receiver.bodies("/slack")]
    assert any("v2 promoted to champion" in t for t in slack_texts)
    assert any("v3 kept as challenger" in t and "below the required" in t for t in slack_texts)
    assert any("rolled back from v2 to v1" in t for t in slack_texts)


def test_manual_approval_and_stale_parent(tmp_path, base_model, make_export):
    registry = ModelRegistry(RegistryConfig(), tmp_path / "state")
    spool = Spool(tmp_path / "state" / "spool")
    manual = Promotion(registry, GateConfig(require_manual_approval=True), spool)
    registry.register_base("intent", base_model)

    waiting = manual.submit_candidate("intent", make_export(metrics_doc(0.95, 0.80)), DECISION, lineage("1"))
    assert waiting.status == "awaiting_approval"
    assert registry.aliases("intent") == {CHAMPION: "1", CHALLENGER: "2"}
    approved = manual.promote_manual("intent", "2")
    assert approved.status == "promoted"
    assert approved.metrics["candidate.holdout.teacher_agreement"] == pytest.approx(0.95)
    assert registry.aliases("intent") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}

    auto = Promotion(registry, GateConfig(), spool)
    stale = auto.submit_candidate("intent", make_export(metrics_doc(0.99, 0.80)), DECISION, lineage("1"))
    assert stale.status == "kept"
    assert "champion is now v2" in stale.reason


def test_tampered_export_is_rejected_and_reported(tmp_path, base_model, make_export, receiver):
    registry = ModelRegistry(RegistryConfig(), tmp_path / "state")
    spool = Spool(tmp_path / "state" / "spool")
    notifier = Notifier(NotificationsConfig(json_webhook_urls=[receiver.url("/n")]))
    promotion = Promotion(registry, GateConfig(), spool, notifier=notifier)
    registry.register_base("intent", base_model)
    export = make_export(metrics_doc(0.95, 0.80))
    weights = export / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")

    outcome = promotion.submit_candidate("intent", export, DECISION, lineage("1"))
    assert outcome.status == "rejected"
    assert "model.safetensors" in outcome.reason
    assert spool.pending() == []
    assert len(spool.dead()) == 1
    assert registry.aliases("intent") == {CHAMPION: "1"}
    [note] = [json.loads(b) for b in receiver.bodies("/n")]
    assert note["kind"] == "retrain_failed" and "IntegrityError" in note["text"]

"""The functions behind `distilld register-base / promote / rollback`, with the daemon's own config."""

import json

import pytest
from registry_builders import metrics_doc, read_events

from distilld.daemon.config import DistilldConfig
from distilld.daemon.promotion import promote_main, promotion_for, register_base_main, rollback_main
from distilld.registry.model_registry import CHAMPION

pytestmark = pytest.mark.kafka


def test_register_promote_rollback_commands(tmp_path, kafka_broker, base_model, make_export, capsys):
    topic = kafka_broker.new_topic()
    config = DistilldConfig(
        state={"state_dir": str(tmp_path / "state")},
        kafka={"bootstrap_servers": [kafka_broker.bootstrap]},
        registry={"gate": {"require_manual_approval": True}},
        signal={"topic": topic},
    )
    assert register_base_main(config, "intent", base_model) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1"

    promotion = promotion_for(config)
    waiting = promotion.submit_candidate(
        "intent", make_export(metrics_doc(0.95, 0.85)), {"id": "d1"}, {"parent_version": "1"}
    )
    promotion.close()
    assert waiting.status == "awaiting_approval"

    assert promote_main(config, "intent", "2") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "promoted"
    assert rollback_main(config, "intent") == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1"
    assert rollback_main(config, "intent") == 1
    assert "no previous champion" in capsys.readouterr().err
    assert promote_main(config, "intent", "7") == 1
    assert promote_main(config, "never-registered", "1") == 1

    check = promotion_for(config)
    assert check.registry.aliases("intent") == {CHAMPION: "1"}
    check.close()
    types = [json.loads(r.value)["type"] for r in read_events(kafka_broker.bootstrap, topic, expected=3)]
    assert types == ["distilld.model.promoted", "distilld.model.promoted", "distilld.model.rolled_back"]

"""The registry against a real MLflow store (local SQLite + local artifacts)."""

import json
from pathlib import Path

import pytest
from registry_builders import metrics_doc

from distilld.registry.integrity import IntegrityError, sha256_file
from distilld.registry.model_registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    TAG_MANIFEST,
    ModelRegistry,
    RegistryError,
)

LINEAGE = {
    "rule": "divergence-high",
    "decision_id": "dec-42",
    "parent_version": "1",
    "offsets": [{"topic": "inference-logs", "partition": 0, "start": 100, "end": 5100}],
}


def test_register_base_becomes_champion_with_recorded_hashes(local_registry: ModelRegistry, base_model: Path):
    version = local_registry.register_base("intent", base_model)
    info = local_registry.champion("intent")
    assert info.version == version == "1"
    assert info.sha256["model/model.safetensors"] == sha256_file(base_model / "model.safetensors")
    assert set(info.sha256) >= {"model/config.json", "model/tokenizer.json", "model/model.safetensors"}
    assert CHAMPION in info.aliases
    assert local_registry.client.get_experiment_by_name("distilld/intent") is not None


def test_candidate_run_carries_params_metrics_tags_and_artifacts(
    local_registry: ModelRegistry, base_model: Path, make_export, tmp_path: Path
):
    local_registry.register_base("intent", base_model)
    export = make_export(metrics_doc(0.93, 0.88))
    report = tmp_path / "drift.json"
    report.write_text(json.dumps({"psi": 0.4}))
    version = local_registry.register_candidate(
        "intent", export, {"id": "dec-42", "rule": "divergence-high"}, LINEAGE, reports=(report,)
    )
    assert version == "2"
    assert local_registry.aliases("intent") == {CHAMPION: "1", CHALLENGER: "2"}

    info = local_registry.version_info("intent", CHALLENGER)
    run = local_registry.client.get_run(info.run_id)
    assert run.data.params["hyperparameters.lora_rank"] == "2"
    assert run.data.metrics["candidate.holdout.teacher_agreement"] == pytest.approx(0.93)
    assert run.data.metrics["champion.replay.mean_kl_to_teacher"] == pytest.approx(0.1)
    assert run.data.tags["distilld.rule"] == "divergence-high"
    assert run.data.tags["distilld.decision_id"] == "dec-42"
    assert run.data.tags["distilld.parent_version"] == "1"
    assert json.loads(run.data.tags["distilld.kafka_offsets"])[0]["end"] == 5100
    assert run.data.tags["distilld.version"]
    assert {
        "adapter/adapter_model.safetensors",
        "decision_record.json",
        "reports/drift.json",
        "model/model.safetensors",
        "metrics.json",
    } <= set(info.sha256)
    assert info.tags[TAG_MANIFEST] == info.manifest_sha256


def test_promote_and_rollback_move_aliases(local_registry: ModelRegistry, base_model: Path, make_export):
    local_registry.register_base("intent", base_model)
    v2 = local_registry.register_candidate("intent", make_export(metrics_doc(0.93, 0.88)), {}, LINEAGE)
    promoted = local_registry.promote("intent", v2)
    assert promoted.version == "2"
    assert local_registry.aliases("intent") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}

    v3 = local_registry.register_candidate("intent", make_export(metrics_doc(0.95, 0.93)), {}, LINEAGE)
    local_registry.promote("intent", v3)
    assert local_registry.aliases("intent") == {CHAMPION: "3", PREVIOUS_CHAMPION: "2"}

    assert local_registry.rollback("intent") == "2"
    assert local_registry.aliases("intent") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    assert local_registry.version_info("intent", "3").tags["distilld.status"] == "rolled-back"
    assert local_registry.rollback("intent") == "1"
    assert local_registry.aliases("intent") == {CHAMPION: "1"}
    with pytest.raises(RegistryError, match="no previous champion"):
        local_registry.rollback("intent")


def test_download_verified_returns_exact_files(
    local_registry: ModelRegistry, base_model: Path, tmp_path: Path
):
    local_registry.register_base("intent", base_model)
    dest = local_registry.download_verified("intent", CHAMPION, tmp_path / "served")
    assert (dest / "model" / "model.safetensors").read_bytes() == (
        base_model / "model.safetensors"
    ).read_bytes()


def _stored_file(registry: ModelRegistry, model: str, version: str, rel: str) -> Path:
    info = registry.version_info(model, version)
    return Path(info.uri.removeprefix("file://")) / rel


def test_tampered_artifact_is_refused(
    local_registry: ModelRegistry, base_model: Path, make_export, tmp_path: Path
):
    local_registry.register_base("intent", base_model)
    v2 = local_registry.register_candidate("intent", make_export(metrics_doc(0.93, 0.88)), {}, LINEAGE)
    weights = _stored_file(local_registry, "intent", v2, "model/model.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match=r"changed=\['model/model.safetensors'\]"):
        local_registry.download_verified("intent", v2, tmp_path / "served")
    assert not (tmp_path / "served").exists()
    with pytest.raises(IntegrityError):
        local_registry.promote("intent", v2)
    assert local_registry.aliases("intent")[CHAMPION] == "1"


def test_rewritten_manifest_is_refused(local_registry: ModelRegistry, base_model: Path, tmp_path: Path):
    """Changing a file and its manifest together is still caught: the manifest digest lives in the registry."""
    local_registry.register_base("intent", base_model)
    config = _stored_file(local_registry, "intent", "1", "model/config.json")
    config.write_text(config.read_text().replace('"num_hidden_layers": 1', '"num_hidden_layers": 2'))
    manifest_path = config.parent.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model/config.json"]["sha256"] = sha256_file(config)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="differs from the registered"):
        local_registry.download_verified("intent", CHAMPION, tmp_path / "served")
    with pytest.raises(IntegrityError, match="stored manifest differs"):
        local_registry.champion("intent")


def test_tampered_export_is_not_registered(local_registry: ModelRegistry, base_model: Path, make_export):
    local_registry.register_base("intent", base_model)
    export = make_export(metrics_doc(0.93, 0.88))
    (export / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(IntegrityError, match="adapter/adapter_config.json"):
        local_registry.register_candidate("intent", export, {}, LINEAGE)
    assert CHALLENGER not in local_registry.aliases("intent")


def test_retried_registration_with_same_key_returns_same_version(
    local_registry: ModelRegistry, base_model: Path, make_export
):
    local_registry.register_base("intent", base_model)
    export = make_export(metrics_doc(0.93, 0.88))
    first = local_registry.register_candidate("intent", export, {}, LINEAGE, idempotency_key="spool-abc")
    again = local_registry.register_candidate("intent", export, {}, LINEAGE, idempotency_key="spool-abc")
    assert first == again == "2"


def test_unknown_version_and_non_hf_folder(local_registry: ModelRegistry, base_model: Path, tmp_path: Path):
    local_registry.register_base("intent", base_model)
    with pytest.raises(RegistryError, match="no version '9'"):
        local_registry.resolve("intent", "9")
    with pytest.raises(RegistryError, match="no version 'nosuchalias'"):
        local_registry.resolve("intent", "nosuchalias")
    assert local_registry.aliases("never-registered") == {}
    with pytest.raises(RegistryError, match="no previous champion"):
        local_registry.rollback("never-registered")
    with pytest.raises(RegistryError, match="no version 'champion'"):
        local_registry.champion("never-registered")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match="not a Hugging Face model folder"):
        local_registry.register_base("intent", empty)

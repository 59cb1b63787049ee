"""`distilld check`, `distilld config --schema` and environment overrides, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import yaml

from distilld.daemon.config import ConfigError, load_config


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "distilld.daemon", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_schema_is_valid_json_schema_with_documented_knobs():
    result = _cli("config", "--schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]
    window = defs["WindowsConfig"]["properties"]["window_records"]
    assert window["default"] == 5000 and window["description"]
    for name in ("KafkaConfig", "WindowsConfig", "RuleConfig", "RetrainLimitsConfig", "DetectorsConfig"):
        for field, spec in defs[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    jsonschema.validate(load_config().model_dump(mode="json"), schema)


def test_check_names_each_bad_field_and_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "kafka": {"max_poll_records": 0, "topicz": ["x"]},
                "policy": {"limits": {"maintenance_windows": [{"cron": "61 * * * *", "duration_s": 60}]}},
            }
        )
    )
    result = _cli("check", str(bad))
    assert result.returncode == 2
    err = result.stderr
    assert "kafka.max_poll_records" in err and "(got 0)" in err
    assert "kafka.topicz: unknown field" in err
    assert "policy.limits.maintenance_windows.0.cron" in err


def test_check_accepts_the_shipped_example_configs(tmp_path):
    from pathlib import Path

    examples = sorted(Path(__file__).resolve().parents[2].glob("deploy/examples/*.yaml"))
    assert examples, "deploy/examples must ship an example config"
    for path in examples:
        result = _cli("check", str(path))
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_not_yaml_and_missing_file_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [unclosed")
    result = _cli("check", str(broken))
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    result = _cli("check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"group_id": "from-file", "topics": ["a"]}}))
    monkeypatch.setenv("DISTILLD_KAFKA__GROUP_ID", "from-env")
    config = load_config(path)
    assert config.kafka.group_id == "from-env"
    assert config.kafka.topics == ["a"]
    monkeypatch.setenv("DISTILLD_WINDOWS__WINDOW_RECORDS", "not-a-number")
    try:
        load_config(path)
    except ConfigError as err:
        assert "windows.window_records" in str(err)
    else:
        raise AssertionError("a bad environment override must be a config error")

"""Offline checks of deploy/: everything parses, and names only real metrics, config keys and values.

No Docker engine or helm binary here, so images are not built and the chart is not rendered; what can
drift silently (metric names, config keys, value paths, entry points, ports) is checked against the code.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from distilld.daemon.config import DistilldConfig, HttpConfig, load_config
from distilld.daemon.metrics import DaemonMetrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "distilld"
COMPOSE = DEPLOY / "compose"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
RULES = DEPLOY / "prometheus" / "distilld.rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "distilld-dashboard.json"

# labels Prometheus attaches to every scraped series (kubernetes_sd / ServiceMonitor) plus the histogram's
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "le"}
SERIES_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def _exported() -> tuple[set[str], set[str], set[str]]:
    """(series names as scraped, metric family names, label names) of DaemonMetrics."""
    metrics = DaemonMetrics()
    series, families = set(), set()
    for family in metrics.registry.collect():
        families.add(family.name)
        suffixes = SERIES_SUFFIXES.get(family.type, ("",))
        series.update(family.name + s for s in suffixes)
    # prometheus_client has no public accessor for a metric's label names
    labels = {name for m in vars(metrics).values() for name in getattr(m, "_labelnames", ())}
    return series, families, labels


SERIES, FAMILIES, LABELS = _exported()


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bdistilld_[a-z0-9_]+\b", text))


def _check_promql(expr: str) -> None:
    names = _metric_names(expr)
    assert names, f"no distilld metric in {expr!r}"
    assert names <= SERIES, f"not exported by DaemonMetrics: {sorted(names - SERIES)} in {expr!r}"
    grouped = {g.strip() for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr) for g in clause.split(",")}
    assert grouped <= LABELS | TARGET_LABELS, f"no such label {sorted(grouped - LABELS - TARGET_LABELS)}"
    for open_, close in ("()", "[]", "{}"):
        assert expr.count(open_) == expr.count(close), f"unbalanced {open_}{close} in {expr!r}"


def _env_is_config_key(name: str) -> bool:
    """DISTILLD_SECTION__KEY names a field of DistilldConfig (the loader's nesting rule)."""
    model: type[BaseModel] = DistilldConfig
    parts = name.removeprefix("DISTILLD_").lower().split("__")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if depth < len(parts) - 1:
            if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
                return False
            model = field.annotation
    return True


def _env_names_in(config: dict[str, Any]) -> set[str]:
    """Variables the config itself names (http.control_token_env, signal.webhooks[].secret_env, ...)."""
    found = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_env") and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config)
    return found


def _check_env(names: set[str], config: dict[str, Any]) -> None:
    named = _env_names_in(config)
    for name in names:
        assert _env_is_config_key(name) or name in named, (
            f"{name} is neither a DISTILLD_<SECTION>__<KEY> override nor named by a *_env key in the config"
        )


def _valid_config(config: dict[str, Any], tmp_path: Path) -> DistilldConfig:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


@pytest.fixture(autouse=True)
def _no_ambient_overrides(monkeypatch):
    # the loader reads DISTILLD_* from the environment; the files alone are under test
    for name in [n for n in os.environ if n.startswith("DISTILLD_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEPLOY.rglob("*.yaml") if "templates" not in p.parts),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_yaml_parses(path):
    assert [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- container image -------------------------------------------------------------------------------


def test_dockerfile_runs_the_console_script_and_copies_existing_paths():
    text = DOCKERFILE.read_text()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    assert entrypoint[-1] in scripts, f"entry point {entrypoint} is not a console script of the package"
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user and int(user.group(1)) != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(user.group(1)) == values["podSecurityContext"]["runAsUser"]
    assert f"EXPOSE {HttpConfig().port}" in text


# --- Helm chart ------------------------------------------------------------------------------------


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in (CHART / "templates").iterdir()}


def test_chart_metadata_matches_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "distilld"
    assert chart["appVersion"] == project["version"]


def test_templates_reference_only_existing_values():
    values = _values()
    for name, text in _templates().items():
        for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
            node: Any = values
            for key in ref.strip(".").split("."):
                assert isinstance(node, dict) and key in node, f"{name}: .Values{ref} is not in values.yaml"
                node = node[key]


def test_templates_blocks_and_includes_are_consistent():
    templates = _templates()
    defined = set(re.findall(r'\{\{-? define "([^"]+)"', templates["_helpers.tpl"]))
    for name, text in templates.items():
        used = set(re.findall(r'include "([^"]+)"', text))
        assert used <= defined, f"{name} includes undefined {sorted(used - defined)}"
        opened = len(re.findall(r"\{\{-?\s*(?:if|with|range|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        assert opened == closed, f"{name}: {opened} blocks opened, {closed} closed"


def _helm_merge(base: Any, override: Any) -> Any:
    """Helm's -f semantics: maps merge key by key, anything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: _helm_merge(base[k], v) if k in base else v for k, v in override.items()} | {
            k: v for k, v in base.items() if k not in override
        }
    return override


@pytest.mark.parametrize("extra", [None, *sorted((CHART / "ci").glob("*.yaml"))], ids=lambda p: p and p.name)
def test_chart_config_validates_and_its_environment_names_real_keys(extra, tmp_path):
    values = _values()
    if extra is not None:
        values = _helm_merge(values, yaml.safe_load(extra.read_text()))
        unknown = set(yaml.safe_load(extra.read_text())) - set(_values())
        assert not unknown, f"{extra.name} sets values the chart does not have: {unknown}"
    _valid_config(values["config"], tmp_path)
    assert all({"name", "secretName", "secretKey"} <= set(item) for item in values["secretEnv"])
    statefulset = _templates()["statefulset.yaml"]
    names = set(re.findall(r"name: (DISTILLD_[A-Z0-9_]+)", statefulset))
    assert {"DISTILLD_HTTP__HOST", "DISTILLD_HTTP__PORT", "DISTILLD_STATE__STATE_DIR"} <= names
    _check_env(names | {item["name"] for item in values["secretEnv"]}, values["config"])


def test_chart_probes_use_the_daemon_endpoints():
    statefulset = _templates()["statefulset.yaml"]
    probes = dict(
        re.findall(r"(livenessProbe|readinessProbe):\s*\n\s*httpGet:\s*\n\s*path: (\S+)", statefulset)
    )
    assert probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert _values()["service"]["port"] == HttpConfig().port


# --- compose ---------------------------------------------------------------------------------------


def test_compose_stack_is_complete_and_its_config_validates(tmp_path):
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "mlflow", "distilld", "serving"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, service in services.items():
        missing = set(service.get("depends_on", {})) - set(services)
        assert not missing, f"{name} depends on unknown services {missing}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"

    build = services["distilld"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    mount = next(v for v in services["distilld"]["volumes"] if v.endswith(":/etc/distilld/config.yaml:ro"))
    config_data = yaml.safe_load((COMPOSE / mount.split(":")[0]).read_text())
    _valid_config(config_data, tmp_path)
    _check_env({n for n in services["distilld"]["environment"] if n.startswith("DISTILLD_")}, config_data)


def test_compose_runs_the_serving_consumer_shipped_in_the_image():
    serving = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["serving"]
    script = serving["entrypoint"][-1]
    assert re.search(
        rf"^COPY deploy/examples/serving_consumer.py {re.escape(script)}$", DOCKERFILE.read_text(), re.M
    )
    accepted = set(
        re.findall(r'add_argument\("(--[a-z-]+)"', (DEPLOY / "examples" / "serving_consumer.py").read_text())
    )
    given = {arg.split("=")[0] for arg in serving["command"]}
    assert given <= accepted, f"serving_consumer.py does not accept {sorted(given - accepted)}"


# --- Prometheus rules and Grafana dashboard --------------------------------------------------------


def test_alert_rules_use_only_exported_metrics():
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        _check_promql(rule["expr"])
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and re.fullmatch(r"\d+[smh]", rule["for"])
        mentioned = _metric_names(" ".join(rule["annotations"].values()))
        assert mentioned <= SERIES | FAMILIES, (
            f"{rule['alert']} mentions unknown {mentioned - SERIES - FAMILIES}"
        )


def test_alerts_cover_the_operational_failure_modes():
    exprs = " ".join(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"])
    for family in (
        "distilld_consumer_lag_records",
        "distilld_records_dead_lettered",
        "distilld_ready",
        "distilld_commit_failures",
        "distilld_kafka_errors",
        "distilld_batch_seconds",
    ):
        assert family in exprs, f"no alert on {family}"


def test_dashboard_panels_use_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            _check_promql(target["expr"])
            legend_labels = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            assert legend_labels <= LABELS | TARGET_LABELS, f"{panel['title']}: legend uses {legend_labels}"
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for variable in variables:
        assert _metric_names(variable["definition"]) <= SERIES
    shown = {name for p in panels for t in p["targets"] for name in _metric_names(t["expr"])}
    unshown = {f for f in FAMILIES if not any(s.startswith(f) for s in shown)}
    assert not unshown, f"metrics without a panel: {sorted(unshown)}"

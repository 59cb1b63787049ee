"""MLflow tracking + model registry for distilld's students.

Layout in MLflow:
- one experiment per served model (``<experiment_prefix><model>``), one run per
  registration (the base model, then one per re-distillation);
- run artifacts under ``bundle/``: the trainer's export layout — ``model/``
  (merged weights + tokenizer, loadable by transformers as is), ``adapter/``,
  ``metrics.json``, ``spec.json`` — plus ``decision_record.json``, ``reports/``
  and ``manifest.json`` (sha256 and size of every other file); a base model's
  bundle holds only ``model/`` and the manifest. Params = the job spec,
  metrics = the trainer's evaluation of candidate and champion, tags = lineage;
- one registered model per served model; each version's tag
  ``distilld.manifest_sha256`` is the trust anchor checked before use;
- aliases: ``challenger`` (latest registered candidate), ``champion`` (served),
  ``previous-champion`` (what ``rollback`` returns to). The full champion
  history is the registered model's tag ``distilld.champion_history``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilld.registry.config import RegistryConfig
from distilld.registry.integrity import (
    MANIFEST_NAME,
    IntegrityError,
    manifest_digest,
    manifest_for,
    manifest_sha256,
    verify_folder,
)

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
BUNDLE_ARTIFACT_PATH = "bundle"
HF_MODEL_DIR = "model"

TAG_MANIFEST = "distilld.manifest_sha256"
TAG_KIND = "distilld.kind"
TAG_HISTORY = "distilld.champion_history"
TAG_IDEMPOTENCY = "distilld.idempotency_key"
TAG_DISTILLD_VERSION = "distilld.version"
TAG_RULE = "distilld.rule"
TAG_DECISION_ID = "distilld.decision_id"
TAG_OFFSETS = "distilld.kafka_offsets"
TAG_PARENT = "distilld.parent_version"
TAG_GATE_REASON = "distilld.gate_reason"
TAG_STATUS = "distilld.status"

_PARAM_VALUE_MAX_CHARS = 500
_TAG_VALUE_MAX_CHARS = 5000


class RegistryError(RuntimeError):
    """A registry operation cannot be done (as opposed to the registry being unreachable)."""


@dataclass(frozen=True)
class ModelVersionInfo:
    model: str
    version: str
    uri: str
    run_id: str
    manifest_sha256: str
    sha256: dict[str, str]
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


def _distilld_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distilld")
    except PackageNotFoundError:
        return "unknown"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value
    return out


def _stage_copy(src: Path, dest: Path) -> None:
    """Hard-link (or copy) ``src`` into ``dest`` without its manifest, which is rewritten there."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link_or_copy, ignore=shutil.ignore_patterns(MANIFEST_NAME))


class ModelRegistry:
    """Registers, promotes and rolls back student models in MLflow. Never imports Kafka."""

    def __init__(self, config: RegistryConfig, state_dir: Path):
        self.config = config
        self.state_dir = Path(state_dir)
        if config.tracking_uri is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.tracking_uri = f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"
            self.artifact_location = config.artifact_location or (
                (self.state_dir / "mlflow-artifacts").resolve().as_uri()
            )
        else:
            self.tracking_uri = config.tracking_uri
            self.artifact_location = config.artifact_location
        self.registry_uri = config.registry_uri or self.tracking_uri
        # MLflow reads these from the environment on each request; the daemon has one registry.
        if config.s3_endpoint_url:
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = config.s3_endpoint_url
        if config.s3_region:
            os.environ.setdefault("AWS_DEFAULT_REGION", config.s3_region)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(config.http_max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(config.http_timeout_s)))
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client

    def registered_name(self, model: str) -> str:
        return f"{self.config.registered_model_prefix}{model}"

    # -- experiments and registered models ---------------------------------------------------------

    def _experiment_id(self, model: str) -> str:
        name = f"{self.config.experiment_prefix}{model}"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(
            name, artifact_location=self.artifact_location, tags={"distilld.model": model}
        )

    def _ensure_registered_model(self, model: str) -> None:
        if self._registered_model(model) is None:
            self.client.create_registered_model(
                self.registered_name(model),
                tags={"distilld.model": model},
                description=f"Student model {model!r}, managed by distilld.",
            )

    def _find_run(self, experiment_id: str, idempotency_key: str):
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_IDEMPOTENCY}` = '{idempotency_key}'", max_results=5
        )
        return runs[0] if runs else None

    def _version_of_run(self, model: str, run_id: str) -> str | None:
        versions = self.client.search_model_versions(
            f"name='{self.registered_name(model)}' and run_id='{run_id}'"
        )
        return str(versions[0].version) if versions else None

    # -- registration ------------------------------------------------------------------------------

    def _register(
        self,
        model: str,
        staged: Path,
        run_tags: dict[str, str],
        version_tags: dict[str, str],
        params: dict[str, Any],
        metrics: dict[str, float],
        manifest_extra: dict[str, Any],
    ) -> str:
        from mlflow.entities import Metric, Param

        manifest = manifest_for(staged, manifest_extra)
        (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        digest = manifest_digest(manifest)

        experiment_id = self._experiment_id(model)
        key = run_tags.get(TAG_IDEMPOTENCY)
        if key:
            previous = self._find_run(experiment_id, key)
            if previous is not None:
                existing = self._version_of_run(model, previous.info.run_id)
                if existing is not None:
                    logger.info(
                        "registration already done", extra={"model": model, "version": existing, "key": key}
                    )
                    return existing
                self.client.set_terminated(previous.info.run_id, status="FAILED")

        run = self.client.create_run(
            experiment_id, tags={**run_tags, TAG_DISTILLD_VERSION: _distilld_version(), TAG_MANIFEST: digest}
        )
        run_id = run.info.run_id
        try:
            now_ms = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)[:_PARAM_VALUE_MAX_CHARS]) for k, v in params.items()],
            )
            self.client.log_artifacts(run_id, str(staged), BUNDLE_ARTIFACT_PATH)
            self.client.set_terminated(run_id, status="FINISHED")
        except Exception:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self._ensure_registered_model(model)
        version = self.client.create_model_version(
            self.registered_name(model),
            source=f"runs:/{run_id}/{BUNDLE_ARTIFACT_PATH}",
            run_id=run_id,
            tags={**version_tags, TAG_MANIFEST: digest},
        ).version
        logger.info("model version registered", extra={"model": model, "version": version, "run_id": run_id})
        return str(version)

    def register_base(self, model_name: str, hf_folder: Path) -> str:
        """Register an existing Hugging Face folder and make it the champion (bootstrap)."""
        hf_folder = Path(hf_folder)
        if not (hf_folder / "config.json").is_file():
            raise RegistryError(f"{hf_folder} is not a Hugging Face model folder (no config.json)")
        with tempfile.TemporaryDirectory(prefix="distilld-stage-") as tmp:
            staged = Path(tmp) / BUNDLE_ARTIFACT_PATH
            _stage_copy(hf_folder, staged / HF_MODEL_DIR)
            version = self._register(
                model_name,
                staged,
                run_tags={TAG_KIND: "base", "mlflow.runName": f"{model_name}-base"},
                version_tags={TAG_KIND: "base"},
                params={"source_folder": str(hf_folder.resolve())},
                metrics={},
                manifest_extra={"model": model_name, "kind": "base"},
            )
        self._make_champion(model_name, version)
        return version

    def register_candidate(
        self,
        model_name: str,
        export_dir: Path,
        decision_record: dict[str, Any],
        lineage: dict[str, Any],
        idempotency_key: str | None = None,
        reports: tuple[Path, ...] = (),
    ) -> str:
        """Register a trainer export as a new version with alias ``challenger``.

        ``lineage`` keys understood: ``rule``, ``decision_id``, ``offsets`` (list of
        {topic, partition, start, end}), ``parent_version``; others become
        ``distilld.lineage.<key>`` tags. ``idempotency_key`` makes a retried call
        (after a crash mid-registration) return the version already created.
        """
        export_dir = Path(export_dir)
        trainer_manifest = verify_folder(export_dir)
        if not (export_dir / HF_MODEL_DIR / "config.json").is_file():
            raise RegistryError(f"{export_dir} has no {HF_MODEL_DIR}/config.json; not a trainer export")
        metrics_doc = json.loads((export_dir / "metrics.json").read_text())
        spec = (
            json.loads((export_dir / "spec.json").read_text()) if (export_dir / "spec.json").is_file() else {}
        )

        run_tags = {TAG_KIND: "candidate", "mlflow.runName": f"{model_name}-{lineage.get('rule', 'retrain')}"}
        version_tags = {TAG_KIND: "candidate"}
        for key, tag in (
            ("rule", TAG_RULE),
            ("decision_id", TAG_DECISION_ID),
            ("parent_version", TAG_PARENT),
        ):
            if lineage.get(key) is not None:
                run_tags[tag] = version_tags[tag] = str(lineage[key])
        if lineage.get("offsets") is not None:
            run_tags[TAG_OFFSETS] = json.dumps(lineage["offsets"], sort_keys=True)[:_TAG_VALUE_MAX_CHARS]
        for key, value in lineage.items():
            if key not in ("rule", "decision_id", "parent_version", "offsets"):
                text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                run_tags[f"distilld.lineage.{key}"] = text[:_TAG_VALUE_MAX_CHARS]
        if idempotency_key:
            run_tags[TAG_IDEMPOTENCY] = idempotency_key

        with tempfile.TemporaryDirectory(prefix="distilld-stage-") as tmp:
            staged = Path(tmp) / BUNDLE_ARTIFACT_PATH
            _stage_copy(export_dir, staged)
            (staged / "decision_record.json").write_text(
                json.dumps(decision_record, indent=2, sort_keys=True)
            )
            for report in reports:
                (staged / "reports").mkdir(exist_ok=True)
                shutil.copyfile(report, staged / "reports" / Path(report).name)
            extra = {k: v for k, v in trainer_manifest.items() if k not in ("files", "manifest_version")}
            version = self._register(
                model_name,
                staged,
                run_tags=run_tags,
                version_tags=version_tags,
                params=_flatten("", spec, {}),
                metrics={
                    k: float(v)
                    for k, v in _flatten("", metrics_doc, {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                },
                manifest_extra={**extra, "model": model_name, "kind": "candidate"},
            )
        self.set_alias(model_name, CHALLENGER, version)
        return version

    # -- aliases -----------------------------------------------------------------------------------

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.registered_name(model), alias, str(version))
        logger.info("alias set", extra={"model": model, "alias": alias, "version": str(version)})

    def resolve(self, model: str, alias_or_version: str):
        """The MLflow ModelVersion for a version number or an alias; RegistryError if absent."""
        from mlflow.exceptions import MlflowException

        name = self.registered_name(model)
        try:
            if str(alias_or_version).isdigit():
                return self.client.get_model_version(name, str(alias_or_version))
            return self.client.get_model_version_by_alias(name, alias_or_version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise RegistryError(f"{model}: no version {alias_or_version!r}") from exc
            raise

    def _registered_model(self, model: str):
        """The MLflow RegisteredModel, or None if nothing was registered under that name yet."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

        try:
            return self.client.get_registered_model(self.registered_name(model))
        except MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise

    def aliases(self, model: str) -> dict[str, str]:
        registered = self._registered_model(model)
        return {a: str(v) for a, v in registered.aliases.items()} if registered is not None else {}

    def _history(self, model: str) -> list[str]:
        registered = self._registered_model(model)
        if registered is None:
            return []
        raw = registered.tags.get(TAG_HISTORY)
        if raw:
            return [str(v) for v in json.loads(raw)]
        current = registered.aliases.get(CHAMPION)
        return [str(current)] if current is not None else []

    def _set_history(self, model: str, history: list[str]) -> None:
        # Bounded so the tag stays well below MLflow's value limit.
        self.client.set_registered_model_tag(
            self.registered_name(model), TAG_HISTORY, json.dumps(history[-50:])
        )

    def _make_champion(self, model: str, version: str) -> None:
        self._ensure_registered_model(model)
        history = self._history(model)
        if history and history[-1] == version:
            return
        previous = history[-1] if history else None
        self.set_alias(model, CHAMPION, version)
        if previous is not None:
            self.set_alias(model, PREVIOUS_CHAMPION, previous)
        self._set_history(model, [*history, version])
        name = self.registered_name(model)
        self.client.set_model_version_tag(name, version, TAG_STATUS, "champion")
        self.client.set_model_version_tag(name, version, "distilld.promoted_at", f"{time.time():.3f}")
        if self.aliases(model).get(CHALLENGER) == version:
            self.client.delete_registered_model_alias(name, CHALLENGER)

    # -- promotion and rollback --------------------------------------------------------------------

    def promote(self, model: str, version: str) -> ModelVersionInfo:
        """Make ``version`` the champion after checking its files; the old one becomes previous-champion."""
        version = str(version)
        with tempfile.TemporaryDirectory(prefix="distilld-verify-") as tmp:
            self.download_verified(model, version, Path(tmp) / "model")
        self._make_champion(model, version)
        return self.version_info(model, version)

    def keep_as_challenger(self, model: str, version: str, reason: str) -> None:
        name = self.registered_name(model)
        self.client.set_model_version_tag(name, str(version), TAG_STATUS, "challenger")
        self.client.set_model_version_tag(name, str(version), TAG_GATE_REASON, reason[:_TAG_VALUE_MAX_CHARS])

    def rollback(self, model: str) -> str:
        """Move ``champion`` back to the version before it; returns that version."""
        history = self._history(model)
        if len(history) < 2:
            raise RegistryError(f"{model}: no previous champion to roll back to")
        current, target = history[-1], history[-2]
        with tempfile.TemporaryDirectory(prefix="distilld-verify-") as tmp:
            self.download_verified(model, target, Path(tmp) / "model")
        name = self.registered_name(model)
        self.set_alias(model, CHAMPION, target)
        remaining = history[:-1]
        if len(remaining) >= 2:
            self.set_alias(model, PREVIOUS_CHAMPION, remaining[-2])
        elif PREVIOUS_CHAMPION in self.aliases(model):
            self.client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
        self._set_history(model, remaining)
        self.client.set_model_version_tag(name, current, TAG_STATUS, "rolled-back")
        self.client.set_model_version_tag(name, current, "distilld.rolled_back_at", f"{time.time():.3f}")
        logger.warning("champion rolled back", extra={"model": model, "from": current, "to": target})
        return target

    # -- reading -----------------------------------------------------------------------------------

    def version_info(self, model: str, alias_or_version: str) -> ModelVersionInfo:
        """Version, artifact URI and the recorded sha256 of each file (manifest checked against its tag)."""
        mv = self.resolve(model, alias_or_version)
        expected = mv.tags.get(TAG_MANIFEST)
        if not expected:
            raise IntegrityError(f"{model} v{mv.version} has no recorded {TAG_MANIFEST}; refusing to use it")
        with tempfile.TemporaryDirectory(prefix="distilld-manifest-") as tmp:
            local = self.client.download_artifacts(mv.run_id, f"{BUNDLE_ARTIFACT_PATH}/{MANIFEST_NAME}", tmp)
            manifest = json.loads(Path(local).read_text())
        if manifest_digest(manifest) != expected:
            raise IntegrityError(f"{model} v{mv.version}: stored manifest differs from the registered digest")
        run = self.client.get_run(mv.run_id)
        aliases = tuple(a for a, v in self.aliases(model).items() if v == str(mv.version))
        return ModelVersionInfo(
            model=model,
            version=str(mv.version),
            uri=f"{run.info.artifact_uri.rstrip('/')}/{BUNDLE_ARTIFACT_PATH}",
            run_id=mv.run_id,
            manifest_sha256=expected,
            sha256=manifest_sha256(manifest),
            aliases=aliases,
            tags=dict(mv.tags),
            metrics=dict(run.data.metrics),
        )

    def champion(self, model: str) -> ModelVersionInfo:
        return self.version_info(model, CHAMPION)

    def download_verified(self, model: str, alias_or_version: str, dest: Path) -> Path:
        """Download a version's bundle to ``dest`` and check it; IntegrityError (and no folder) on mismatch.

        The Hugging Face model (e.g. the base of the next training job) is ``dest / HF_MODEL_DIR``.
        """
        mv = self.resolve(model, alias_or_version)
        expected = mv.tags.get(TAG_MANIFEST)
        if not expected:
            raise IntegrityError(f"{model} v{mv.version} has no recorded {TAG_MANIFEST}; refusing to use it")
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="distilld-download-", dir=dest.parent) as tmp:
            local = Path(self.client.download_artifacts(mv.run_id, BUNDLE_ARTIFACT_PATH, tmp))
            try:
                verify_folder(local, expected_digest=expected)
            except IntegrityError:
                logger.error(
                    "registered model failed its integrity check; refusing it",
                    extra={"model": model, "version": str(mv.version)},
                )
                raise
            local.rename(dest)
        return dest

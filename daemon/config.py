"""The daemon's configuration: one pydantic model, loaded from YAML, overridable by environment.

Every knob has a default, a unit in its name and a description (shown by
``distilld config --schema``). Environment variables override the file:
``DISTILLD_KAFKA__BOOTSTRAP_SERVERS='["broker:9092"]'`` sets
``kafka.bootstrap_servers`` (``__`` separates nesting levels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from distilld.daemon.policy_config import PolicyConfig
from distilld.detectors.config import DetectorsConfig
from distilld.registry.config import NotificationsConfig, RegistryConfig, SignalConfig
from distilld.trainers.config import TrainerConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaConfig(Section):
    """Where the inference logs come from and where bad records go."""

    bootstrap_servers: list[str] = Field(
        default=["127.0.0.1:9092"], min_length=1, description="Kafka bootstrap servers, host:port."
    )
    topics: list[str] = Field(
        default=["inference-logs"], min_length=1, description="Topics carrying inference log records."
    )
    dead_letter_topic: str = Field(
        default="inference-logs.dead-letter",
        min_length=1,
        description="Topic receiving every record that fails decoding or validation, with the reason in headers.",
    )
    group_id: str = Field(default="distilld", min_length=1, description="Consumer group id.")
    group_instance_id: str | None = Field(
        default=None,
        description="Static group membership id (KIP-345); set one per replica to avoid a rebalance on restart.",
    )
    client_id: str = Field(default="distilld", description="Client id reported to the brokers.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a group with no committed offset starts."
    )
    max_poll_records: int = Field(default=2000, ge=1, le=100_000, description="Records per poll (one batch).")
    poll_timeout_ms: int = Field(default=500, ge=1, description="How long one poll waits for records.")
    session_timeout_ms: int = Field(default=10_000, ge=1000, description="Group session timeout.")
    max_poll_interval_ms: int = Field(
        default=300_000, ge=1000, description="Longest gap between polls before the group evicts this member."
    )
    create_topics: bool = Field(
        default=False,
        description="Create the input and dead-letter topics at start if missing (embedded stack; "
        "in production topics are provisioned).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Passed to kafka-python."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = (
        Field(default=None, description="SASL mechanism when security_protocol is SASL_*.")
    )
    sasl_plain_username: str | None = Field(default=None, description="SASL username.")
    sasl_plain_password: SecretStr | None = Field(
        default=None,
        description="SASL password; prefer the environment variable DISTILLD_KAFKA__SASL_PLAIN_PASSWORD.",
    )
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for TLS.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(default=None, description="Client key for mutual TLS.")
    ssl_check_hostname: bool = Field(
        default=True, description="Verify the broker's hostname against its cert."
    )
    client_options: dict[str, Any] = Field(
        default_factory=dict, description="Any other kafka-python client option, passed through unchanged."
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.dead_letter_topic in self.topics:
            raise ValueError("dead_letter_topic must differ from the input topics (bad records would loop)")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Options shared by the consumer, the dead-letter producer and the admin client."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_plain_username is not None:
            kw["sasl_plain_username"] = self.sasl_plain_username
        if self.sasl_plain_password is not None:
            kw["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value is not None:
                kw[key] = str(value)
        if self.security_protocol.endswith("SSL"):
            kw["ssl_check_hostname"] = self.ssl_check_hostname
        kw.update(self.client_options)
        return kw


class WindowsConfig(Section):
    """How records are grouped per (model, model_version) before detectors score them."""

    window_records: int = Field(
        default=5000, ge=10, description="A window closes once it holds this many records."
    )
    window_s: float | None = Field(
        default=900.0,
        gt=0,
        description="A window also closes this many seconds (processing time) after its first record, "
        "if it holds at least min_window_records; null disables time-based closing.",
    )
    min_window_records: int = Field(
        default=200,
        ge=1,
        description="A time-based close needs at least this many records; fewer keep the window open.",
    )

    @model_validator(mode="after")
    def _min_below_size(self) -> WindowsConfig:
        if self.min_window_records > self.window_records:
            raise ValueError("min_window_records must not exceed window_records")
        return self


class ModelSpec(Section):
    """What the daemon knows about one served model."""

    num_classes: int | None = Field(
        default=None,
        ge=2,
        description="Expected logits length; records with another length are dead-lettered.",
    )


class StateConfig(Section):
    state_dir: Path = Field(
        default=Path("var/distilld"),
        description="Folder for the SQLite state store, buffers, spools and reports.",
    )


class HttpConfig(Section):
    host: str = Field(
        default="127.0.0.1", description="Address of the metrics/health/status/control endpoint."
    )
    port: int = Field(default=9464, ge=0, le=65535, description="Port of that endpoint; 0 picks a free one.")
    control_token_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding a bearer token required by the control "
        "endpoints (retrain, pause, resume); unset means control is open to whoever reaches host:port.",
    )


class LoggingConfig(Section):
    format: Literal["json", "kv"] = Field(default="json", description="json lines, or key=value for humans.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_input_text: bool = Field(
        default=False, description="Allow raw input text in logs (off: texts never reach a log line)."
    )
    status_interval_s: float = Field(
        default=10.0, gt=0, description="Period of the daemon's status log line."
    )


class DistilldConfig(BaseSettings):
    """distilld configuration (YAML file, environment overrides with prefix DISTILLD_)."""

    model_config = SettingsConfigDict(
        env_prefix="DISTILLD_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="Kafka connection and topics.")
    windows: WindowsConfig = Field(
        default_factory=WindowsConfig, description="Windowing of the record stream."
    )
    models: dict[str, ModelSpec] = Field(
        default_factory=dict, description="Per served model settings, keyed by the record's `model` field."
    )
    state: StateConfig = Field(default_factory=StateConfig, description="Durable state location.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="Metrics, health, status and control.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Structured logging.")
    detectors: DetectorsConfig = Field(
        default_factory=DetectorsConfig,
        description="Drift and divergence detectors, references, calibration.",
    )
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig, description="Retrain rules with hysteresis, limits, schedules, dry-run."
    )
    trainer: TrainerConfig = Field(
        default_factory=TrainerConfig,
        description="Training buffer, teacher source and LoRA re-distillation jobs.",
    )
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig,
        description="MLflow tracking/registry, artifact store, promotion gate.",
    )
    signal: SignalConfig = Field(
        default_factory=SignalConfig, description="CloudEvents to the serving layer (Kafka topic + webhooks)."
    )
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig, description="Messages to humans (Slack, JSON webhooks)."
    )

    @model_validator(mode="after")
    def _reference_matches_windows(self) -> DistilldConfig:
        # thresholds are calibrated on reference sub-windows; they only hold
        # for windows of the same size
        sub = self.detectors.subwindow_records
        if sub != self.windows.window_records:
            raise ValueError(
                f"detectors.reference_records / detectors.calibration_subwindows = {sub} must equal "
                f"windows.window_records = {self.windows.window_records} (calibration assumes equal sizes)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # the environment overrides the file (twelve-factor), not the other way round
        return (env_settings, init_settings)

    def expected_classes(self, model: str) -> int | None:
        spec = self.models.get(model)
        return spec.num_classes if spec else None


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists (field, value, why)."""

    def __init__(self, source: str, problems: list[tuple[str, Any, str]]):
        self.source = source
        self.problems = problems
        lines = [f"invalid configuration in {source}:"]
        for field, value, why in problems:
            shown = "" if value is _MISSING else f" (got {value!r})"
            lines.append(f"  - {field}: {why}{shown}")
        super().__init__("\n".join(lines))


_MISSING = object()


def _problems(err: ValidationError) -> list[tuple[str, Any, str]]:
    out = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input", _MISSING) if e["type"] not in ("missing",) else _MISSING
        if isinstance(value, dict):
            value = _MISSING
        why = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            why = "unknown field (typo?)"
        out.append((loc, value, why))
    return out


def load_config(path: Path | None = None, **overrides: Any) -> DistilldConfig:
    """Read YAML (if given), apply environment overrides, validate; raise ConfigError on any problem."""
    source = str(path) if path else "(defaults)"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(source, [("(file)", _MISSING, f"cannot read: {err.strerror}")]) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(source, [("(file)", _MISSING, f"not valid YAML: {err}")]) from None
        if not isinstance(data, dict):
            raise ConfigError(source, [("(top level)", _MISSING, "must be a mapping of sections")])
    data.update(overrides)
    try:
        return DistilldConfig(**data)
    except ValidationError as err:
        raise ConfigError(source, _problems(err)) from None


def json_schema() -> dict[str, Any]:
    return DistilldConfig.model_json_schema()

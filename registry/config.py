"""Configuration of the registry, the promotion gate, the serving signal and notifications.

These section models are composed by the daemon's top-level configuration; each
one is usable on its own (tests, ``distilld register-base``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator


class GateConfig(BaseModel):
    """When a candidate may replace the champion. Metrics are fractions in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    min_agreement_gain: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="Teacher agreement on the fresh holdout must beat the champion's by at least this "
        "(fraction, 0.01 = one percentage point). 0 means 'at least as good'.",
    )
    max_replay_drop: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Largest tolerated fall of teacher agreement (and accuracy, when both have labels) "
        "on the replay/golden set, as a fraction.",
    )
    require_manual_approval: bool = Field(
        False,
        description="Keep every candidate that passes the gate as 'challenger' until "
        "`distilld promote --model M --version V` is run.",
    )
    require_parent_is_champion: bool = Field(
        True,
        description="Refuse to promote a candidate whose parent is no longer the champion "
        "(the champion changed while it trained, so its comparison is stale).",
    )


class RegistryConfig(BaseModel):
    """Where models are tracked and stored."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (e.g. http://mlflow:5000). None: a local SQLite store "
        "sqlite:///<state_dir>/mlflow.db with artifacts under <state_dir>/mlflow-artifacts.",
    )
    registry_uri: str | None = Field(
        None, description="MLflow model registry URI. None: the same as the tracking URI."
    )
    artifact_location: str | None = Field(
        None,
        description="Artifact root for new experiments (a folder, file:// or s3://bucket/prefix). "
        "None: the tracking server's default (local folder for the embedded store).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint for S3-compatible stores (MinIO, moto). Exported to MLflow as "
        "MLFLOW_S3_ENDPOINT_URL. Credentials come from the standard AWS chain.",
    )
    s3_region: str | None = Field(None, description="S3 region name, e.g. eu-west-1.")
    snapshot_location: str | None = Field(
        None,
        description="Where training snapshots go (folder or s3://bucket/prefix). None: <state_dir>/snapshots.",
    )
    experiment_prefix: str = Field(
        "distilld/", description="Prefix of the MLflow experiment name; one experiment per served model."
    )
    registered_model_prefix: str = Field(
        "", description="Prefix of registered model names (e.g. a team namespace)."
    )
    http_timeout_s: float = Field(
        30.0, gt=0, description="Timeout of one HTTP request to a remote tracking server, in seconds."
    )
    http_max_retries: int = Field(
        2,
        ge=0,
        description="MLflow client retries per request against a remote tracking server; the spool "
        "retries beyond that, so keep this small.",
    )
    spool_retry_initial_s: float = Field(
        5.0, gt=0, description="First wait before retrying a spooled registration or event, in seconds."
    )
    spool_retry_max_s: float = Field(
        600.0, gt=0, description="Longest wait between retries of a spooled item, in seconds."
    )
    gate: GateConfig = Field(default_factory=GateConfig, description="The promotion gate.")


class WebhookConfig(BaseModel):
    """One receiver of serving signals."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="Endpoint that receives each CloudEvent as an HTTP POST.")
    secret_env: str | None = Field(
        None,
        description="Name of the environment variable holding the HMAC-SHA256 secret. The body is "
        "signed in the header `X-Distilld-Signature: sha256=<hex>`. None: unsigned.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one POST, in seconds.")
    max_retries: int = Field(3, ge=0, description="Retries after a failed POST, with exponential backoff.")
    backoff_initial_s: float = Field(0.5, gt=0, description="Wait before the first retry, in seconds.")


class SignalConfig(BaseModel):
    """How the serving layer learns about promotions and rollbacks."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field("model-events", min_length=1, description="Kafka topic of the CloudEvents.")
    source: str = Field(
        "urn:distilld", min_length=1, description="CloudEvents `source` attribute of emitted events."
    )
    kafka_timeout_s: float = Field(
        10.0, gt=0, description="How long to wait for the broker to acknowledge an event, in seconds."
    )
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="HTTP receivers; each gets every event, signed."
    )


class NotificationsConfig(BaseModel):
    """Messages for the on-call humans."""

    model_config = ConfigDict(extra="forbid")

    slack_webhook_url: HttpUrl | None = Field(
        None, description="Slack (or Mattermost, Rocket.Chat) incoming-webhook URL."
    )
    json_webhook_urls: list[HttpUrl] = Field(
        default_factory=list, description="Generic receivers; each gets one JSON object per notification."
    )
    dedupe_window_s: float = Field(
        900.0,
        ge=0,
        description="Identical notifications (same kind, model and subject) within this many seconds are dropped.",
    )
    max_per_hour: int = Field(
        30,
        ge=1,
        description="At most this many notifications per rolling hour; the rest are counted and "
        "summarised in the next one that goes out.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one POST, in seconds.")
    max_retries: int = Field(2, ge=0, description="Immediate retries of a failed POST before spooling it.")

    @field_validator("json_webhook_urls")
    @classmethod
    def _unique(cls, urls: list[HttpUrl]) -> list[HttpUrl]:
        if len({str(u) for u in urls}) != len(urls):
            raise ValueError("json_webhook_urls contains duplicates")
        return urls

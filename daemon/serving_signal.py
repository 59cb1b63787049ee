"""Tells the serving layer that the champion changed: CloudEvents on Kafka and signed webhooks.

Every event is a CloudEvents 1.0 JSON document in *structured* mode:

- Kafka: topic ``SignalConfig.topic`` (default ``model-events``), message key =
  model name (so events of one model stay ordered in one partition), value =
  the JSON event, header ``content-type: application/cloudevents+json; charset=UTF-8``.
- Webhooks: ``POST`` of the same bytes with ``Content-Type:
  application/cloudevents+json; charset=utf-8`` and, when a secret is
  configured, ``X-Distilld-Signature: sha256=<hex>`` where ``<hex>`` is
  HMAC-SHA256 of the raw request body keyed with the secret. Receivers must
  compute it over the bytes they received before parsing, and compare in
  constant time (``verify_signature``).

Delivery is tracked per target (``kafka``, ``webhook:<url>``) so a retry
re-sends only to the targets that have not acknowledged; receivers should
still be idempotent (dedupe on the event ``id``, or ignore a version already
served).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import requests

from distilld.registry.config import SignalConfig, WebhookConfig
from distilld.registry.model_registry import ModelVersionInfo

logger = logging.getLogger(__name__)

EVENT_PROMOTED = "distilld.model.promoted"
EVENT_ROLLED_BACK = "distilld.model.rolled_back"
SIGNATURE_HEADER = "X-Distilld-Signature"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
KAFKA_TARGET = "kafka"

_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def sign(body: bytes, secret: str | bytes) -> str:
    """The value of the ``X-Distilld-Signature`` header for ``body``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str | bytes, header_value: str | None) -> bool:
    return header_value is not None and hmac.compare_digest(sign(body, secret), header_value)


def model_event(
    event_type: str,
    info: ModelVersionInfo,
    source: str,
    alias: str = "champion",
    metrics: dict[str, float] | None = None,
    previous_version: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A CloudEvents 1.0 event announcing that ``alias`` of ``info.model`` now points at ``info.version``."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "subject": info.model,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "model": info.model,
            "version": info.version,
            "alias": alias,
            "previous_version": previous_version,
            "artifact_uri": info.uri,
            "model_uri": info.model_uri,
            "run_id": info.run_id,
            "manifest_sha256": info.manifest_sha256,
            "sha256": info.sha256,
            "metrics": metrics or {},
            "reason": reason,
        },
    }


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


def webhook_target(webhook: WebhookConfig) -> str:
    return f"webhook:{webhook.url}"


class ServingSignal:
    """Publishes model events. ``bootstrap_servers`` None: webhooks only."""

    def __init__(
        self,
        config: SignalConfig,
        bootstrap_servers: str | list[str] | None,
        producer_config: dict[str, Any] | None = None,
    ):
        self.config = config
        self.bootstrap_servers = bootstrap_servers
        self.producer_config = producer_config or {}
        self._producer = None
        self._session = requests.Session()

    def targets(self) -> list[str]:
        targets = [KAFKA_TARGET] if self.bootstrap_servers else []
        return targets + [webhook_target(w) for w in self.config.webhooks]

    def _kafka(self):
        if self._producer is None:
            from kafka import KafkaProducer

            options = {"client_id": f"distilld-signal-{socket.gethostname()}", **self.producer_config}
            # Every event must reach all in-sync replicas: it is the only trigger serving gets.
            options["acks"] = "all"
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers, **options)
        return self._producer

    def send_kafka(self, event: dict[str, Any]) -> None:
        future = self._kafka().send(
            self.config.topic,
            key=event["subject"].encode(),
            value=encode_event(event),
            headers=[("content-type", b"application/cloudevents+json; charset=UTF-8")],
        )
        metadata = future.get(timeout=self.config.kafka_timeout_s)
        logger.info(
            "model event published",
            extra={
                "type": event["type"],
                "model": event["subject"],
                "topic": metadata.topic,
                "partition": metadata.partition,
                "offset": metadata.offset,
            },
        )

    def post_webhook(self, webhook: WebhookConfig, event: dict[str, Any]) -> None:
        """POST with retries and exponential backoff; raises after the last failure."""
        body = encode_event(event)
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "distilld"}
        if webhook.secret_env:
            secret = os.environ.get(webhook.secret_env)
            if not secret:
                raise RuntimeError(
                    f"webhook secret variable {webhook.secret_env} is not set; refusing to send unsigned"
                )
            headers[SIGNATURE_HEADER] = sign(body, secret)
        delay = webhook.backoff_initial_s
        for attempt in range(webhook.max_retries + 1):
            try:
                response = self._session.post(
                    str(webhook.url), data=body, headers=headers, timeout=webhook.timeout_s
                )
                if response.status_code < 300:
                    logger.info(
                        "model event delivered", extra={"url": str(webhook.url), "type": event["type"]}
                    )
                    return
                if response.status_code not in _RETRYABLE_STATUS:
                    raise WebhookRejected(f"{webhook.url} answered {response.status_code}")
                error = f"{webhook.url} answered {response.status_code}"
            except requests.RequestException as exc:
                error = f"{webhook.url}: {type(exc).__name__}: {exc}"
            if attempt < webhook.max_retries:
                logger.warning("webhook failed; retrying", extra={"url": str(webhook.url), "error": error})
                time.sleep(delay)
                delay *= 2
        raise RuntimeError(error)

    def deliver(self, event: dict[str, Any], targets: list[str] | None = None) -> list[str]:
        """Send ``event`` to ``targets`` (default: all); returns the targets still to retry.

        A webhook that rejects the event with a non-retryable status is dropped
        with an error log rather than retried forever.
        """
        remaining: list[str] = []
        webhooks = {webhook_target(w): w for w in self.config.webhooks}
        for target in self.targets() if targets is None else targets:
            try:
                if target == KAFKA_TARGET:
                    self.send_kafka(event)
                elif target in webhooks:
                    self.post_webhook(webhooks[target], event)
                else:
                    logger.warning("dropping event target no longer configured", extra={"target": target})
            except WebhookRejected as exc:
                logger.error("webhook rejected model event", extra={"target": target, "error": str(exc)})
            except Exception as exc:
                logger.warning(
                    "model event not delivered",
                    extra={"target": target, "error": f"{type(exc).__name__}: {exc}"},
                )
                remaining.append(target)
        return remaining

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self.config.kafka_timeout_s)
            self._producer = None
        self._session.close()


class WebhookRejected(RuntimeError):
    """The receiver answered with a status that retrying will not change (e.g. 400, 401, 404)."""

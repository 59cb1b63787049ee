"""Notifications for the on-call humans: Slack-compatible incoming webhooks and generic JSON webhooks.

Kinds: a rule tripped, a retrain started, finished (promoted / kept as
challenger / awaiting approval, with the reason and key metrics), failed (with
the error), a rollback. An incident must not become a storm, so:

- dedupe: a notification with the same (kind, model, subject) as one sent
  within ``dedupe_window_s`` is dropped;
- rate limit: at most ``max_per_hour`` go out per rolling hour; the rest are
  counted, and the count is appended to the next one that goes out.

Both are kept in memory: a restart may repeat one message, never lose a
failure report. A POST that still fails after ``max_retries`` is handed to the
spool (when one is given) and retried later.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import requests

from distilld.daemon.spool import Spool, SpoolEntry
from distilld.registry.config import NotificationsConfig

logger = logging.getLogger(__name__)

SPOOL_KIND = "notification"
_HOUR_S = 3600.0
_SLACK_MAX_FIELDS = 10


class NotificationKind(StrEnum):
    RULE_TRIPPED = "rule_tripped"
    RETRAIN_STARTED = "retrain_started"
    RETRAIN_FINISHED = "retrain_finished"
    RETRAIN_FAILED = "retrain_failed"
    ROLLBACK = "rollback"


_SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "error": ":rotating_light:"}


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    model: str
    title: str
    text: str = ""
    severity: str = "info"
    subject: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    def dedupe_key(self) -> tuple[str, str, str]:
        return (self.kind.value, self.model, self.subject)


def rule_tripped(model: str, rule: str, decision_id: str, evidence: dict[str, Any]) -> Notification:
    return Notification(
        NotificationKind.RULE_TRIPPED,
        model,
        f"{model}: retrain rule '{rule}' tripped",
        severity="warning",
        subject=rule,
        fields={"decision": decision_id, **evidence},
    )


def retrain_started(model: str, rule: str, job_id: str, base_version: str | None) -> Notification:
    return Notification(
        NotificationKind.RETRAIN_STARTED,
        model,
        f"{model}: re-distillation started",
        subject=job_id,
        fields={"rule": rule, "job": job_id, "base_version": base_version},
    )


def retrain_finished(
    model: str, version: str, status: str, reason: str, metrics: dict[str, float]
) -> Notification:
    title = {
        "promoted": f"{model}: v{version} promoted to champion",
        "kept": f"{model}: v{version} kept as challenger",
        "awaiting_approval": f"{model}: v{version} awaits manual approval",
    }.get(status, f"{model}: v{version} {status}")
    return Notification(
        NotificationKind.RETRAIN_FINISHED,
        model,
        title,
        text=reason,
        severity="info" if status == "promoted" else "warning",
        subject=version,
        fields={"status": status, **metrics},
    )


def retrain_failed(model: str, stage: str, error: str, subject: str = "") -> Notification:
    return Notification(
        NotificationKind.RETRAIN_FAILED,
        model,
        f"{model}: retrain failed during {stage}",
        text=error[:1500],
        severity="error",
        subject=subject or stage,
    )


def rolled_back(model: str, from_version: str, to_version: str) -> Notification:
    return Notification(
        NotificationKind.ROLLBACK,
        model,
        f"{model}: champion rolled back from v{from_version} to v{to_version}",
        severity="warning",
        subject=f"{from_version}->{to_version}",
        fields={"from_version": from_version, "to_version": to_version},
    )


def slack_payload(n: Notification, suppressed: int) -> dict[str, Any]:
    header = f"{_SEVERITY_EMOJI.get(n.severity, '')} *{n.title}*".strip()
    text = header + (f"\n{n.text}" if n.text else "")
    if suppressed:
        text += f"\n_{suppressed} earlier notification(s) suppressed by the rate limit_"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    items = [(k, v) for k, v in n.fields.items() if v is not None][:_SLACK_MAX_FIELDS]
    if items:
        blocks.append(
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_fmt(v)}"} for k, v in items],
            }
        )
    # ``text`` is the fallback shown by clients (and by Slack-compatible servers) that ignore blocks.
    return {"text": text, "blocks": blocks}


def json_payload(n: Notification, suppressed: int, ts: float) -> dict[str, Any]:
    return {
        "kind": n.kind.value,
        "model": n.model,
        "title": n.title,
        "text": n.text,
        "severity": n.severity,
        "subject": n.subject,
        "fields": n.fields,
        "suppressed_since_last": suppressed,
        "ts": ts,
    }


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class Notifier:
    def __init__(
        self,
        config: NotificationsConfig,
        spool: Spool | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.spool = spool
        self._clock = clock
        self._last_sent: dict[tuple[str, str, str], float] = {}
        self._sent_times: deque[float] = deque()
        self._suppressed = 0
        self._session = requests.Session()

    @property
    def enabled(self) -> bool:
        return bool(self.config.slack_webhook_url or self.config.json_webhook_urls)

    def notify(self, n: Notification) -> bool:
        """Send ``n`` unless deduplicated or rate limited; returns whether it went out (or was spooled)."""
        if not self.enabled:
            return False
        now = self._clock()
        last = self._last_sent.get(n.dedupe_key())
        if last is not None and now - last < self.config.dedupe_window_s:
            logger.info("notification deduplicated", extra={"kind": n.kind.value, "model": n.model})
            return False
        while self._sent_times and now - self._sent_times[0] >= _HOUR_S:
            self._sent_times.popleft()
        if len(self._sent_times) >= self.config.max_per_hour:
            self._suppressed += 1
            logger.warning(
                "notification rate limited",
                extra={"kind": n.kind.value, "model": n.model, "suppressed": self._suppressed},
            )
            return False
        suppressed, self._suppressed = self._suppressed, 0
        self._last_sent[n.dedupe_key()] = now
        self._sent_times.append(now)
        deliveries: list[tuple[str, dict[str, Any]]] = []
        if self.config.slack_webhook_url:
            deliveries.append((str(self.config.slack_webhook_url), slack_payload(n, suppressed)))
        deliveries += [(str(url), json_payload(n, suppressed, now)) for url in self.config.json_webhook_urls]
        for url, payload in deliveries:
            try:
                self.post(url, payload)
            except requests.RequestException as exc:
                if self.spool is None:
                    logger.error("notification lost", extra={"url": url, "error": str(exc)})
                else:
                    self.spool.put(SPOOL_KIND, {"url": url, "body": payload})
        return True

    def post(self, url: str, payload: dict[str, Any]) -> None:
        """POST with ``max_retries`` immediate retries (1 s, 2 s, …); raises the last error."""
        delay = 1.0
        for attempt in range(self.config.max_retries + 1):
            try:
                response = self._session.post(url, json=payload, timeout=self.config.timeout_s)
                response.raise_for_status()
                return
            except requests.RequestException as exc:
                if attempt == self.config.max_retries:
                    raise
                logger.warning("notification POST failed; retrying", extra={"url": url, "error": str(exc)})
                time.sleep(delay)
                delay *= 2

    def deliver_spooled(self, entry: SpoolEntry) -> None:
        """Spool handler for kind ``notification``."""
        self.post(entry.payload["url"], entry.payload["body"])

    def close(self) -> None:
        self._session.close()

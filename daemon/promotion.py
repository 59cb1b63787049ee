"""From a finished training job to a served champion, without ever losing a candidate.

``submit_candidate`` first copies the trainer's export folder into the spool
(durable, survives restarts), then: verify the manifest → register an MLflow
run + model version as ``challenger`` → run the gate → promote to ``champion``
(or keep as challenger with the reason, or wait for manual approval) →
announce on Kafka/webhooks → notify humans. If MLflow (or S3, Kafka, a
webhook) is unreachable the step is retried from the spool with backoff by
``retry_pending``, which the daemon calls periodically and at start-up.
Registration is idempotent per spool entry (the entry id is a run tag), so a
crash between "registered" and "spool entry removed" does not register twice.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilld.daemon.notifications import SPOOL_KIND as NOTIFICATION_KIND
from distilld.daemon.notifications import (
    Notification,
    Notifier,
    retrain_failed,
    retrain_finished,
    rolled_back,
)
from distilld.daemon.serving_signal import EVENT_PROMOTED, EVENT_ROLLED_BACK, ServingSignal, model_event
from distilld.daemon.spool import PermanentFailure, Spool, SpoolEntry
from distilld.registry.config import GateConfig, NotificationsConfig, RegistryConfig, SignalConfig
from distilld.registry.integrity import IntegrityError
from distilld.registry.model_registry import CHAMPION, ModelRegistry, ModelVersionInfo, RegistryError
from distilld.registry.promotion_gate import evaluate_gate

if TYPE_CHECKING:
    from distilld.daemon.config import DistilldConfig

logger = logging.getLogger(__name__)

CANDIDATE_KIND = "candidate"
EVENT_KIND = "model-event"
EXPORT_ATTACHMENT = "export"
REPORTS_ATTACHMENT = "reports"

HEADLINE_METRICS = (
    ("holdout", "teacher_agreement"),
    ("holdout", "mean_kl_to_teacher"),
    ("replay", "teacher_agreement"),
    ("holdout", "accuracy"),
    ("replay", "accuracy"),
)


@dataclass
class PromotionOutcome:
    """What happened to one candidate (or manual promote/rollback).

    status: ``promoted`` | ``kept`` | ``awaiting_approval`` | ``spooled`` (will be
    retried) | ``rejected`` (can never be registered, e.g. integrity failure) |
    ``rolled_back``.
    """

    model: str
    status: str
    version: str | None = None
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    spool_id: str | None = None


def headline_metrics(metrics_doc: dict[str, Any]) -> dict[str, float]:
    """A few numbers for humans and events, e.g. ``candidate.holdout.teacher_agreement``."""
    out: dict[str, float] = {}
    for side in ("candidate", "champion"):
        for split, name in HEADLINE_METRICS:
            value = metrics_doc.get(side, {}).get(split, {}).get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{side}.{split}.{name}"] = float(value)
    return out


class Promotion:
    def __init__(
        self,
        registry: ModelRegistry,
        gate: GateConfig,
        spool: Spool,
        signal: ServingSignal | None = None,
        notifier: Notifier | None = None,
        event_source: str = "urn:distilld",
    ):
        self.registry = registry
        self.gate = gate
        self.spool = spool
        self.signal = signal
        self.notifier = notifier
        self.event_source = event_source

    @classmethod
    def from_config(
        cls,
        registry_config: RegistryConfig,
        signal_config: SignalConfig,
        notifications_config: NotificationsConfig,
        state_dir: Path,
        bootstrap_servers: str | list[str] | None,
        producer_config: dict[str, Any] | None = None,
    ) -> Promotion:
        """The daemon's wiring: registry + spool under ``state_dir`` + signal + notifier."""
        spool = Spool(
            Path(state_dir) / "spool",
            retry_initial_s=registry_config.spool_retry_initial_s,
            retry_max_s=registry_config.spool_retry_max_s,
        )
        return cls(
            registry=ModelRegistry(registry_config, state_dir),
            gate=registry_config.gate,
            spool=spool,
            signal=ServingSignal(signal_config, bootstrap_servers, producer_config),
            notifier=Notifier(notifications_config, spool=spool),
            event_source=signal_config.source,
        )

    # -- candidates --------------------------------------------------------------------------------

    def submit_candidate(
        self,
        model: str,
        export_dir: Path,
        decision_record: dict[str, Any],
        lineage: dict[str, Any],
        reports: tuple[Path, ...] = (),
    ) -> PromotionOutcome:
        """Spool the candidate durably, then try to register and gate it right away."""
        attachments: dict[str, Path] = {EXPORT_ATTACHMENT: Path(export_dir)}
        if reports:
            attachments.update({f"{REPORTS_ATTACHMENT}/{Path(r).name}": Path(r) for r in reports})
        entry = self.spool.put(
            CANDIDATE_KIND,
            {"model": model, "decision_record": decision_record, "lineage": lineage},
            attachments=attachments,
        )
        return self._attempt_candidate(entry)

    def _attempt_candidate(self, entry: SpoolEntry) -> PromotionOutcome:
        model = entry.payload["model"]
        try:
            outcome = self._process_candidate(entry)
        except (IntegrityError, RegistryError, PermanentFailure) as exc:
            self.spool.dead_letter(entry, f"{type(exc).__name__}: {exc}")
            self._notify(
                retrain_failed(model, "registration", f"{type(exc).__name__}: {exc}", subject=entry.id)
            )
            return PromotionOutcome(model, "rejected", reason=str(exc), spool_id=entry.id)
        except Exception as exc:
            first_failure = entry.attempts == 0
            self.spool.retry_later(entry, f"{type(exc).__name__}: {exc}")
            if first_failure:
                self._notify(
                    retrain_failed(
                        model,
                        "registration",
                        f"registry unreachable, candidate spooled and retried: {type(exc).__name__}: {exc}",
                        subject=entry.id,
                    )
                )
            return PromotionOutcome(model, "spooled", reason=str(exc), spool_id=entry.id)
        self.spool.complete(entry)
        return outcome

    def _process_candidate(self, entry: SpoolEntry) -> PromotionOutcome:
        payload = entry.payload
        model = payload["model"]
        if entry.files_dir is None or not (entry.files_dir / EXPORT_ATTACHMENT).is_dir():
            raise PermanentFailure(f"spool entry {entry.id} has lost its export folder")
        export = entry.files_dir / EXPORT_ATTACHMENT
        reports_dir = entry.files_dir / REPORTS_ATTACHMENT
        reports = tuple(sorted(reports_dir.iterdir())) if reports_dir.is_dir() else ()
        try:
            metrics_doc = json.loads((export / "metrics.json").read_text())
        except (OSError, ValueError) as exc:
            raise PermanentFailure(
                f"export of spool entry {entry.id} has no readable metrics.json: {exc}"
            ) from exc
        headline = headline_metrics(metrics_doc)

        version = self.registry.register_candidate(
            model,
            export,
            payload["decision_record"],
            payload["lineage"],
            idempotency_key=entry.id,
            reports=reports,
        )
        current = self.registry.aliases(model).get(CHAMPION)
        parent = payload["lineage"].get("parent_version")
        if current == version:
            return PromotionOutcome(model, "promoted", version, "already champion", headline, entry.id)
        if (
            self.gate.require_parent_is_champion
            and parent is not None
            and current is not None
            and str(parent) != current
        ):
            status, reason = (
                "kept",
                f"trained from v{parent} but the champion is now v{current}; comparison is stale",
            )
        else:
            verdict = evaluate_gate(metrics_doc.get("candidate", {}), metrics_doc.get("champion"), self.gate)
            if not verdict.passed:
                status, reason = "kept", verdict.reason
            elif self.gate.require_manual_approval:
                status, reason = (
                    "awaiting_approval",
                    f"gate passed ({verdict.reason}); manual approval required",
                )
            else:
                status, reason = "promoted", verdict.reason

        if status == "promoted":
            info = self.registry.promote(model, version)
            self._announce(EVENT_PROMOTED, info, headline, previous_version=current, reason=reason)
        else:
            self.registry.keep_as_challenger(model, version, reason)
        logger.info(
            "candidate decided",
            extra={"model": model, "version": version, "status": status, "reason": reason},
        )
        self._notify(retrain_finished(model, version, status, reason, headline))
        return PromotionOutcome(model, status, version, reason, headline, entry.id)

    # -- manual actions ----------------------------------------------------------------------------

    def register_base(self, model: str, hf_folder: Path) -> ModelVersionInfo:
        """Bootstrap: register an existing student as the first champion and announce it."""
        version = self.registry.register_base(model, hf_folder)
        info = self.registry.version_info(model, version)
        self._announce(EVENT_PROMOTED, info, {}, previous_version=None, reason="registered as base model")
        return info

    def promote_manual(self, model: str, version: str) -> PromotionOutcome:
        previous = self.registry.aliases(model).get(CHAMPION)
        info = self.registry.promote(model, str(version))
        reason = "promoted manually"
        metrics = {k: v for k, v in info.metrics.items() if k.count(".") == 2}
        self._announce(EVENT_PROMOTED, info, metrics, previous_version=previous, reason=reason)
        self._notify(retrain_finished(model, info.version, "promoted", reason, metrics))
        return PromotionOutcome(model, "promoted", info.version, reason, metrics)

    def rollback(self, model: str) -> PromotionOutcome:
        previous = self.registry.aliases(model).get(CHAMPION)
        target = self.registry.rollback(model)
        info = self.registry.version_info(model, target)
        reason = f"rolled back from v{previous}"
        self._announce(EVENT_ROLLED_BACK, info, {}, previous_version=previous, reason=reason)
        self._notify(rolled_back(model, str(previous), target))
        return PromotionOutcome(model, "rolled_back", target, reason)

    # -- events and the spool ----------------------------------------------------------------------

    def _announce(
        self,
        event_type: str,
        info: ModelVersionInfo,
        metrics: dict[str, float],
        previous_version: str | None,
        reason: str,
    ) -> None:
        if self.signal is None or not self.signal.targets():
            return
        event = model_event(
            event_type,
            info,
            self.event_source,
            metrics=metrics,
            previous_version=previous_version,
            reason=reason,
        )
        # Spooled before the first send so a crash mid-delivery still delivers it after restart.
        entry = self.spool.put(EVENT_KIND, {"event": event, "targets": self.signal.targets()})
        attempts = entry.attempts
        self._send_event(entry)
        if entry.attempts == attempts:
            self.spool.complete(entry)

    def _send_event(self, entry: SpoolEntry) -> None:
        """Spool handler for model events: re-sends only to the targets that have not acknowledged."""
        if self.signal is None:
            raise PermanentFailure("no serving signal configured")
        remaining = self.signal.deliver(entry.payload["event"], entry.payload["targets"])
        if remaining:
            self.spool.retry_later(
                entry, f"undelivered to {remaining}", payload={**entry.payload, "targets": remaining}
            )

    def _notify(self, notification: Notification) -> None:
        if self.notifier is not None:
            self.notifier.notify(notification)

    def retry_pending(self) -> list[PromotionOutcome]:
        """Retry every due spool entry (candidates, events, notifications); returns the candidates' outcomes.

        Call at start-up and periodically (every ``spool_retry_initial_s`` is plenty).
        """
        outcomes = [self._attempt_candidate(e) for e in self.spool.due() if e.kind == CANDIDATE_KIND]
        handlers = {EVENT_KIND: self._send_event}
        if self.notifier is not None:
            handlers[NOTIFICATION_KIND] = self.notifier.deliver_spooled
        self.spool.drain(handlers)
        return outcomes

    def close(self) -> None:
        if self.signal is not None:
            self.signal.close()
        if self.notifier is not None:
            self.notifier.close()


# -- command-line entry points (wired by daemon/cli.py) --------------------------------------------


def promotion_for(config: DistilldConfig) -> Promotion:
    """The same wiring as the daemon's, for one-off commands."""
    kafka = config.kafka.client_kwargs()
    return Promotion.from_config(
        config.registry,
        config.signal,
        config.notifications,
        config.state.state_dir,
        bootstrap_servers=kafka.pop("bootstrap_servers"),
        producer_config=kafka,
    )


def _run_command(config: DistilldConfig, action) -> int:
    promotion = promotion_for(config)
    try:
        result = action(promotion)
    except (RegistryError, IntegrityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        promotion.close()
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def register_base_main(config: DistilldConfig, model: str, path: Path) -> int:
    """``distilld register-base --model M PATH``: register a Hugging Face folder as the first champion."""

    def action(promotion: Promotion) -> dict[str, Any]:
        info = promotion.register_base(model, Path(path))
        return {"model": model, "version": info.version, "alias": "champion", "artifact_uri": info.uri}

    return _run_command(config, action)


def promote_main(config: DistilldConfig, model: str, version: str) -> int:
    """``distilld promote --model M --version V``: verify and promote (manual approval)."""
    return _run_command(config, lambda promotion: asdict(promotion.promote_manual(model, str(version))))


def rollback_main(config: DistilldConfig, model: str) -> int:
    """``distilld rollback --model M``: move ``champion`` back to the previous champion and signal it."""
    return _run_command(config, lambda promotion: asdict(promotion.rollback(model)))

"""Decision records: why the policy did (or did not do) something.

Every state change of a rule or of the retrain governor writes one record to
the state store's journal (kind ``decision``), to the log, and to listeners.
A record is self-contained: the windows involved with their scores and the
detector's evidence, the thresholds and counts, the governor's checks, and a
sentence a human reads first. "Why did it retrain at 03:12?" is answered by
the ``retrain_requested`` record of 03:12 alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from distilld.daemon.state_store import StateStore

logger = logging.getLogger(__name__)

JOURNAL_KIND = "decision"


class DecisionKind(StrEnum):
    RULE_BREACHING = "rule_breaching"
    RULE_TRIPPED = "rule_tripped"
    RULE_CLEARING = "rule_clearing"
    RULE_REARMED = "rule_rearmed"
    RULE_RESET = "rule_reset"
    RETRAIN_REQUESTED = "retrain_requested"
    RETRAIN_WAITING = "retrain_waiting"
    RETRAIN_BLOCKED = "retrain_blocked"
    RETRAIN_CANCELLED = "retrain_cancelled"
    RETRAIN_STARTED = "retrain_started"
    RETRAIN_FINISHED = "retrain_finished"
    PAUSED = "paused"
    RESUMED = "resumed"


@dataclass
class DecisionRecord:
    """One decision. JSON-serialisable via ``to_dict``.

    ``windows``: the windows involved, oldest first, each with id, record
    count, time span, offsets and the full ``Score`` (value, calibrated
    threshold, p-value, evidence). ``thresholds``: the levels the rule applied
    (trip, clear, direction, calibrated). ``counts``: breaching/clear counts and
    what they are counted against. ``governor``: the retrain limits as they
    stood (budget used, cooldown, maintenance window, wait time).
    ``sources``: for retrain decisions, what asked for it (rule trips with
    their windows, a manual request, the schedule).
    """

    kind: str
    ts: float
    model: str | None = None
    version: str | None = None
    rule: str | None = None
    reason: str = ""
    state_before: str | None = None
    state_after: str | None = None
    metric: str | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    governor: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    force: bool = False
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ts_iso"] = iso(self.ts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecisionRecord:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO-8601 UTC timestamp (second precision)."""
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    """``5400`` -> ``1h30m``: short, for reason texts."""
    s = int(round(max(seconds, 0.0)))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{s:02d}s" if s else f"{minutes}m"
    return f"{s}s"


def format_decision(record: DecisionRecord) -> str:
    """One line for a human: when, what, which model/rule, and why."""
    subject = record.model or "-"
    if record.version is not None:
        subject += f"@{record.version}"
    parts = [iso(record.ts) or "?", f"{record.kind:<17}", subject]
    if record.rule:
        parts.append(f"[{record.rule}]")
    if record.dry_run:
        parts.append("(dry-run)")
    if record.force:
        parts.append("(forced)")
    parts.append(record.reason)
    return " ".join(parts)


class DecisionJournal:
    """Writes decision records to the state store's journal and the log."""

    def __init__(self, store: StateStore):
        self.store = store

    def write(self, record: DecisionRecord) -> DecisionRecord:
        record.id = self.store.append_journal(JOURNAL_KIND, record.to_dict(), model=record.model)
        logger.info(
            format_decision(record),
            extra={
                "decision_id": record.id,
                "decision_kind": record.kind,
                "model": record.model,
                "rule": record.rule,
            },
        )
        return record

    def recent(self, model: str | None = None, limit: int = 50) -> list[DecisionRecord]:
        rows = self.store.journal(JOURNAL_KIND, model=model, limit=limit)
        out = []
        for row in rows:
            rec = DecisionRecord.from_dict(row["payload"])
            rec.id = row["id"]
            out.append(rec)
        return out

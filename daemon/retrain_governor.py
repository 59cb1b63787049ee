"""The retrain governor: decides when a requested retrain may start.

A request (from a tripped rule, an operator, the schedule, or a retry after a
retrain that was not promoted) becomes the model's *pending request*; several
requests for one model merge into one retrain. The request starts only when
every check passes:

- ``paused``: an operator paused the policy (detection continues);
- ``running``: a retrain of this model is already running;
- ``cooldown``: the model's last retrain finished less than ``cooldown_s`` ago;
- ``budget_day`` / ``budget_week``: the rolling 24 h / 7 d budget, over all
  models, is used up;
- ``min_new_records``: too few records arrived since the last retrain;
- ``maintenance_window``: the time is outside every maintenance window.

``force`` (manual requests only) skips the last four; nothing skips pause or a
running retrain. While checks fail the request waits, and the governor writes
one decision record each time the set of failing checks changes, saying what
it waits for and until when. All state lives in the state store, so pending
requests, cooldowns and budgets survive restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from distilld.daemon.decision_record import (
    DecisionJournal,
    DecisionKind,
    DecisionRecord,
    format_duration,
    iso,
)
from distilld.daemon.policy_config import RetrainLimitsConfig
from distilld.daemon.state_store import StateStore

logger = logging.getLogger(__name__)

NS_MODEL = "policy.model"
NS_GLOBAL = "policy.governor"
GLOBAL_KEY = "state"
DAY_S = 86400.0
WEEK_S = 7 * DAY_S
Outcome = str  # "promoted" | "challenger" | "failed"
OUTCOMES = ("promoted", "challenger", "failed")
# checks that force=True skips
FORCEABLE = frozenset({"cooldown", "budget_day", "budget_week", "min_new_records", "maintenance_window"})


@dataclass(frozen=True)
class Block:
    """One failing check: what, why (a sentence), and when it passes by itself (None: not by itself)."""

    check: str
    detail: str
    until: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["until_iso"] = iso(self.until)
        return d


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class MaintenanceCalendar:
    """Whether a time falls inside one of the configured maintenance windows."""

    def __init__(self, limits: RetrainLimitsConfig):
        self.windows = [(w, w.trigger()) for w in limits.maintenance_windows]

    @property
    def always_open(self) -> bool:
        return not self.windows

    def open_until(self, now: float) -> float | None:
        """End of the window ``now`` falls in, or None when outside every window."""
        best = None
        for w, trig in self.windows:
            start = trig.get_next_fire_time(None, _dt(now - w.duration_s))
            if start is not None and start.timestamp() <= now < start.timestamp() + w.duration_s:
                end = start.timestamp() + w.duration_s
                best = end if best is None else max(best, end)
        return best

    def next_open(self, now: float) -> tuple[float, str] | None:
        """The next time (after ``now``) a window opens, and its cron expression."""
        best: tuple[float, str] | None = None
        for w, trig in self.windows:
            nxt = trig.get_next_fire_time(None, _dt(now))
            if nxt is not None and (best is None or nxt.timestamp() < best[0]):
                best = (nxt.timestamp(), w.cron)
        return best

    def describe(self) -> list[str]:
        return [f"{w.cron} for {format_duration(w.duration_s)} ({w.timezone})" for w, _ in self.windows]


class RetrainGovernor:
    """Pending requests, limits and operator controls, persisted in ``store``."""

    def __init__(self, limits: RetrainLimitsConfig, store: StateStore, journal: DecisionJournal):
        self.limits = limits
        self.store = store
        self.journal = journal
        self.calendar = MaintenanceCalendar(limits)

    # ---- persisted state ------------------------------------------------
    def _global(self) -> dict[str, Any]:
        g = self.store.get_json(NS_GLOBAL, GLOBAL_KEY) or {}
        g.setdefault("paused", False)
        g.setdefault("paused_reason", None)
        g.setdefault("paused_ts", None)
        g.setdefault("retrain_ts", [])
        return g

    def _save_global(self, g: dict[str, Any]) -> None:
        self.store.put_json(NS_GLOBAL, GLOBAL_KEY, g)

    def _model(self, model: str) -> dict[str, Any]:
        m = self.store.get_json(NS_MODEL, model) or {}
        m.setdefault("model", model)
        m.setdefault("latest_version", None)
        m.setdefault("last_window_ts", None)
        m.setdefault("new_records", 0)
        m.setdefault("running", None)
        m.setdefault("last_retrain", None)
        m.setdefault("cooldown_until", None)
        m.setdefault("pending", None)
        m.setdefault("retrains_total", 0)
        return m

    def _save_model(self, m: dict[str, Any]) -> None:
        self.store.put_json(NS_MODEL, m["model"], m)

    def models(self) -> list[str]:
        return list(self.store.items_json(NS_MODEL))

    def latest_version(self, model: str) -> str | None:
        return self._model(model)["latest_version"]

    # ---- inputs ---------------------------------------------------------
    def note_window(self, model: str, version: str, n_records: int, now: float) -> None:
        m = self._model(model)
        m["latest_version"] = version
        m["last_window_ts"] = now
        m["new_records"] = int(m["new_records"]) + int(n_records)
        self._save_model(m)

    def request(
        self,
        model: str,
        version: str | None,
        source: dict[str, Any],
        now: float,
        force: bool = False,
        start: bool = True,
    ) -> list[DecisionRecord]:
        """Add a request to the model's pending request and (unless ``start`` is False) try to start it."""
        m = self._model(model)
        pending = m["pending"] or {
            "created_ts": now,
            "version": version,
            "force": False,
            "sources": [],
            "reported": None,
        }
        pending["sources"].append(source)
        pending["force"] = bool(pending["force"] or force)
        # whoever just asked hears what the request waits for, even if that did not change
        pending["reported"] = None
        if version is not None:
            pending["version"] = version
        m["pending"] = pending
        self._save_model(m)
        return self.try_start(model, now) if start else []

    def withdraw_rule(self, model: str, version: str, rule: str, now: float) -> list[DecisionRecord]:
        """A rule re-armed: drop its sources; cancel the request if nothing else asks for it."""
        return self._withdraw(
            model,
            now,
            lambda s: (
                s.get("rule") == rule and s.get("version") == version and s["kind"] in ("rule", "retry")
            ),
            lambda waited: (
                f"rule {rule} re-armed before the retrain could start (it had waited {waited}); "
                "nothing else asks for a retrain"
            ),
            version=version,
            rule=rule,
        )

    def _withdraw(
        self,
        model: str,
        now: float,
        drop: Callable[[dict[str, Any]], bool],
        reason: Callable[[str], str],
        version: str | None = None,
        rule: str | None = None,
    ) -> list[DecisionRecord]:
        """Remove the pending request's sources that ``drop`` selects; cancel it when none is left."""
        m = self._model(model)
        pending = m["pending"]
        if pending is None:
            return []
        dropped = [s for s in pending["sources"] if drop(s)]
        if not dropped:
            return []
        keep = [s for s in pending["sources"] if not drop(s)]
        if keep:
            pending["sources"] = keep
            self._save_model(m)
            return []
        m["pending"] = None
        self._save_model(m)
        rec = DecisionRecord(
            kind=DecisionKind.RETRAIN_CANCELLED,
            ts=now,
            model=model,
            version=version if version is not None else pending.get("version"),
            rule=rule if rule is not None else _first_rule(dropped),
            reason=reason(format_duration(now - pending["created_ts"])),
            sources=dropped,
            governor=self.facts(m, self._global(), now),
            dry_run=self.limits.dry_run,
        )
        return [self.journal.write(rec)]

    # ---- checks ---------------------------------------------------------
    def _budget(self, g: dict[str, Any], now: float, span_s: float, limit: int) -> tuple[int, float | None]:
        """Retrains started within ``span_s`` before ``now``, and when one more becomes allowed."""
        recent = sorted(t for t in g["retrain_ts"] if t > now - span_s)
        used = len(recent)
        if used < limit:
            return used, None
        if limit == 0:
            return used, None
        # one more is allowed once the (used - limit + 1) oldest fall out of the span
        return used, recent[used - limit] + span_s

    def blocks(self, m: dict[str, Any], g: dict[str, Any], now: float, force: bool) -> list[Block]:
        """The failing checks for a retrain of model ``m`` at ``now``."""
        out: list[Block] = []
        if g["paused"]:
            out.append(
                Block(
                    "paused",
                    f"policy paused since {iso(g['paused_ts'])}: {g['paused_reason'] or 'no reason given'}",
                )
            )
        if m["running"] is not None:
            out.append(
                Block(
                    "running",
                    f"a retrain of {m['model']} is running since {iso(m['running']['requested_ts'])}",
                )
            )
        checks: list[Block] = []
        cd = m["cooldown_until"]
        if cd is not None and cd > now:
            last = m["last_retrain"] or {}
            checks.append(
                Block(
                    "cooldown",
                    f"cooldown after the retrain that ended {iso(last.get('finished_ts'))} "
                    f"({last.get('outcome', '?')}) lasts until {iso(cd)}",
                    cd,
                )
            )
        for check, span, limit, label in (
            ("budget_day", DAY_S, self.limits.max_retrains_per_day, "24 h"),
            ("budget_week", WEEK_S, self.limits.max_retrains_per_week, "7 days"),
        ):
            used, frees = self._budget(g, now, span, limit)
            if used >= limit:
                checks.append(
                    Block(
                        check,
                        f"budget used: {used} of {limit} retrains in the last {label}"
                        + (f"; next allowed at {iso(frees)}" if frees is not None else ""),
                        frees,
                    )
                )
        if m["new_records"] < self.limits.min_new_buffer_records:
            checks.append(
                Block(
                    "min_new_records",
                    f"only {m['new_records']} new records since the last retrain; "
                    f"min_new_buffer_records is {self.limits.min_new_buffer_records}",
                )
            )
        if not self.calendar.always_open and self.calendar.open_until(now) is None:
            nxt = self.calendar.next_open(now)
            checks.append(
                Block(
                    "maintenance_window",
                    "outside the maintenance windows"
                    + (f"; next opens at {iso(nxt[0])} ({nxt[1]})" if nxt else "; none will open again"),
                    nxt[0] if nxt else None,
                )
            )
        out.extend(b for b in checks if not (force and b.check in FORCEABLE))
        return out

    def _global_facts(self, g: dict[str, Any], now: float) -> dict[str, Any]:
        day_used, day_frees = self._budget(g, now, DAY_S, self.limits.max_retrains_per_day)
        week_used, week_frees = self._budget(g, now, WEEK_S, self.limits.max_retrains_per_week)
        open_until = self.calendar.open_until(now)
        nxt = None if self.calendar.always_open else self.calendar.next_open(now)
        return {
            "budget_day": {
                "used": day_used,
                "max": self.limits.max_retrains_per_day,
                "frees_at": iso(day_frees),
            },
            "budget_week": {
                "used": week_used,
                "max": self.limits.max_retrains_per_week,
                "frees_at": iso(week_frees),
            },
            "maintenance": {
                "windows": self.calendar.describe(),
                "open": self.calendar.always_open or open_until is not None,
                "open_until": iso(open_until),
                "next_open": iso(nxt[0]) if nxt else None,
            },
            "paused": bool(g["paused"]),
            "dry_run": self.limits.dry_run,
        }

    def facts(self, m: dict[str, Any], g: dict[str, Any], now: float) -> dict[str, Any]:
        """The limits as they stand for model ``m``, for decision records."""
        cd = m["cooldown_until"]
        return {
            **self._global_facts(g, now),
            "cooldown_until": iso(cd) if cd is not None and cd > now else None,
            "new_records_since_retrain": m["new_records"],
            "min_new_buffer_records": self.limits.min_new_buffer_records,
        }

    # ---- starting -------------------------------------------------------
    def try_start(self, model: str, now: float) -> list[DecisionRecord]:
        """Start the model's pending request if every check passes; else report what it waits for."""
        m = self._model(model)
        pending = m["pending"]
        if pending is None:
            return []
        g = self._global()
        failing = self.blocks(m, g, now, pending["force"])
        if failing:
            signature = sorted(b.check for b in failing)
            pending["blocked_by"] = [b.to_dict() for b in failing]
            if signature == pending.get("reported"):
                self._save_model(m)
                return []
            pending["reported"] = signature
            self._save_model(m)
            only_window = signature == ["maintenance_window"]
            rec = DecisionRecord(
                kind=DecisionKind.RETRAIN_WAITING if only_window else DecisionKind.RETRAIN_BLOCKED,
                ts=now,
                model=model,
                version=m["latest_version"] or pending["version"],
                rule=_first_rule(pending["sources"]),
                reason=f"retrain requested by {_describe_sources(pending['sources'])} waits: "
                + "; ".join(b.detail for b in failing),
                sources=pending["sources"],
                governor={**self.facts(m, g, now), "blocked_by": pending["blocked_by"]},
                dry_run=self.limits.dry_run,
                force=pending["force"],
            )
            return [self.journal.write(rec)]
        return [self._start(m, g, pending, now)]

    def _start(
        self, m: dict[str, Any], g: dict[str, Any], pending: dict[str, Any], now: float
    ) -> DecisionRecord:
        model = m["model"]
        waited = now - pending["created_ts"]
        g["retrain_ts"] = [t for t in g["retrain_ts"] if t > now - WEEK_S] + [now]
        facts = self.facts(m, g, now)
        facts["waited_s"] = waited
        facts["waited_for"] = [b["check"] for b in pending.get("blocked_by", [])]
        reason = f"retrain of {model} requested by {_describe_sources(pending['sources'])}"
        if waited >= 1:
            reason += f"; waited {format_duration(waited)}"
            if facts["waited_for"]:
                reason += f" for {', '.join(facts['waited_for'])}"
        reason += (
            f"; budget {facts['budget_day']['used']}/{facts['budget_day']['max']} in 24 h, "
            f"{facts['budget_week']['used']}/{facts['budget_week']['max']} in 7 days"
        )
        if pending["force"]:
            reason += "; forced past cooldown, budget, buffer and maintenance-window checks"
        if self.limits.dry_run:
            reason += "; dry-run: no training starts"
        rec = self.journal.write(
            DecisionRecord(
                kind=DecisionKind.RETRAIN_REQUESTED,
                ts=now,
                model=model,
                version=m["latest_version"] or pending["version"],
                rule=_first_rule(pending["sources"]),
                reason=reason,
                sources=pending["sources"],
                governor=facts,
                dry_run=self.limits.dry_run,
                force=pending["force"],
            )
        )
        m["pending"] = None
        m["new_records"] = 0
        m["retrains_total"] = int(m["retrains_total"]) + 1
        if self.limits.dry_run:
            # nothing will report the end of a dry-run retrain: it ends now
            m["last_retrain"] = {
                "decision_id": rec.id,
                "requested_ts": now,
                "started_ts": None,
                "finished_ts": now,
                "outcome": "dry_run",
            }
            m["cooldown_until"] = now + self.limits.cooldown_s
        else:
            m["running"] = {
                "decision_id": rec.id,
                "requested_ts": now,
                "started_ts": None,
                "version": rec.version,
            }
        self._save_model(m)
        self._save_global(g)
        return rec

    def tick(self, now: float) -> list[DecisionRecord]:
        out: list[DecisionRecord] = []
        for model in self.models():
            out.extend(self.try_start(model, now))
        return out

    def next_wakeup(self, now: float) -> float | None:
        """Earliest time a waiting request may pass its checks by itself (None: nothing to wait for)."""
        g = self._global()
        best = None
        for model in self.models():
            m = self._model(model)
            if m["pending"] is None:
                continue
            failing = self.blocks(m, g, now, m["pending"]["force"])
            untils = [b.until for b in failing]
            if failing and all(u is not None for u in untils):
                t = max(u for u in untils if u is not None)
                best = t if best is None else min(best, t)
        return best

    # ---- operator controls ----------------------------------------------
    def pause(self, reason: str, now: float) -> list[DecisionRecord]:
        g = self._global()
        if g["paused"]:
            return []
        g.update(paused=True, paused_reason=reason, paused_ts=now)
        self._save_global(g)
        rec = DecisionRecord(
            kind=DecisionKind.PAUSED,
            ts=now,
            reason=f"policy paused: {reason or 'no reason given'}; no retrain starts until resumed, "
            "detection continues",
            dry_run=self.limits.dry_run,
        )
        return [self.journal.write(rec)]

    def resume(self, now: float) -> list[DecisionRecord]:
        g = self._global()
        if not g["paused"]:
            return []
        paused_for = format_duration(now - (g["paused_ts"] or now))
        reason = g["paused_reason"]
        g.update(paused=False, paused_reason=None, paused_ts=None)
        self._save_global(g)
        rec = DecisionRecord(
            kind=DecisionKind.RESUMED,
            ts=now,
            reason=f"policy resumed after {paused_for} paused ({reason or 'no reason given'})",
            dry_run=self.limits.dry_run,
        )
        return [self.journal.write(rec), *self.tick(now)]

    def retrain_started(self, model: str, details: dict[str, Any], now: float) -> list[DecisionRecord]:
        m = self._model(model)
        running = m["running"]
        if running is not None:
            running["started_ts"] = now
            self._save_model(m)
        rec = DecisionRecord(
            kind=DecisionKind.RETRAIN_STARTED,
            ts=now,
            model=model,
            version=m["latest_version"],
            reason=(
                f"retrain started for request #{running['decision_id']}"
                if running
                else "retrain started without a request from the policy (started outside it)"
            ),
            governor={"details": details, "request_decision_id": running and running["decision_id"]},
            dry_run=self.limits.dry_run,
        )
        return [self.journal.write(rec)]

    def retrain_finished(
        self, model: str, outcome: Outcome, details: dict[str, Any], now: float
    ) -> list[DecisionRecord]:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        m = self._model(model)
        running = m["running"] or {}
        m["running"] = None
        m["last_retrain"] = {
            "decision_id": running.get("decision_id"),
            "requested_ts": running.get("requested_ts"),
            "started_ts": running.get("started_ts"),
            "finished_ts": now,
            "outcome": outcome,
        }
        m["cooldown_until"] = now + self.limits.cooldown_s
        self._save_model(m)
        took = running.get("started_ts") or running.get("requested_ts")
        rec = DecisionRecord(
            kind=DecisionKind.RETRAIN_FINISHED,
            ts=now,
            model=model,
            version=m["latest_version"],
            reason=f"retrain finished: {outcome}"
            + (f" after {format_duration(now - took)}" if took else "")
            + f"; cooldown until {iso(m['cooldown_until'])}",
            governor={
                "details": details,
                "outcome": outcome,
                "request_decision_id": running.get("decision_id"),
                "cooldown_until": iso(m["cooldown_until"]),
            },
            dry_run=self.limits.dry_run,
        )
        out = [self.journal.write(rec)]
        if outcome == "promoted":
            out.extend(self._drop_superseded(model, now))
        return out

    def _drop_superseded(self, model: str, now: float) -> list[DecisionRecord]:
        """After a promotion, trips measured on the old champion's traffic no longer ask for a retrain.

        The new version gets its own reference and rules; a manual or scheduled
        request still stands.
        """
        return self._withdraw(
            model,
            now,
            lambda s: s["kind"] in ("rule", "retry"),
            lambda waited: (
                "a new champion was promoted: rule trips measured on the previous version's traffic "
                "no longer ask for a retrain (detectors re-baseline on the new version)"
            ),
        )

    # ---- housekeeping and status ----------------------------------------
    def prune(self, now: float) -> None:
        g = self._global()
        g["retrain_ts"] = [t for t in g["retrain_ts"] if t > now - WEEK_S]
        self._save_global(g)

    def status(self, now: float) -> dict[str, Any]:
        g = self._global()
        models = {}
        for model in self.models():
            m = self._model(model)
            pending = m["pending"]
            models[model] = {
                "latest_version": m["latest_version"],
                "last_window_ts": iso(m["last_window_ts"]),
                "new_records_since_retrain": m["new_records"],
                "retrains_total": m["retrains_total"],
                "running": m["running"],
                "last_retrain": m["last_retrain"],
                "cooldown_until": iso(m["cooldown_until"])
                if m["cooldown_until"] is not None and m["cooldown_until"] > now
                else None,
                "pending": None
                if pending is None
                else {
                    "since": iso(pending["created_ts"]),
                    "requested_by": _describe_sources(pending["sources"]),
                    "force": pending["force"],
                    "sources": pending["sources"],
                    "waiting_for": [b.to_dict() for b in self.blocks(m, g, now, pending["force"])],
                },
            }
        facts = self._global_facts(g, now)
        return {
            "paused": {
                "paused": bool(g["paused"]),
                "reason": g["paused_reason"],
                "since": iso(g["paused_ts"]),
            },
            "dry_run": self.limits.dry_run,
            "budget": {"day": facts["budget_day"], "week": facts["budget_week"]},
            "maintenance": facts["maintenance"],
            "cooldown_s": self.limits.cooldown_s,
            "min_new_buffer_records": self.limits.min_new_buffer_records,
            "models": models,
        }


def _first_rule(sources: list[dict[str, Any]]) -> str | None:
    for s in sources:
        if s.get("rule"):
            return s["rule"]
    return None


def _describe_sources(sources: list[dict[str, Any]]) -> str:
    parts = []
    for s in sources:
        kind = s["kind"]
        if kind == "rule":
            values = ", ".join(f"{v:.4g}" for v in s.get("values", []) if v is not None)
            parts.append(
                f"rule {s['rule']} (tripped {iso(s['tripped_ts'])}: {s['metric']} {s['direction']} "
                f"{_fmt(s.get('trip_level'))} in {len(s.get('values', []))} consecutive windows: {values})"
            )
        elif kind == "retry":
            parts.append(f"rule {s['rule']} (still tripped after a {s['after_outcome']} retrain)")
        elif kind == "manual":
            parts.append(
                f"operator ({s['reason'] or 'no reason given'}{', forced' if s.get('force') else ''})"
            )
        elif kind == "schedule":
            parts.append(f"schedule ({s['cron']})")
        else:
            parts.append(kind)
    return " and ".join(parts) if parts else "nothing"


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.4g}"

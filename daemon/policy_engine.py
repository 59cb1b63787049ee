"""The retrain policy, as the daemon's loop and CLI see it.

``PolicyEngine`` ties the per-rule hysteresis machines (``hysteresis``) to
the retrain governor (``retrain_governor``) and the decision journal
(``decision_record``). The loop calls ``on_window_closed`` for every closed
window with the detectors' scores; the scheduler calls ``tick``; the job
runner reports ``on_retrain_started``/``on_retrain_finished``; operators call
``request_manual``, ``pause`` and ``resume``. Every call returns the decision
records it wrote, and listeners hear about them after they are written.

All state is in the ``StateStore`` and each call is one store transaction, so
a restart resumes mid-count and a caller that wraps ``on_window_closed`` in
its own ``store.transaction()`` (with the offsets the window covers) commits
both together. The store's transaction lock also serialises the engine
between the consumer thread and the scheduler's thread.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from distilld.daemon.decision_record import DecisionJournal, DecisionKind, DecisionRecord, iso
from distilld.daemon.hysteresis import RuleMachine, RuleState, Transition, judge
from distilld.daemon.policy_config import PolicyConfig, RuleConfig
from distilld.daemon.retrain_governor import RetrainGovernor
from distilld.daemon.state_store import StateStore
from distilld.detectors.score import Score

logger = logging.getLogger(__name__)

NS_RULE = "policy.rule"
Listener = Callable[[DecisionRecord], None]


def _rule_key(model: str, version: str, rule: str) -> str:
    return json.dumps([model, version, rule])


class PolicyEngine:
    """Rules with hysteresis, retrain limits and operator controls over one state store."""

    def __init__(self, config: PolicyConfig, store: StateStore, clock: Callable[[], float] = time.time):
        self.config = config
        self.store = store
        self.clock = clock
        self.journal = DecisionJournal(store)
        self.governor = RetrainGovernor(config.limits, store, self.journal)
        self._listeners: list[tuple[Listener, frozenset[str] | None]] = []

    # ---- listeners ------------------------------------------------------
    def subscribe(self, callback: Listener, kinds: Iterable[str] | None = None) -> None:
        """Call ``callback`` with every decision record (or those of ``kinds``) once written.

        For notifications: dry-run decisions are delivered too (``record.dry_run``).
        """
        self._listeners.append((callback, None if kinds is None else frozenset(str(k) for k in kinds)))

    def on_retrain_requested(self, callback: Listener) -> None:
        """Call ``callback`` with each ``retrain_requested`` record that should start training.

        This is the job runner's hook: it never fires in dry-run. The runner
        reports back with ``on_retrain_started`` and ``on_retrain_finished``.
        """

        def only_real(record: DecisionRecord) -> None:
            if not record.dry_run:
                callback(record)

        self.subscribe(only_real, kinds=[DecisionKind.RETRAIN_REQUESTED])

    def _notify(self, records: list[DecisionRecord]) -> None:
        for record in records:
            for callback, kinds in self._listeners:
                if kinds is not None and record.kind not in kinds:
                    continue
                try:
                    callback(record)
                except Exception:
                    # a broken notifier must not stop the policy; the record is already journaled
                    logger.exception(
                        "decision listener failed",
                        extra={"decision_id": record.id, "decision_kind": record.kind},
                    )

    def _now(self, now: float | None = None) -> float:
        return float(self.clock() if now is None else now)

    # ---- rules ----------------------------------------------------------
    def rules_for(self, model: str) -> list[RuleConfig]:
        return [
            r
            for r in self.config.rules
            if r.models is None or any(fnmatch.fnmatchcase(model, pat) for pat in r.models)
        ]

    def _machine(self, model: str, version: str, rule: str) -> RuleMachine:
        d = self.store.get_json(NS_RULE, _rule_key(model, version, rule))
        return RuleMachine() if d is None else RuleMachine.from_dict(d)

    def _save_machine(self, model: str, version: str, rule: str, m: RuleMachine) -> None:
        self.store.put_json(NS_RULE, _rule_key(model, version, rule), m.to_dict())

    def on_window_closed(
        self, model: str, version: str, window: dict[str, Any], scores: dict[str, Score]
    ) -> list[DecisionRecord]:
        """Evaluate every rule of ``model`` on one closed window of ``version``.

        ``window``: ``id``, ``n_records``, ``start_ts``, ``end_ts``, ``offsets``
        (as JSON-serialisable values). ``scores``: the detectors' scores by metric.
        """
        now = self._now()
        out: list[DecisionRecord] = []
        with self.store.transaction():
            self.governor.note_window(model, version, int(window.get("n_records", 0)), now)
            for rule in self.rules_for(model):
                machine = self._machine(model, version, rule.name)
                obs = judge(rule, scores.get(rule.metric), window)
                transition = machine.step(rule, obs, now)
                self._save_machine(model, version, rule.name, machine)
                if transition is None:
                    continue
                rec = self.journal.write(self._rule_record(model, version, rule, machine, transition, now))
                out.append(rec)
                if transition.kind == DecisionKind.RULE_TRIPPED and rule.action == "redistill":
                    # rules tripping on the same window join one request, started below
                    source = self._trip_source(rule, version, rec)
                    self.governor.request(model, version, source, now, start=False)
                elif transition.kind == DecisionKind.RULE_REARMED:
                    out.extend(self.governor.withdraw_rule(model, version, rule.name, now))
            # new trips, or fresh records a waiting request needed
            out.extend(self.governor.try_start(model, now))
        self._notify(out)
        return out

    def _rule_record(
        self, model: str, version: str, rule: RuleConfig, machine: RuleMachine, tr: Transition, now: float
    ) -> DecisionRecord:
        last = tr.windows[-1] if tr.windows else {}
        trip_level, clear_level = last.get("trip_level"), last.get("clear_level")
        values = ", ".join(_fmt(w.get("value")) for w in tr.windows)
        side = ">" if rule.direction == "above" else "<"
        reason = (
            f"{rule.metric}={_fmt(last.get('value'))} (trip {side} {_fmt(trip_level)}, clear at "
            f"{_fmt(clear_level)}{', calibrated' if rule.calibrated else ''}): {tr.detail}"
        )
        if tr.kind == DecisionKind.RULE_TRIPPED:
            action = (
                "requesting a retrain"
                if rule.action == "redistill"
                else "notify only (action: notify), no retrain requested"
            )
            reason = (
                f"{rule.metric} {rule.direction} {_fmt(trip_level)} in {rule.trip_windows} consecutive windows "
                f"({values}); {action}"
            )
        return DecisionRecord(
            kind=tr.kind,
            ts=now,
            model=model,
            version=version,
            rule=rule.name,
            reason=reason,
            state_before=tr.before.value,
            state_after=tr.after.value,
            metric=rule.metric,
            thresholds={
                "direction": rule.direction,
                "trip": trip_level,
                "clear": clear_level,
                "calibrated": rule.calibrated,
                "action": rule.action,
            },
            counts={
                "breach_count": machine.breach_count,
                "trip_windows": rule.trip_windows,
                "clear_count": machine.clear_count,
                "clear_windows": rule.clear_windows,
                "windows_counted": machine.windows_counted,
                "windows_skipped": machine.windows_skipped,
            },
            windows=tr.windows,
            dry_run=self.config.limits.dry_run,
        )

    @staticmethod
    def _trip_source(rule: RuleConfig, version: str, trip: DecisionRecord) -> dict[str, Any]:
        return {
            "kind": "rule",
            "rule": rule.name,
            "version": version,
            "metric": rule.metric,
            "direction": rule.direction,
            "tripped_ts": trip.ts,
            "trip_decision_id": trip.id,
            "trip_level": trip.thresholds.get("trip"),
            "clear_level": trip.thresholds.get("clear"),
            "values": [w.get("value") for w in trip.windows],
            "windows": trip.windows,
        }

    # ---- time -----------------------------------------------------------
    def tick(self, now: float | None = None) -> list[DecisionRecord]:
        """Re-check waiting retrains (maintenance window opened, cooldown over, budget freed)."""
        now = self._now(now)
        with self.store.transaction():
            out = self.governor.tick(now)
        self._notify(out)
        return out

    def next_wakeup(self, now: float | None = None) -> float | None:
        """When a waiting retrain may next pass its checks by itself (for replay and timers)."""
        return self.governor.next_wakeup(self._now(now))

    def request_scheduled(self, cron: str, now: float | None = None) -> list[DecisionRecord]:
        """The scheduled re-distillation: a request for every known model, subject to the limits."""
        now = self._now(now)
        out: list[DecisionRecord] = []
        with self.store.transaction():
            for model in self.governor.models():
                out.extend(
                    self.governor.request(
                        model,
                        self.governor.latest_version(model),
                        {"kind": "schedule", "cron": cron, "requested_ts": now},
                        now,
                    )
                )
        self._notify(out)
        return out

    # ---- operators ------------------------------------------------------
    def request_manual(self, model: str, reason: str, force: bool = False) -> list[DecisionRecord]:
        """An operator asks for a retrain; ``force`` skips cooldown, budget, buffer and maintenance checks.

        Nothing skips pause or an already running retrain of the model. The
        returned records say whether it started or what it waits for.
        """
        now = self._now()
        with self.store.transaction():
            out = self.governor.request(
                model,
                self.governor.latest_version(model),
                {"kind": "manual", "reason": reason, "force": force, "requested_ts": now},
                now,
                force=force,
            )
        self._notify(out)
        return out

    def pause(self, reason: str) -> list[DecisionRecord]:
        """No retrain starts until ``resume``; windows are still evaluated and rules still trip."""
        now = self._now()
        with self.store.transaction():
            out = self.governor.pause(reason, now)
        self._notify(out)
        return out

    def resume(self) -> list[DecisionRecord]:
        now = self._now()
        with self.store.transaction():
            out = self.governor.resume(now)
        self._notify(out)
        return out

    def on_retrain_started(self, model: str, details: dict[str, Any] | None = None) -> list[DecisionRecord]:
        now = self._now()
        with self.store.transaction():
            out = self.governor.retrain_started(model, details or {}, now)
        self._notify(out)
        return out

    def on_retrain_finished(
        self, model: str, outcome: str, details: dict[str, Any] | None = None
    ) -> list[DecisionRecord]:
        """The job runner's report: ``outcome`` is ``promoted``, ``challenger`` or ``failed``.

        The cooldown starts now. When the retrain did not replace the
        champion, every ``redistill`` rule still tripped on the model's current
        version asks again (a ``retry`` request, which waits for the cooldown
        and the budget like any other).
        """
        now = self._now()
        with self.store.transaction():
            out = self.governor.retrain_finished(model, outcome, details or {}, now)
            if outcome != "promoted":
                version = self.governor.latest_version(model)
                for rule in self.rules_for(model):
                    if rule.action != "redistill" or version is None:
                        continue
                    machine = self._machine(model, version, rule.name)
                    if machine.state in (RuleState.TRIPPED, RuleState.CLEARING):
                        source = {
                            "kind": "retry",
                            "rule": rule.name,
                            "version": version,
                            "after_outcome": outcome,
                            "tripped_ts": machine.tripped_ts,
                            "windows": machine.trip_windows,
                        }
                        out.extend(self.governor.request(model, version, source, now))
        self._notify(out)
        return out

    # ---- housekeeping and status ----------------------------------------
    def housekeeping(self, now: float | None = None) -> int:
        """Drop state of rules no longer configured and of idle, superseded versions; return how many."""
        now = self._now(now)
        retention = self.config.schedule.inactive_version_retention_s
        configured = {r.name for r in self.config.rules}
        dropped = 0
        with self.store.transaction():
            self.governor.prune(now)
            for key, d in self.store.items_json(NS_RULE).items():
                model, version, rule = json.loads(key)
                idle = d.get("last_window_ts") is not None and now - d["last_window_ts"] > retention
                superseded = version != self.governor.latest_version(model)
                if rule not in configured or (idle and superseded):
                    self.store.delete_json(NS_RULE, key)
                    dropped += 1
        if dropped:
            logger.info("policy housekeeping dropped stale rule state", extra={"dropped": dropped})
        return dropped

    def rule_states(self) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """model -> version -> rule -> state summary, for configured rules."""
        by_name = {r.name: r for r in self.config.rules}
        out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for key, d in self.store.items_json(NS_RULE).items():
            model, version, rule_name = json.loads(key)
            rule = by_name.get(rule_name)
            if rule is None:
                continue
            m = RuleMachine.from_dict(d)
            last = m.last or {}
            out.setdefault(model, {}).setdefault(version, {})[rule_name] = {
                "metric": rule.metric,
                "action": rule.action,
                "state": m.state.value,
                "breach_count": m.breach_count,
                "trip_windows": rule.trip_windows,
                "clear_count": m.clear_count,
                "clear_windows": rule.clear_windows,
                "tripped_at": iso(m.tripped_ts),
                "windows_counted": m.windows_counted,
                "windows_skipped": m.windows_skipped,
                "last": {
                    "window_id": last.get("window_id"),
                    "end_ts": iso(last.get("end_ts")),
                    "value": last.get("value"),
                    "trip_level": last.get("trip_level"),
                    "clear_level": last.get("clear_level"),
                    "verdict": last.get("verdict"),
                    "skip_reason": last.get("skip_reason"),
                },
            }
        return out

    def status(self, recent: int = 20) -> dict[str, Any]:
        """Everything ``/status`` and ``distilld status`` show about the policy."""
        now = self._now()
        governor = self.governor.status(now)
        rules = self.rule_states()
        for model, versions in rules.items():
            governor["models"].setdefault(model, {})["rules"] = versions
        return {
            "now": iso(now),
            **governor,
            "recent_decisions": [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "ts": iso(r.ts),
                    "model": r.model,
                    "rule": r.rule,
                    "reason": r.reason,
                }
                for r in self.journal.recent(limit=recent)
            ],
        }

    def decisions(self, model: str | None = None, limit: int = 50) -> list[DecisionRecord]:
        """The latest decision records, oldest first."""
        return self.journal.recent(model=model, limit=limit)


def _fmt(x: Any) -> str:
    return "?" if x is None else f"{x:.4g}"


def format_status(status: dict[str, Any]) -> str:
    """``PolicyEngine.status()`` as text for ``distilld status``."""
    paused = status["paused"]
    budget = status["budget"]
    maint = status["maintenance"]
    head = "paused since {} ({})".format(paused["since"], paused["reason"]) if paused["paused"] else "active"
    if status["dry_run"]:
        head += ", dry-run"
    lines = [
        f"policy: {head}; budget {budget['day']['used']}/{budget['day']['max']} in 24 h, "
        f"{budget['week']['used']}/{budget['week']['max']} in 7 days",
    ]
    if maint["windows"]:
        when = (
            f"open until {maint['open_until']}" if maint["open_until"] else f"next opens {maint['next_open']}"
        )
        lines.append(f"maintenance windows: {'; '.join(maint['windows'])} — {when}")
    for model, m in sorted(status["models"].items()):
        lines.append(f"{model} (latest version {m.get('latest_version')}):")
        for version, rules in sorted(m.get("rules", {}).items()):
            for name, r in sorted(rules.items()):
                last = r["last"]
                count = ""
                if r["state"] == "breaching":
                    count = f" {r['breach_count']}/{r['trip_windows']}"
                elif r["state"] == "clearing":
                    count = f" {r['clear_count']}/{r['clear_windows']}"
                since = f" (tripped {r['tripped_at']})" if r["tripped_at"] else ""
                lines.append(
                    f"  v{version} {name:<22} {r['state']}{count}{since}; last {r['metric']}={_fmt(last['value'])} "
                    f"(trip {_fmt(last['trip_level'])}, clear {_fmt(last['clear_level'])}, {last['verdict']})"
                )
        if m.get("running"):
            lines.append(f"  retrain running, requested {iso(m['running']['requested_ts'])}")
        if m.get("cooldown_until"):
            lines.append(f"  cooldown until {m['cooldown_until']}")
        pending = m.get("pending")
        if pending:
            lines.append(
                f"  retrain pending since {pending['since']}, requested by {pending['requested_by']}"
            )
            for b in pending["waiting_for"]:
                lines.append(f"    waits for {b['check']}: {b['detail']}")
    if status.get("recent_decisions"):
        lines.append("recent decisions:")
        for d in status["recent_decisions"][-10:]:
            lines.append(f"  #{d['id']} {d['ts']} {d['kind']} {d['model'] or '-'} {d['reason']}")
    return "\n".join(lines)

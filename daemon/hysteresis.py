"""The hysteresis state machine of one rule for one (model, version).

::

    armed ──breach──► breaching (n of N) ──N-th consecutive breach──► tripped
      ▲                   │ clear or in-band window                    │ clear
      └───────────────────┘                                            ▼
      ◄──────────M-th consecutive clear────────────────────── clearing (m of M)
                                        breach or in-band window ──► back to tripped

A window is judged against the rule first (``judge``): *breach* (beyond the
trip level), *clear* (at or on the safe side of the clear level), *band*
(in between), or *skip* (too few records, metric absent, no calibrated
threshold) — a skipped window neither advances nor interrupts a run. Only
consecutive windows count, so a metric oscillating inside the band, or
crossing the trip level every other window, never trips.

The machine is plain data (``to_dict``/``from_dict``) so the engine persists
it after every window and a restart resumes mid-count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from distilld.daemon.policy_config import RuleConfig
from distilld.detectors.score import Score


class RuleState(StrEnum):
    ARMED = "armed"
    BREACHING = "breaching"
    TRIPPED = "tripped"
    CLEARING = "clearing"


class Verdict(StrEnum):
    BREACH = "breach"
    CLEAR = "clear"
    BAND = "band"
    SKIP = "skip"


@dataclass(frozen=True)
class Observation:
    """One window judged against one rule."""

    verdict: Verdict
    window: dict[str, Any]
    score: Score | None
    value: float | None = None
    trip_level: float | None = None
    clear_level: float | None = None
    skip_reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """What a decision record keeps of this window (JSON-serialisable)."""
        w = self.window
        # the window manager's summary names these window_id / first_event_ts / last_event_ts
        return {
            "window_id": w.get("id", w.get("window_id")),
            "n_records": w.get("n_records"),
            "start_ts": w.get("start_ts", w.get("first_event_ts")),
            "end_ts": w.get("end_ts", w.get("last_event_ts")),
            "offsets": w.get("offsets"),
            "verdict": self.verdict.value,
            "value": self.value,
            "trip_level": self.trip_level,
            "clear_level": self.clear_level,
            "skip_reason": self.skip_reason,
            "score": None if self.score is None else self.score.to_dict(),
        }


def judge(rule: RuleConfig, score: Score | None, window: dict[str, Any]) -> Observation:
    """Classify a window's score for ``rule``."""
    if score is None:
        return Observation(Verdict.SKIP, window, None, skip_reason=f"metric {rule.metric} not scored")
    n = score.n_current if score.n_current > 0 else int(window.get("n_records", 0))
    if n < rule.min_window_records:
        return Observation(
            Verdict.SKIP,
            window,
            score,
            value=score.value,
            skip_reason=f"{n} records < min_window_records {rule.min_window_records}",
        )
    if score.value is None or not math.isfinite(score.value):
        return Observation(Verdict.SKIP, window, score, skip_reason="metric value is not finite")
    if rule.calibrated:
        if score.threshold is None:
            return Observation(
                Verdict.SKIP,
                window,
                score,
                value=score.value,
                skip_reason="detector has no calibrated threshold",
            )
        if score.direction != rule.direction:
            return Observation(
                Verdict.SKIP,
                window,
                score,
                value=score.value,
                skip_reason=f"rule direction {rule.direction!r} differs from the detector's {score.direction!r}",
            )
        trip = float(score.threshold)
        clear = rule.clear_level(trip)
    else:
        trip = float(rule.trip)
        clear = rule.fixed_clear
    v = float(score.value)
    if rule.direction == "above":
        verdict = Verdict.BREACH if v > trip else Verdict.CLEAR if v <= clear else Verdict.BAND
    else:
        verdict = Verdict.BREACH if v < trip else Verdict.CLEAR if v >= clear else Verdict.BAND
    return Observation(verdict, window, score, value=v, trip_level=trip, clear_level=clear)


@dataclass(frozen=True)
class Transition:
    """A state change, with the windows of the run that caused it (oldest first)."""

    kind: str
    before: RuleState
    after: RuleState
    windows: list[dict[str, Any]]
    detail: str


@dataclass
class RuleMachine:
    """Persisted state of one rule for one (model, version)."""

    state: RuleState = RuleState.ARMED
    breach_count: int = 0
    clear_count: int = 0
    # the windows of the current run of breaching (or clear) windows; a trip
    # record lists all of them
    run: list[dict[str, Any]] = field(default_factory=list)
    tripped_ts: float | None = None
    trip_windows: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] | None = None
    windows_counted: int = 0
    windows_skipped: int = 0
    last_window_ts: float | None = None

    def step(self, rule: RuleConfig, obs: Observation, now: float) -> Transition | None:
        """Advance on one judged window; return the transition, if any."""
        self.last = obs.summary()
        self.last_window_ts = now
        if obs.verdict is Verdict.SKIP:
            self.windows_skipped += 1
            return None
        self.windows_counted += 1
        before = self.state
        if self.state in (RuleState.ARMED, RuleState.BREACHING):
            return self._step_armed(rule, obs, before, now)
        return self._step_tripped(rule, obs, before)

    def _step_armed(
        self, rule: RuleConfig, obs: Observation, before: RuleState, now: float
    ) -> Transition | None:
        if obs.verdict is Verdict.BREACH:
            self.breach_count += 1
            self.run = [*self.run, obs.summary()][-rule.trip_windows :]
            if self.breach_count >= rule.trip_windows:
                self.state = RuleState.TRIPPED
                self.tripped_ts = now
                self.trip_windows = self.run
                self.breach_count = 0
                self.clear_count = 0
                self.run = []
                return Transition(
                    "rule_tripped",
                    before,
                    self.state,
                    self.trip_windows,
                    f"{rule.trip_windows} consecutive windows beyond the trip level",
                )
            self.state = RuleState.BREACHING
            return Transition(
                "rule_breaching",
                before,
                self.state,
                self.run,
                f"breaching window {self.breach_count} of {rule.trip_windows}",
            )
        if self.state is RuleState.BREACHING:
            interrupted = self.run + [obs.summary()]
            count = self.breach_count
            self.state = RuleState.ARMED
            self.breach_count = 0
            self.run = []
            where = "inside the band" if obs.verdict is Verdict.BAND else "at the clear level"
            return Transition(
                "rule_reset",
                before,
                self.state,
                interrupted,
                f"run of {count} breaching window(s) interrupted by a window {where}; still armed",
            )
        return None

    def _step_tripped(self, rule: RuleConfig, obs: Observation, before: RuleState) -> Transition | None:
        if obs.verdict is Verdict.CLEAR:
            self.clear_count += 1
            self.run = [*self.run, obs.summary()][-rule.clear_windows :]
            if self.clear_count >= rule.clear_windows:
                windows = self.run
                self.state = RuleState.ARMED
                self.clear_count = 0
                self.breach_count = 0
                self.run = []
                self.tripped_ts = None
                self.trip_windows = []
                return Transition(
                    "rule_rearmed",
                    before,
                    self.state,
                    windows,
                    f"{rule.clear_windows} consecutive windows at the clear level; re-armed",
                )
            self.state = RuleState.CLEARING
            return Transition(
                "rule_clearing",
                before,
                self.state,
                self.run,
                f"clear window {self.clear_count} of {rule.clear_windows}",
            )
        if self.state is RuleState.CLEARING:
            interrupted = self.run + [obs.summary()]
            count = self.clear_count
            self.state = RuleState.TRIPPED
            self.clear_count = 0
            self.run = []
            what = "beyond the trip level" if obs.verdict is Verdict.BREACH else "inside the band"
            return Transition(
                "rule_reset",
                before,
                self.state,
                interrupted,
                f"run of {count} clear window(s) interrupted by a window {what}; still tripped",
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "breach_count": self.breach_count,
            "clear_count": self.clear_count,
            "run": self.run,
            "tripped_ts": self.tripped_ts,
            "trip_windows": self.trip_windows,
            "last": self.last,
            "windows_counted": self.windows_counted,
            "windows_skipped": self.windows_skipped,
            "last_window_ts": self.last_window_ts,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuleMachine:
        return cls(
            state=RuleState(d.get("state", "armed")),
            breach_count=int(d.get("breach_count", 0)),
            clear_count=int(d.get("clear_count", 0)),
            run=list(d.get("run", [])),
            tripped_ts=d.get("tripped_ts"),
            trip_windows=list(d.get("trip_windows", [])),
            last=d.get("last"),
            windows_counted=int(d.get("windows_counted", 0)),
            windows_skipped=int(d.get("windows_skipped", 0)),
            last_window_ts=d.get("last_window_ts"),
        )

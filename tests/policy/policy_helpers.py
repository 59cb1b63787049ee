"""Helpers for policy tests: a state store in tmp_path, a settable clock, a window feeder."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from distilld.daemon.policy_config import PolicyConfig, RuleConfig
from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.state_store import StateStore
from distilld.detectors.score import Score

# a Monday, 00:00 UTC
T0 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC).timestamp()
METRIC = "divergence.agreement_drop"


class Clock:
    """The engine's injected clock; tests move it by hand."""

    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(store_path: Path):
    s = StateStore(store_path)
    yield s
    s.close()


def fixed_rule(**kw) -> RuleConfig:
    base = dict(
        name="div",
        metric=METRIC,
        trip=0.10,
        clear=0.05,
        trip_windows=3,
        clear_windows=2,
        min_window_records=100,
    )
    base.update(kw)
    return RuleConfig(**base)


def make_config(rules: list[RuleConfig] | None = None, **limits) -> PolicyConfig:
    base_limits = dict(
        cooldown_s=3600.0, max_retrains_per_day=5, max_retrains_per_week=20, min_new_buffer_records=0
    )
    base_limits.update(limits)
    return PolicyConfig(rules=rules if rules is not None else [fixed_rule()], limits=base_limits)


class Feeder:
    """Closes windows of one model version with a given metric value, advancing the clock per window."""

    def __init__(
        self,
        engine: PolicyEngine,
        clock: Clock,
        model: str = "intent",
        version: str = "1",
        window_s: float = 600.0,
        n_records: int = 1000,
    ):
        self.engine, self.clock = engine, clock
        self.model, self.version = model, version
        self.window_s, self.n_records = window_s, n_records
        self._ids = itertools.count(1)

    def window(
        self,
        value: float,
        threshold: float | None = 0.10,
        n_records: int | None = None,
        metric: str = METRIC,
        evidence: dict | None = None,
    ):
        n = self.n_records if n_records is None else n_records
        start = self.clock.t
        self.clock.advance(self.window_s)
        wid = next(self._ids)
        window = {
            "id": f"{self.model}/{self.version}/{wid}",
            "n_records": n,
            "start_ts": start,
            "end_ts": self.clock.t,
            "offsets": {"0": [wid * n, wid * n + n - 1]},
        }
        score = Score(
            metric=metric,
            value=value,
            threshold=threshold,
            direction="above",
            n_current=n,
            evidence=evidence or {"top_classes": [3, 7]},
        )
        return self.engine.on_window_closed(self.model, self.version, window, {metric: score})

    def windows(self, values):
        out = []
        for v in values:
            out.extend(self.window(v))
        return out


@pytest.fixture
def make_engine(store: StateStore, clock: Clock) -> Callable[..., PolicyEngine]:
    def build(config: PolicyConfig | None = None, on_store: StateStore | None = None) -> PolicyEngine:
        return PolicyEngine(config or make_config(), on_store or store, clock=clock)

    return build


def kinds(records) -> list[str]:
    return [str(r.kind) for r in records]

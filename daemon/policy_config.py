"""Configuration of retrain policies: rules, retrain limits, schedules, cost.

These are the knobs an SRE tunes (with ``distilld replay``) before going live,
so every one has a default, a unit in its name and a description, and every
invalid combination is rejected up front with a field-level message: a clear
threshold on the wrong side of the trip threshold, zero windows, a cron
expression APScheduler cannot parse.
"""

from __future__ import annotations

import zoneinfo
from typing import Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Direction = Literal["above", "below"]
Action = Literal["redistill", "notify"]
CALIBRATED = "calibrated"


def parse_cron(expr: str, timezone: str = "UTC") -> CronTrigger:
    """A standard 5-field crontab expression as an APScheduler trigger."""
    return CronTrigger.from_crontab(expr, timezone=zoneinfo.ZoneInfo(timezone))


def _check_timezone(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(
            f"unknown time zone {tz!r} (use an IANA name such as 'UTC' or 'Europe/Paris')"
        ) from err
    return tz


def _check_cron(expr: str) -> str:
    try:
        parse_cron(expr)
    except ValueError as err:
        raise ValueError(
            f"cannot parse cron expression {expr!r}: {err} (expected 5 fields: minute hour day month weekday, "
            "e.g. '0 2 * * *')"
        ) from err
    return expr


class RuleConfig(BaseModel):
    """One retrain rule: a detector metric watched with hysteresis.

    A window *breaches* when the metric is beyond ``trip`` (strictly, in
    ``direction``); it is *clear* when the metric is at or on the safe side of
    the clear level. ``trip_windows`` consecutive breaching windows trip the
    rule; once tripped, ``clear_windows`` consecutive clear windows re-arm it.
    Values between the two levels (inside the band) hold the current state and
    interrupt a run of breaching or clear windows.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Rule name, unique within the config; shows in decision records, logs and metrics.",
    )
    metric: str = Field(
        min_length=1,
        description="Detector metric this rule watches, e.g. 'divergence.agreement_drop', 'prediction.class_js', "
        "'input.ngram_js', 'quality.accuracy_drop'.",
    )
    direction: Direction = Field(
        "above",
        description="'above': larger values are worse (the rule trips when the metric rises above the trip level); "
        "'below': smaller values are worse.",
    )
    trip: float | Literal["calibrated"] = Field(
        CALIBRATED,
        description="Trip level (metric units), or 'calibrated' to use the threshold the detector calibrated on "
        "its reference (Score.threshold); windows whose score has no calibrated threshold do not count.",
    )
    clear_margin_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Width of the hysteresis band when 'clear' is omitted, as a fraction of the trip level's "
        "magnitude: the clear level is trip - fraction*|trip| for direction 'above' (trip + fraction*|trip| for "
        "'below'). Applies per window to calibrated thresholds.",
    )
    clear: float | None = Field(
        None,
        validate_default=True,
        description="Clear level (metric units) that re-arms a tripped rule; must lie on the safe side of 'trip' "
        "(below it for direction 'above'). Omit to derive it from 'trip' with clear_margin_fraction; must be "
        "omitted when trip is 'calibrated'.",
    )
    trip_windows: int = Field(
        3, ge=1, description="Consecutive breaching windows (count) that trip the rule."
    )
    clear_windows: int = Field(
        3, ge=1, description="Consecutive clear windows (count) that re-arm a tripped rule."
    )
    min_window_records: int = Field(
        200,
        ge=0,
        description="Windows whose metric was computed from fewer records (Score.n_current, or the window's "
        "record count when the detector does not report one) neither breach nor clear: they do not count.",
    )
    action: Action = Field(
        "redistill",
        description="'redistill': a trip requests a retrain (subject to the retrain limits); 'notify': a trip "
        "only writes a decision record and notifies.",
    )
    models: list[str] | None = Field(
        None,
        description="Model names (shell-style patterns allowed, e.g. 'intent-*') this rule applies to; "
        "omit for all models.",
    )

    @field_validator("clear")
    @classmethod
    def _band_on_safe_side(cls, clear: float | None, info: ValidationInfo) -> float | None:
        trip, direction = info.data.get("trip"), info.data.get("direction")
        margin = info.data.get("clear_margin_fraction")
        if trip is None or direction is None or margin is None:
            return clear  # an earlier field failed and carries its own error
        if trip == CALIBRATED:
            if clear is not None:
                raise ValueError(
                    "a fixed clear level cannot be checked against a calibrated trip level; omit 'clear' and "
                    "set clear_margin_fraction, or give 'trip' as a number"
                )
            return clear
        trip = float(trip)
        level = clear if clear is not None else _derived_clear(trip, direction, margin)
        how = "" if clear is not None else f" (derived from trip with clear_margin_fraction {margin})"
        if direction == "above" and not level < trip:
            raise ValueError(
                f"clear level {level}{how} must be below trip {trip} for direction 'above' "
                "(the gap is the hysteresis band)"
            )
        if direction == "below" and not level > trip:
            raise ValueError(
                f"clear level {level}{how} must be above trip {trip} for direction 'below' "
                "(the gap is the hysteresis band)"
            )
        return clear

    @property
    def calibrated(self) -> bool:
        return self.trip == CALIBRATED

    @property
    def fixed_clear(self) -> float:
        """The clear level for a fixed trip level (explicit or derived)."""
        if self.clear is not None:
            return float(self.clear)
        return self.clear_level(float(self.trip))

    def clear_level(self, trip_level: float) -> float:
        """Clear level derived from a trip level with clear_margin_fraction."""
        return _derived_clear(trip_level, self.direction, self.clear_margin_fraction)


def _derived_clear(trip: float, direction: str, fraction: float) -> float:
    margin = fraction * abs(trip)
    return trip - margin if direction == "above" else trip + margin


class MaintenanceWindow(BaseModel):
    """A recurring period during which retrains may start."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(
        description="When the window opens, as a 5-field crontab expression (minute hour day month weekday), "
        "e.g. '0 2 * * *' for 02:00 every day."
    )
    duration_s: float = Field(
        3600.0, gt=0, description="How long the window stays open after it opens (seconds)."
    )
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in.")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, v: str) -> str:
        return _check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        return _check_timezone(v)

    def trigger(self) -> CronTrigger:
        return parse_cron(self.cron, self.timezone)


class RetrainLimitsConfig(BaseModel):
    """Global limits on when a requested retrain may start."""

    model_config = ConfigDict(extra="forbid")

    cooldown_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="After a model's retrain finishes (or, in dry-run, after it is requested), no new retrain of "
        "that model starts for this long (seconds).",
    )
    max_retrains_per_day: int = Field(
        2,
        ge=0,
        description="At most this many retrains start in any rolling 24 hours, over all models (count).",
    )
    max_retrains_per_week: int = Field(
        7,
        ge=0,
        description="At most this many retrains start in any rolling 7 days, over all models (count).",
    )
    maintenance_windows: list[MaintenanceWindow] = Field(
        default_factory=list,
        description="Periods during which a retrain may start; a request outside them waits for the next one. "
        "Empty: any time.",
    )
    min_new_buffer_records: int = Field(
        1000,
        ge=0,
        description="A retrain waits until the model has served at least this many records (in closed windows) "
        "since its last retrain started, so the training buffer holds fresh traffic (count).",
    )
    dry_run: bool = Field(
        False,
        description="Make, log and notify every decision, but never start training; cooldowns and budgets "
        "apply as if the retrains had happened.",
    )


class ScheduleConfig(BaseModel):
    """The time side of the policy, driven by APScheduler."""

    model_config = ConfigDict(extra="forbid")

    evaluation_period_s: float = Field(
        60.0,
        gt=0,
        description="How often (seconds) time-based windows are closed, rules evaluated and waiting retrains "
        "re-checked.",
    )
    scheduled_redistill_cron: str | None = Field(
        None,
        description="Optional crontab expression for a re-distillation of every known model even without drift, "
        "e.g. '0 3 * * 0' (Sundays 03:00); subject to the retrain limits.",
    )
    timezone: str = Field("UTC", description="IANA time zone scheduled_redistill_cron is read in.")
    housekeeping_period_s: float = Field(
        3600.0, gt=0, description="How often (seconds) stale policy state is pruned."
    )
    inactive_version_retention_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="Rule state of a model version that has not closed a window for this long, and is not the "
        "model's latest version, is dropped by housekeeping (seconds).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        return _check_timezone(v)

    @field_validator("scheduled_redistill_cron")
    @classmethod
    def _cron_parses(cls, v: str | None) -> str | None:
        return None if v is None else _check_cron(v)


class RetrainCostConfig(BaseModel):
    """What a retrain costs, for replay summaries and status."""

    model_config = ConfigDict(extra="forbid")

    gpu_hours_per_retrain: float = Field(0.5, ge=0, description="GPU time one re-distillation takes (hours).")
    gpu_cost_per_hour: float = Field(2.5, ge=0, description="Price of one GPU hour (in your currency).")


def default_rules() -> list[RuleConfig]:
    """Calibrated-threshold rules on the detectors' headline metrics."""
    return [
        RuleConfig(name="teacher-divergence", metric="divergence.agreement_drop"),
        RuleConfig(name="prediction-drift", metric="prediction.class_js"),
        RuleConfig(name="accuracy-drop", metric="quality.accuracy_drop", min_window_records=50),
        RuleConfig(name="input-drift", metric="input.ngram_js", action="notify"),
    ]


class PolicyConfig(BaseModel):
    """Retrain policy: rules with hysteresis plus the limits every retrain is subject to."""

    model_config = ConfigDict(extra="forbid")

    rules: list[RuleConfig] = Field(
        default_factory=default_rules,
        description="Rules evaluated per (model, version) whenever a window closes.",
    )
    limits: RetrainLimitsConfig = Field(
        default_factory=RetrainLimitsConfig, description="Cooldown, budgets, maintenance windows, dry-run."
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Periodic and cron jobs.")
    cost: RetrainCostConfig = Field(default_factory=RetrainCostConfig, description="GPU cost of a retrain.")

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RuleConfig]) -> list[RuleConfig]:
        seen: set[str] = set()
        for r in rules:
            if r.name in seen:
                raise ValueError(f"rule name {r.name!r} is used twice; names must be unique")
            seen.add(r.name)
        return rules

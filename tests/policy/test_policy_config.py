import pytest
from pydantic import ValidationError

from distilld.daemon.policy_config import (
    MaintenanceWindow,
    PolicyConfig,
    RetrainLimitsConfig,
    RuleConfig,
    ScheduleConfig,
)


def _locs(err: ValidationError) -> list[tuple]:
    return [e["loc"] for e in err.errors()]


def test_defaults_validate_and_use_calibrated_thresholds():
    cfg = PolicyConfig()
    assert {r.metric for r in cfg.rules} >= {"divergence.agreement_drop", "prediction.class_js"}
    assert all(r.calibrated for r in cfg.rules)
    assert PolicyConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize(
    ("direction", "trip", "clear"),
    [("above", 0.1, 0.2), ("above", 0.1, 0.1), ("below", 0.9, 0.8), ("below", 0.9, 0.9)],
)
def test_clear_on_wrong_side_of_trip_is_a_field_error(direction, trip, clear):
    with pytest.raises(ValidationError) as exc:
        PolicyConfig.model_validate(
            {"rules": [{"name": "r", "metric": "m", "direction": direction, "trip": trip, "clear": clear}]}
        )
    assert ("rules", 0, "clear") in _locs(exc.value)
    assert "hysteresis band" in str(exc.value)


def test_fixed_clear_with_calibrated_trip_is_rejected():
    with pytest.raises(ValidationError) as exc:
        RuleConfig(name="r", metric="m", trip="calibrated", clear=0.1)
    assert ("clear",) in _locs(exc.value)


def test_derived_clear_level_sits_on_the_safe_side():
    above = RuleConfig(name="a", metric="m", trip=0.5, clear_margin_fraction=0.2)
    below = RuleConfig(name="b", metric="m", direction="below", trip=-0.5, clear_margin_fraction=0.2)
    assert above.fixed_clear == pytest.approx(0.4)
    assert below.fixed_clear == pytest.approx(-0.4)
    with pytest.raises(ValidationError):
        RuleConfig(name="z", metric="m", trip=0.0)  # no band can be derived around zero


@pytest.mark.parametrize("field", ["trip_windows", "clear_windows"])
def test_zero_windows_is_a_field_error(field):
    with pytest.raises(ValidationError) as exc:
        RuleConfig(name="r", metric="m", **{field: 0})
    assert (field,) in _locs(exc.value)


def test_unparsable_cron_is_a_field_error():
    with pytest.raises(ValidationError) as exc:
        PolicyConfig.model_validate(
            {"limits": {"maintenance_windows": [{"cron": "0 25 * * *", "duration_s": 60}]}}
        )
    assert ("limits", "maintenance_windows", 0, "cron") in _locs(exc.value)
    with pytest.raises(ValidationError) as exc:
        ScheduleConfig(scheduled_redistill_cron="every sunday")
    assert ("scheduled_redistill_cron",) in _locs(exc.value)
    with pytest.raises(ValidationError) as exc:
        MaintenanceWindow(cron="0 2 * * *", timezone="Mars/Olympus")
    assert ("timezone",) in _locs(exc.value)


def test_typos_and_duplicate_rule_names_are_rejected():
    with pytest.raises(ValidationError) as exc:
        RetrainLimitsConfig.model_validate({"cooldown": 10})
    assert ("cooldown",) in _locs(exc.value)
    with pytest.raises(ValidationError, match="used twice"):
        PolicyConfig(rules=[RuleConfig(name="r", metric="a"), RuleConfig(name="r", metric="b")])


def test_every_knob_has_a_description():
    for model in (PolicyConfig, RuleConfig, RetrainLimitsConfig, ScheduleConfig, MaintenanceWindow):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"

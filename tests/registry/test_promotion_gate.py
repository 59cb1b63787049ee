from distilld.registry.config import GateConfig
from distilld.registry.promotion_gate import evaluate_gate


def side(holdout: float, replay: float | None = None, replay_acc: float | None = None) -> dict:
    out = {"holdout": {"teacher_agreement": holdout}}
    if replay is not None:
        out["replay"] = {"teacher_agreement": replay, "accuracy": None}
        if replay_acc is not None:
            out["replay"]["accuracy"] = replay_acc
    return out


GATE = GateConfig(min_agreement_gain=0.01, max_replay_drop=0.02)


def test_better_candidate_passes():
    verdict = evaluate_gate(side(0.90, 0.88), side(0.85, 0.89), GATE)
    assert verdict.passed
    assert abs(verdict.details["holdout_agreement_gain"] - 0.05) < 1e-9
    assert abs(verdict.details["replay_agreement_drop"] - 0.01) < 1e-9


def test_gain_below_margin_fails_with_reason():
    verdict = evaluate_gate(side(0.855, 0.9), side(0.85, 0.9), GATE)
    assert not verdict.passed
    assert "holdout agreement gain +0.0050 is below the required +0.0100" in verdict.reason


def test_replay_regression_fails_even_with_holdout_gain():
    verdict = evaluate_gate(side(0.95, 0.80), side(0.85, 0.90), GATE)
    assert not verdict.passed
    assert "replay agreement fell by 0.1000" in verdict.reason


def test_replay_accuracy_checked_when_both_have_labels():
    verdict = evaluate_gate(side(0.95, 0.90, replay_acc=0.70), side(0.85, 0.90, replay_acc=0.80), GATE)
    assert not verdict.passed
    assert "replay accuracy fell" in verdict.reason
    assert "replay agreement" not in verdict.reason


def test_missing_replay_fails_closed():
    verdict = evaluate_gate(side(0.95), side(0.85), GATE)
    assert not verdict.passed
    assert "no replay metric" in verdict.reason


def test_no_champion_passes_and_missing_candidate_metric_fails():
    assert evaluate_gate(side(0.5, 0.5), None, GATE).passed
    assert not evaluate_gate({}, side(0.5, 0.5), GATE).passed


def test_nan_metric_is_treated_as_missing():
    verdict = evaluate_gate(side(float("nan"), 0.9), side(0.85, 0.9), GATE)
    assert not verdict.passed
    assert "candidate has no holdout agreement" in verdict.reason

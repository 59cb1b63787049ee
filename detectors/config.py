"""Settings of the detector suite (the ``detectors`` section of the daemon's YAML)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DetectorsConfig(BaseModel):
    """Detectors, reference building and threshold calibration."""

    model_config = ConfigDict(extra="forbid")

    kl_temperature: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Softmax temperature (dimensionless) for KL and JS between teacher and student.",
    )
    false_alarm_probability_per_window: float = Field(
        1e-3,
        gt=0,
        lt=0.5,
        description="Calibrated thresholds are set so that one metric of one window breaches with this probability "
        "when nothing changed. Rules that need several consecutive breaching windows multiply it down further.",
    )
    reference_records: int = Field(
        100_000,
        ge=100,
        description="Records after a promotion that form the new reference (re-baseline) before detectors score.",
    )
    calibration_subwindows: int = Field(
        20,
        ge=4,
        le=1000,
        description="Number of consecutive sub-windows (count) the reference is cut into for calibration; "
        "reference_records / calibration_subwindows should be about one detector window's record count.",
    )
    calibration_variance_confidence: float = Field(
        0.75,
        ge=0.5,
        lt=1,
        description="Confidence level (probability) of the upper bound taken on the variance of divergence metrics "
        "across reference sub-windows when fitting their tail; higher is more conservative.",
    )
    min_window_records: int = Field(
        200, ge=1, description="Windows with fewer records get no threshold for prediction and input metrics."
    )
    min_shadow_records: int = Field(
        100,
        ge=1,
        description="Windows with fewer shadow records (records with teacher outputs) get no threshold for "
        "divergence metrics.",
    )
    min_labelled_records: int = Field(
        100, ge=1, description="Windows with fewer labelled records get no threshold for quality metrics."
    )
    ngram_buckets: int = Field(
        1 << 15,
        ge=1 << 10,
        le=1 << 20,
        description="Hash buckets (count, a power of two) for word unigrams and bigrams, half each; bounds the "
        "size of every window state.",
    )
    js_min_expected_count: float = Field(
        20.0,
        gt=0,
        description="For class and n-gram Jensen-Shannon metrics: cells a sub-window (about one window) is expected "
        "to hold fewer counts of than this are pooled into one cell, so sampling noise in rare cells does not drown "
        "real shifts.",
    )
    confidence_bins: int = Field(
        20, ge=2, le=1000, description="Histogram bins (count) of the student's top-1 probability."
    )
    ece_bins: int = Field(15, ge=2, le=1000, description="Bins (count) of the expected calibration error.")
    report_sample_records: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Records (count) each window keeps as a uniform sample for Evidently reports and for naming "
        "shifted n-grams; their texts live only in memory and the state store, never in logs.",
    )
    evidence_top_k: int = Field(5, ge=1, le=100, description="Items (count) listed per evidence entry.")

    @field_validator("ngram_buckets")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two, got {v}")
        return v

    @property
    def subwindow_records(self) -> int:
        return max(1, self.reference_records // self.calibration_subwindows)

"""What a detector says about a current window compared with its reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Direction = Literal["above", "below"]


@dataclass(frozen=True)
class Score:
    """One metric of one window.

    ``value`` is compared with ``threshold`` in ``direction`` (``above`` means
    larger values are worse). ``threshold`` is the calibrated alarm level, or
    None when the reference was too small to calibrate. ``p_value`` is the
    probability of a value at least this extreme under the reference, where
    the detector can estimate one. ``evidence`` is small, JSON-serialisable and
    meant for a human (e.g. top shifted classes); it never holds raw input text
    beyond short n-grams.
    """

    metric: str
    value: float
    threshold: float | None
    direction: Direction = "above"
    p_value: float | None = None
    n_current: int = 0
    n_reference: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def breached(self) -> bool:
        if self.threshold is None:
            return False
        return self.value > self.threshold if self.direction == "above" else self.value < self.threshold

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["breached"] = self.breached
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Score:
        d = {k: v for k, v in d.items() if k != "breached"}
        return cls(**d)

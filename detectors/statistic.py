"""What a detector computes for one metric before calibration turns it into a Score.

A ``Statistic`` carries the metric's value in its own units plus how that
value scales with the window sizes, so one null model fitted on reference
sub-windows serves windows of any size. Families:

- ``z``: ``value / scale`` is about N(0, 1) under no change when records are
  independent (``scale`` is the analytic standard error); larger is worse.
- ``z_two_sided``: as ``z``, but ``value`` is an absolute difference.
- ``chi2``: a non-negative divergence; ``value / scale`` with
  ``scale = 1/n + 1/m`` has a size-free null distribution, modelled as a
  scaled chi-square.
- ``level``: a rate with no analytic null; its mean and spread are taken from
  the reference, the spread shrinking as ``scale = 1/sqrt(n)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Family = Literal["z", "z_two_sided", "chi2", "level"]


@dataclass(frozen=True)
class Statistic:
    metric: str
    value: float
    scale: float
    family: Family
    n_current: int
    n_reference: int
    usable: bool = True
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def standardized(self) -> float:
        if self.family == "level":
            return self.value
        return self.value / self.scale if self.scale > 0 else 0.0


def unusable(metric: str, family: Family, n_current: int, n_reference: int, why: str) -> Statistic:
    """A metric that cannot be computed for this pair of windows (e.g. no shadow records)."""
    return Statistic(metric, 0.0, 0.0, family, n_current, n_reference, usable=False, evidence={"why": why})


def js_bits(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two count vectors."""
    p_total, q_total = float(p_counts.sum()), float(q_counts.sum())
    if p_total <= 0 or q_total <= 0:
        return 0.0
    nz = (p_counts > 0) | (q_counts > 0)
    p = p_counts[nz] / p_total
    q = q_counts[nz] / q_total
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_qm = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(max(0.5 * (kl_pm + kl_qm), 0.0))


def psi(p_counts: np.ndarray, q_counts: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index, with shares floored so empty cells stay finite."""
    p = np.maximum(p_counts / max(p_counts.sum(), 1), floor)
    q = np.maximum(q_counts / max(q_counts.sum(), 1), floor)
    return float(((p - q) * np.log(p / q)).sum())


def mean_and_var(total: float, sum_sq: float, n: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 0.0
    mean = total / n
    return mean, max(sum_sq / n - mean * mean, 0.0)


def bernoulli_se(successes: float, n_reference: float, n_current: float) -> float:
    """Standard error of a difference of two rates, with the reference rate's variance.

    The rate is shrunk by one success and one failure so a reference at 100 %
    still gives a positive error.
    """
    p = (successes + 1.0) / (n_reference + 2.0)
    return float(np.sqrt(p * (1 - p) * (1.0 / max(n_current, 1) + 1.0 / max(n_reference, 1))))


def shifted_cells(
    current: np.ndarray, reference: np.ndarray, top_k: int, min_count: float = 0.0
) -> list[tuple[int, float, float, float]]:
    """Cells whose share moved most, ranked by a two-proportion z score.

    Returns (cell, current share, reference share, z) for the top ``top_k``.
    """
    n, m = float(current.sum()), float(reference.sum())
    if n <= 0 or m <= 0:
        return []
    pc, pr = current / n, reference / m
    pooled = (current + reference) / (n + m)
    se = np.sqrt(np.maximum(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / m))
    z = (pc - pr) / se
    z[(current + reference) <= min_count] = 0.0
    order = np.argsort(-np.abs(z))[:top_k]
    return [(int(i), float(pc[i]), float(pr[i]), float(z[i])) for i in order if z[i] != 0.0]


def pool_rare(
    current: np.ndarray,
    reference: np.ndarray,
    window_records: int,
    reference_records: int,
    min_expected: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Pool the cells a window of ``window_records`` records would expect fewer than ``min_expected`` counts in.

    Rare cells carry almost only sampling noise: on a sparse histogram
    (hashed n-grams) they swamp the divergence and drown real shifts. Fixing
    the cell set by the window size (not the current window's own size)
    keeps the statistic's null distribution the same for every window.
    """
    ref_total = float(reference.sum())
    if ref_total <= 0 or reference_records <= 0:
        return current, reference
    expected = reference * (window_records / reference_records)
    keep = expected >= min_expected
    if keep.all():
        return current, reference
    return (
        np.append(current[keep], current[~keep].sum()),
        np.append(reference[keep], reference[~keep].sum()),
    )


def js_contributions(current: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each cell's share of the Jensen-Shannon divergence (bits): ranks cells by how much they moved."""
    p = current / max(float(current.sum()), 1.0)
    q = reference / max(float(reference.sum()), 1.0)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(p / m), 0.0)
        b = np.where(q > 0, q * np.log2(q / m), 0.0)
    return 0.5 * (a + b)

"""Teacher-student divergence on shadow records (records that carry teacher outputs).

Metrics (all "above": larger is worse):

- ``divergence.agreement_drop``: reference top-1 agreement minus current
  (fraction of shadow records where the student's prediction equals the
  teacher's argmax).
- ``divergence.kl_increase``: current minus reference mean KL(teacher || student),
  nats, at ``kl_temperature``.
- ``divergence.js_increase``: current minus reference mean Jensen-Shannon
  divergence teacher vs student, bits.

Their standard errors use the shadow-record counts of both windows, so a
window with few shadow records gets a wider threshold, and a window with
fewer than ``min_shadow_records`` gets none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distilld.detectors.additive_state import AdditiveState
from distilld.detectors.calibration import Calibration, uncalibrated_score
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.record_signals import RecordSignals
from distilld.detectors.score import Score
from distilld.detectors.statistic import Statistic, bernoulli_se, mean_and_var, shifted_cells, unusable

METRICS = ("divergence.agreement_drop", "divergence.kl_increase", "divergence.js_increase")


class TeacherDivergence(AdditiveState):
    kind = "teacher_divergence"
    params = ("n_classes", "kl_temperature")
    fields = ("n", "agree", "kl_sum", "kl_sq", "js_sum", "js_sq", "confusion")

    def __init__(self, n_classes: int, kl_temperature: float = 1.0):
        self.n_classes = int(n_classes)
        self.kl_temperature = float(kl_temperature)
        self.n = np.zeros((), np.int64)
        self.agree = np.zeros((), np.int64)
        self.kl_sum = np.zeros((), np.float64)
        self.kl_sq = np.zeros((), np.float64)
        self.js_sum = np.zeros((), np.float64)
        self.js_sq = np.zeros((), np.float64)
        # rows: teacher's class, columns: student's prediction
        self.confusion = np.zeros((n_classes, n_classes), np.int64)

    def update(self, batch: RecordBatch, signals: RecordSignals | None = None) -> None:
        signals = signals or RecordSignals(batch, self.kl_temperature)
        rows = signals.teacher_rows
        if len(rows) == 0:
            return
        teacher = signals.teacher_classes
        student = signals.predictions[rows]
        c = self.n_classes
        self.confusion += np.bincount(teacher * c + student, minlength=c * c).reshape(c, c)
        self.n += len(rows)
        self.agree += int((teacher == student).sum())
        kl, js = signals.teacher_kl, signals.teacher_js
        self.kl_sum += kl.sum()
        self.kl_sq += (kl * kl).sum()
        self.js_sum += js.sum()
        self.js_sq += (js * js).sum()

    @property
    def agreement(self) -> float:
        return float(self.agree) / float(self.n) if self.n > 0 else 0.0

    def statistics(
        self,
        current: TeacherDivergence,
        evidence: bool = True,
        top_k: int = 5,
        class_names: Sequence[str] = (),
    ) -> list[Statistic]:
        """This state is the reference; ``current`` the window being judged."""
        m, n = int(self.n), int(current.n)
        if m == 0 or n == 0:
            why = "no shadow (teacher) records in the " + ("reference" if m == 0 else "current window")
            return [unusable(name, "z", n, m, why) for name in METRICS]
        stats = [
            Statistic(
                "divergence.agreement_drop",
                self.agreement - current.agreement,
                bernoulli_se(float(self.agree), m, n),
                "z",
                n,
                m,
                evidence=self._agreement_evidence(current, top_k, class_names) if evidence else {},
            )
        ]
        for metric, s_sum, s_sq, unit in (
            ("divergence.kl_increase", "kl_sum", "kl_sq", "nats"),
            ("divergence.js_increase", "js_sum", "js_sq", "bits"),
        ):
            ref_mean, ref_var = mean_and_var(float(getattr(self, s_sum)), float(getattr(self, s_sq)), m)
            cur_mean, _ = mean_and_var(float(getattr(current, s_sum)), float(getattr(current, s_sq)), n)
            se = float(np.sqrt(max(ref_var, 1e-12) * (1 / n + 1 / m)))
            ev = {"current_mean": cur_mean, "reference_mean": ref_mean, "unit": unit} if evidence else {}
            if evidence and metric == "divergence.kl_increase":
                ev["kl_temperature"] = self.kl_temperature
            stats.append(Statistic(metric, cur_mean - ref_mean, se, "z", n, m, evidence=ev))
        return stats

    def _agreement_evidence(
        self, current: TeacherDivergence, top_k: int, class_names: Sequence[str]
    ) -> dict[str, object]:
        def name(c: int) -> str | int:
            return class_names[c] if c < len(class_names) else c

        ref_n_c, cur_n_c = self.confusion.sum(axis=1), current.confusion.sum(axis=1)
        ref_ok, cur_ok = np.diag(self.confusion), np.diag(current.confusion)
        ref_rate = (ref_ok + 1) / (ref_n_c + 2)
        cur_rate = np.where(cur_n_c > 0, cur_ok / np.maximum(cur_n_c, 1), ref_rate)
        se = np.sqrt(ref_rate * (1 - ref_rate) * (1 / np.maximum(cur_n_c, 1) + 1 / np.maximum(ref_n_c, 1)))
        z = np.where(cur_n_c > 0, (ref_rate - cur_rate) / se, 0.0)
        worst = [
            {
                "teacher_class": name(int(c)),
                "current_agreement": float(cur_rate[c]),
                "reference_agreement": float(ref_ok[c] / ref_n_c[c]) if ref_n_c[c] else None,
                "current_records": int(cur_n_c[c]),
                "z": float(z[c]),
            }
            for c in np.argsort(-z)[:top_k]
            if z[c] > 0
        ]
        off_cur = current.confusion.astype(float)
        off_ref = self.confusion.astype(float)
        np.fill_diagonal(off_cur, 0)
        np.fill_diagonal(off_ref, 0)
        cur_n, ref_n = max(int(current.n), 1), max(int(self.n), 1)
        confusions = [
            {
                "teacher_class": name(cell // self.n_classes),
                "student_class": name(cell % self.n_classes),
                "current_share": float(off_cur.flat[cell]) / cur_n,
                "reference_share": float(off_ref.flat[cell]) / ref_n,
            }
            for cell, _, _, z_cell in shifted_cells(off_cur.ravel(), off_ref.ravel(), top_k)
            if z_cell > 0
        ]
        return {
            "current_agreement": current.agreement,
            "reference_agreement": self.agreement,
            "current_shadow_records": int(current.n),
            "reference_shadow_records": int(self.n),
            "worst_agreeing_classes": worst,
            "rising_confusions": confusions,
        }

    @staticmethod
    def score(
        reference: TeacherDivergence, current: TeacherDivergence, calibration: Calibration | None = None
    ) -> list[Score]:
        stats = reference.statistics(current)
        return [calibration.score(s) if calibration else uncalibrated_score(s) for s in stats]

"""Evidently 0.7 report of a reference window against a current one, for humans.

Built when a rule trips or on demand (``distilld report``), from the windows'
record samples, never on the per-record path: Evidently's drift tests cost
seconds per window. One ``ValueDrift`` per column rather than
``DataDriftPreset``, which computes every drift twice. Columns are the derived
per-record values (predicted class, confidence, margin, entropy, words per
record, teacher agreement and KL where teacher outputs exist) plus the text,
for which Evidently runs its text-content drift (a domain classifier).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import ValueDrift

from distilld.detectors.record_sample import RecordSample
from distilld.detectors.suite import WindowState

log = logging.getLogger(__name__)

NUMERICAL = ("confidence", "margin", "entropy_bits", "words", "teacher_agrees", "teacher_kl")
CATEGORICAL = ("predicted_class",)
TEXT = ("text",)


def _frame(source: WindowState | RecordSample, class_names: Sequence[str]) -> pd.DataFrame:
    sample = source.sample if isinstance(source, WindowState) else source
    return pd.DataFrame(sample.to_frame_columns(tuple(class_names)))


def build_evidently_report(
    reference: WindowState | RecordSample,
    current: WindowState | RecordSample,
    out_dir: Path,
    class_names: Sequence[str] = (),
    include_text: bool = True,
) -> dict[str, Any]:
    """Write ``report.html`` and ``report.json`` under ``out_dir``; return a summary.

    The summary lists per column Evidently's drift method, score, threshold
    and verdict, plus the sample sizes and how long the report took.
    """
    started = time.perf_counter()
    ref_df, cur_df = _frame(reference, class_names), _frame(current, class_names)
    if ref_df.empty or cur_df.empty:
        raise ValueError("both windows need a non-empty record sample for an Evidently report")
    # a column with no values on either side (no shadow traffic) cannot be compared
    usable = [c for c in NUMERICAL if ref_df[c].notna().any() and cur_df[c].notna().any()]
    text = list(TEXT) if include_text else []
    columns = [*usable, *CATEGORICAL, *text]
    definition = DataDefinition(
        numerical_columns=usable, categorical_columns=list(CATEGORICAL), text_columns=text
    )
    report = Report([ValueDrift(column=c) for c in columns])
    snapshot = report.run(
        Dataset.from_pandas(cur_df[columns], data_definition=definition),
        Dataset.from_pandas(ref_df[columns], data_definition=definition),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "report.html", out_dir / "report.json"
    snapshot.save_html(str(html_path))
    snapshot.save_json(str(json_path))

    drift: dict[str, dict[str, Any]] = {}
    for result in snapshot.dict()["metrics"]:
        cfg = result["config"]
        method, threshold, value = cfg["method"], cfg["threshold"], float(result["value"])
        # p-value tests drift when small; distance and classifier scores when large
        drifted = value < threshold if "p_value" in method else value >= threshold
        drift[cfg["column"]] = {"method": method, "score": value, "threshold": threshold, "drifted": drifted}
    seconds = time.perf_counter() - started
    log.info(
        "evidently report built",
        extra={
            "out_dir": str(out_dir),
            "seconds": round(seconds, 3),
            "drifted_columns": sum(d["drifted"] for d in drift.values()),
        },
    )
    return {
        "html": str(html_path),
        "json": str(json_path),
        "reference_sample_records": len(ref_df),
        "current_sample_records": len(cur_df),
        "columns": drift,
        "drifted_columns": sorted(c for c, d in drift.items() if d["drifted"]),
        "seconds": seconds,
    }

"""Replay a long stationary stream with the default thresholds: how many trips, how fast.

Generates N synthetic WordNet inference records with no shift
(``distilld.daemon.traffic_synth``), writes them as JSONL, and replays the file
with default ``DetectorsConfig`` and ``PolicyConfig`` (calibrated thresholds,
3 consecutive windows to trip) and windows of ``--window-records``. Reports
trips (expected: zero), single breaching windows per metric (the per-window
false-alarm rate the detectors were calibrated to), the closest any rule came
to its trip level, and the time each stage took.

    .venv/bin/python bench/replay_stationary.py --records 1000000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from distilld.daemon.policy_config import PolicyConfig
from distilld.daemon.replay import ReplaySettings, run_replay
from distilld.daemon.traffic_synth import generate_records, write_jsonl
from distilld.detectors.config import DetectorsConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--window-records", type=int, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out-dir", type=Path, default=Path("var/bench/replay_stationary"))
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="distilld-bench-") as tmp:
        stream = Path(tmp) / "stationary.jsonl"
        t0 = time.perf_counter()
        write_jsonl(stream, generate_records(args.records, seed=args.seed), total=args.records)
        gen_s = time.perf_counter() - t0
        size_mb = stream.stat().st_size / 1e6

        settings = ReplaySettings(DetectorsConfig(), PolicyConfig(), args.window_records)
        result = run_replay(settings, stream, plot_dir=args.out_dir, progress=True, total=args.records)

    breaching = Counter(
        d.metric for d in result.decisions if d.kind == "rule_breaching" and d.counts["breach_count"] == 1
    )
    closest = {}
    for rule in settings.policy.rules:
        ratios = [
            w.values[rule.metric] / w.thresholds[rule.metric]
            for w in result.windows
            if w.thresholds.get(rule.metric) and w.values.get(rule.metric) is not None
        ]
        closest[rule.name] = {
            "windows_with_threshold": len(ratios),
            "max_value_over_trip": max(ratios, default=None),
        }
    report = {
        "records": result.records,
        "window_records": args.window_records,
        "reference_records": settings.detectors.reference_records,
        "windows_scored": len(result.windows),
        "trips": len(result.trips()),
        "retrains": result.retrains,
        "breaching_runs_started": dict(breaching),
        "closest_to_trip": closest,
        "generate_s": round(gen_s, 1),
        "jsonl_mb": round(size_mb, 1),
        "replay_s": round(result.elapsed_s, 1),
        "replay_records_per_s": round(result.records / result.elapsed_s),
        "plots": [str(p) for p in result.plots],
    }
    print(result.summary())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

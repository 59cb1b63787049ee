"""Detector benchmark on WordNet-gloss streams with known change points.

Streams (after a reference of ``reference_records`` stationary records):

- stationary: natural class mix, ``--stationary-records`` records (false alarms);
- abrupt_class_mix_40 / abrupt_class_mix_15: at the change point 40 % (15 %)
  of the traffic moves to 10 random classes;
- gradual_class_mix: the same 40 % move, ramped in linearly over 100k records;
- text_only: same class mix throughout, but the glosses switch from
  definitions to definitions with example sentences (a lexical shift).

Per detector metric: false alarms per 1M stationary records (single windows,
and trips of the default rule = 3 consecutive breaching windows), detection
delay in records after the change, and records/s per core of the suite's
update path. Anchors on per-record signals (teacher agreement, teacher KL,
confidence, words per record): River's ADWIN and PageHinkley, at defaults and
tuned (most sensitive setting with no false alarm on the stationary stream,
which flatters them: tuned in-sample). Evidently's report is timed per window.

    .venv/bin/python bench/detect.py --out /tmp/distilld-bench-detect
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from river import drift
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detect_streams import GlossPools, LogitModel, StreamMaker, shifted_mix  # noqa: E402

from distilld.detectors.config import DetectorsConfig  # noqa: E402
from distilld.detectors.evidently_report import build_evidently_report  # noqa: E402
from distilld.detectors.record_signals import RecordSignals  # noqa: E402
from distilld.detectors.reference import ReferenceBuilder  # noqa: E402
from distilld.detectors.suite import METRIC_NAMES, DetectorSuite  # noqa: E402
from distilld.trainers.wordnet import LEXNAMES, load_glosses  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TRIP_WINDOWS = 3
SIGNALS = ("agreement", "teacher_kl", "confidence", "words")
ADWIN_DELTAS = (0.002, 1e-4, 1e-6, 1e-8, 1e-10, 1e-14)
PH_THRESHOLD_SDS = (10, 20, 50, 100, 200, 500, 1000, 2000)


@dataclass
class Stream:
    name: str
    records: int
    change_at: int | None = None
    ramp_records: int = 0
    fraction: float = 0.0
    text_shift: bool = False


@dataclass
class RiverRun:
    """One River detector on one per-record signal; alarms as record indices."""

    signal: str
    label: str
    detector: object
    alarms: list[int] = field(default_factory=list)


def make_river(signal: str, sd: float, tuned: dict[str, dict[str, float]] | None) -> list[RiverRun]:
    if tuned is None:
        runs = [RiverRun(signal, f"ADWIN(delta={d:g})", drift.ADWIN(delta=d)) for d in ADWIN_DELTAS]
        runs += [
            RiverRun(signal, f"PageHinkley(threshold={k}sd)", drift.PageHinkley(threshold=k * sd)) for k in PH_THRESHOLD_SDS
        ]
        runs.append(RiverRun(signal, "PageHinkley(defaults)", drift.PageHinkley()))
        return runs
    t = tuned[signal]
    return [
        RiverRun(signal, "ADWIN(defaults)", drift.ADWIN()),
        RiverRun(signal, f"ADWIN(delta={t['adwin_delta']:g})", drift.ADWIN(delta=t["adwin_delta"])),
        RiverRun(signal, "PageHinkley(defaults)", drift.PageHinkley()),
        RiverRun(signal, f"PageHinkley(threshold={t['ph_threshold']:.3g})", drift.PageHinkley(threshold=t["ph_threshold"])),
    ]


def signal_values(batch, signals: RecordSignals) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(record offsets in the batch, values) per signal."""
    rows = signals.teacher_rows
    agree = (signals.teacher_classes == signals.predictions[rows]).astype(float)
    all_rows = np.arange(len(batch))
    return {
        "agreement": (rows, 1.0 - agree),  # disagreement: up is worse, as for the other signals
        "teacher_kl": (rows, signals.teacher_kl),
        "confidence": (all_rows, signals.confidence),
        "words": (all_rows, signals.tokens.tokens_per_text.astype(float)),
    }


def run_stream(
    stream: Stream,
    suite: DetectorSuite,
    pools: GlossPools,
    model: LogitModel,
    seed: int,
    river_tuned: dict[str, dict[str, float]] | None,
    signal_sd: dict[str, float] | None,
    evidently_dir: Path | None,
) -> dict:
    window = suite.config.subwindow_records
    maker = StreamMaker(pools, model, seed)
    rng = np.random.default_rng(seed + 1)
    base_pool = "definition" if stream.text_shift else "all"
    natural = pools.natural / pools.natural.sum()
    moved = shifted_mix(pools.natural, 1.0, rng)  # the 10 classes traffic moves to

    builder = ReferenceBuilder(suite, source="benchmark")
    update_cpu = 0.0
    update_records = 0
    while not builder.complete:
        batch = maker.batch(natural, base_pool, window)
        t0 = time.process_time()
        builder.update(batch)
        update_cpu += time.process_time() - t0
        update_records += len(batch)
    t0 = time.process_time()
    reference = builder.build()
    build_cpu = time.process_time() - t0

    river: list[RiverRun] = []
    windows: list[dict] = []
    score_cpu = 0.0
    evidently_seconds: list[float] = []
    for start in tqdm(range(0, stream.records, window), desc=stream.name, unit="window", leave=False):
        idx = start + np.arange(window)
        share = None
        if stream.change_at is not None:
            ramp = max(stream.ramp_records, 1)
            share = np.clip((idx - stream.change_at + 1) / ramp, 0, 1) * (idx >= stream.change_at)
        if stream.text_shift:
            batch = maker.batch(natural, base_pool, window, shifted_share=share, shifted_pool="example")
        elif stream.fraction > 0:
            mix = (1 - stream.fraction) * natural + stream.fraction * moved
            batch = maker.batch(natural, base_pool, window, shifted_probs=mix, shifted_share=share)
        else:
            batch = maker.batch(natural, base_pool, window)

        current = suite.new_window()
        t0 = time.process_time()
        current.update(batch)
        update_cpu += time.process_time() - t0
        update_records += len(batch)
        t0 = time.process_time()
        scores = suite.score(reference, current)
        score_cpu += time.process_time() - t0
        windows.append(
            {
                "end": start + window,
                "scores": {m: [s.value, s.threshold, s.breached] for m, s in scores.items()},
            }
        )
        if evidently_dir is not None and len(evidently_seconds) < 3 and start >= (stream.change_at or 0):
            summary = build_evidently_report(
                reference.window, current, evidently_dir / f"w{start}", class_names=LEXNAMES
            )
            evidently_seconds.append(summary["seconds"])

        sig = signal_values(batch, RecordSignals(batch, suite.config.kl_temperature))
        if not river:
            sd = signal_sd or {k: float(np.std(v)) or 1.0 for k, (_, v) in sig.items()}
            signal_sd = sd
            river = [r for s in SIGNALS for r in make_river(s, sd[s], river_tuned)]
        for run in river:
            rows, values = sig[run.signal]
            det = run.detector
            for i, v in zip(rows.tolist(), values.tolist(), strict=True):
                det.update(v)
                if det.drift_detected:
                    run.alarms.append(start + i)

    return {
        "stream": stream.__dict__,
        "window_records": window,
        "reference_records": reference.n_records,
        "reference_build_cpu_s": build_cpu,
        "update_records_per_cpu_s": update_records / update_cpu,
        "score_cpu_s_per_window": score_cpu / len(windows),
        "evidently_report_s_per_window": evidently_seconds,
        "windows": windows,
        "river": [{"signal": r.signal, "label": r.label, "alarms": r.alarms} for r in river],
        "signal_sd": signal_sd,
        "calibration": reference.thresholds(),
    }


def trips(breached: list[bool], k: int) -> list[int]:
    """Window indices where the k-th consecutive breach completes (rule trips, then re-arms after a clear)."""
    out, run = [], 0
    for i, b in enumerate(breached):
        run = run + 1 if b else 0
        if run == k:
            out.append(i)
    return out


def summarise(result: dict) -> dict:
    stream = result["stream"]
    change = stream["change_at"]
    window = result["window_records"]
    ends = [w["end"] for w in result["windows"]]
    per_metric = {}
    for metric in METRIC_NAMES:
        breached = [bool(w["scores"][metric][2]) for w in result["windows"]]
        single = [ends[i] for i, b in enumerate(breached) if b]
        tripped = [ends[i] for i in trips(breached, TRIP_WINDOWS)]
        if change is None:
            per_metric[metric] = {"false_alarm_windows": len(single), "false_trips": len(tripped)}
        else:
            after = [e for e in single if e > change]
            after_trip = [e for e in tripped if e > change]
            per_metric[metric] = {
                "false_alarm_windows_before_change": sum(e <= change for e in single),
                "delay_records": after[0] - change if after else None,
                "trip_delay_records": after_trip[0] - change if after_trip else None,
            }
    river = {}
    for r in result["river"]:
        key = f"{r['signal']}: {r['label']}"
        if change is None:
            river[key] = {"false_alarms": len(r["alarms"])}
        else:
            after = [a for a in r["alarms"] if a >= change]
            river[key] = {
                "false_alarms_before_change": sum(a < change for a in r["alarms"]),
                "delay_records": after[0] - change + 1 if after else None,
            }
    return {"window_records": window, "metrics": per_metric, "river": river}


def tune_river(stationary: dict) -> dict[str, dict[str, float]]:
    """Most sensitive grid setting per signal with no alarm on the stationary stream."""
    tuned: dict[str, dict[str, float]] = {}
    sd = stationary["signal_sd"]
    for signal in SIGNALS:
        quiet = {r["label"]: not r["alarms"] for r in stationary["river"] if r["signal"] == signal}
        delta = next((d for d in ADWIN_DELTAS if quiet[f"ADWIN(delta={d:g})"]), ADWIN_DELTAS[-1])
        k = next((k for k in PH_THRESHOLD_SDS if quiet[f"PageHinkley(threshold={k}sd)"]), PH_THRESHOLD_SDS[-1])
        tuned[signal] = {"adwin_delta": delta, "ph_threshold": k * sd[signal]}
    return tuned


def plot(results: list[dict], path: Path) -> None:
    headline = ("divergence.agreement_drop", "prediction.class_js", "input.ngram_js", "prediction.confidence_drop")
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.6 * len(results)), sharey=False)
    for ax, res in zip(np.atleast_1d(axes), results, strict=True):
        ends = np.array([w["end"] for w in res["windows"]])
        for metric in headline:
            ratio = [
                (w["scores"][metric][0] / w["scores"][metric][1]) if w["scores"][metric][1] else np.nan
                for w in res["windows"]
            ]
            ax.plot(ends, ratio, label=metric, lw=1)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        if res["stream"]["change_at"] is not None:
            ax.axvline(res["stream"]["change_at"], color="r", lw=0.8)
        ax.set_title(res["stream"]["name"], fontsize=9)
        ax.set_ylabel("value / threshold")
        ax.set_yscale("symlog", linthresh=1)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper left")
    np.atleast_1d(axes)[-1].set_xlabel("records after the reference")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/distilld-bench-detect"))
    ap.add_argument("--stationary-records", type=int, default=1_000_000)
    ap.add_argument("--change-stream-records", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    config = DetectorsConfig()
    suite = DetectorSuite(config, n_classes=len(LEXNAMES), class_names=LEXNAMES)
    pools = GlossPools(load_glosses())
    model = LogitModel(pools, seed=args.seed, gap=0.8)
    n, change = args.change_stream_records, args.change_stream_records // 3
    change_streams = [
        Stream("abrupt_class_mix_40", n, change, fraction=0.4),
        Stream("abrupt_class_mix_15", n, change, fraction=0.15),
        Stream("gradual_class_mix_40", n, change, ramp_records=change, fraction=0.4),
        Stream("text_only", n, change, text_shift=True),
    ]

    started = time.time()
    stationary = run_stream(
        Stream("stationary", args.stationary_records), suite, pools, model, args.seed, None, None, None
    )
    tuned = tune_river(stationary)
    results = [stationary]
    for i, s in enumerate(change_streams):
        results.append(
            run_stream(s, suite, pools, model, args.seed + 100 + i, tuned, stationary["signal_sd"], args.out / "evidently" / s.name)
        )
    summary = {
        "command": " ".join(["bench/detect.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": config.model_dump(),
        "river_tuned": tuned,
        "wall_s": time.time() - started,
        "streams": {r["stream"]["name"]: summarise(r) for r in results},
        "update_records_per_cpu_s": {r["stream"]["name"]: r["update_records_per_cpu_s"] for r in results},
        "score_cpu_s_per_window": {r["stream"]["name"]: r["score_cpu_s_per_window"] for r in results},
        "reference_build_cpu_s": {r["stream"]["name"]: r["reference_build_cpu_s"] for r in results},
        "evidently_report_s_per_window": {r["stream"]["name"]: r["evidently_report_s_per_window"] for r in results},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "windows.json").write_text(json.dumps(results))
    plot(results, args.out / "detect_streams.png")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

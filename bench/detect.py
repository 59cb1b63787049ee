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
# ordered from most to least sensitive; tuning takes the first with no false alarm
ADWIN_DELTAS = (0.3, 0.1, 0.03, 0.01, 0.002, 1e-4, 1e-6, 1e-8, 1e-10)
PH_THRESHOLD_SDS = (5, 10, 20, 50, 100, 200, 500, 1000, 2000)
BATCH_RECORDS = 5000


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
            RiverRun(signal, f"PageHinkley(threshold={k}sd)", drift.PageHinkley(threshold=k * sd))
            for k in PH_THRESHOLD_SDS
        ]
        runs.append(RiverRun(signal, "PageHinkley(defaults)", drift.PageHinkley()))
        return runs
    t = tuned[signal]
    return [
        RiverRun(signal, "ADWIN(defaults)", drift.ADWIN()),
        RiverRun(signal, f"ADWIN(delta={t['adwin_delta']:g})", drift.ADWIN(delta=t["adwin_delta"])),
        RiverRun(signal, "PageHinkley(defaults)", drift.PageHinkley()),
        RiverRun(
            signal,
            f"PageHinkley(threshold={t['ph_threshold']:.3g})",
            drift.PageHinkley(threshold=t["ph_threshold"]),
        ),
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
    suites: dict[str, DetectorSuite],
    pools: GlossPools,
    model: LogitModel,
    seed: int,
    river_tuned: dict[str, dict[str, float]] | None,
    signal_sd: dict[str, float] | None,
    evidently_dir: Path | None,
) -> dict:
    """Feed one stream to every suite (one per window size) and to the River anchors."""
    maker = StreamMaker(pools, model, seed)
    rng = np.random.default_rng(seed + 1)
    base_pool = "definition" if stream.text_shift else "all"
    natural = pools.natural / pools.natural.sum()
    moved = shifted_mix(pools.natural, 1.0, rng)  # the 10 classes traffic moves to

    runs = {}
    for label, suite in suites.items():
        builder = ReferenceBuilder(suite, source="benchmark")
        runs[label] = {
            "suite": suite,
            "builder": builder,
            "update_cpu": 0.0,
            "records": 0,
            "score_cpu": 0.0,
            "windows": [],
            "evidently_s": [],
        }
    while not all(r["builder"].complete for r in runs.values()):
        batch = maker.batch(natural, base_pool, BATCH_RECORDS)
        for r in runs.values():
            t0 = time.process_time()
            r["builder"].update(batch)
            r["update_cpu"] += time.process_time() - t0
            r["records"] += len(batch)
    for r in runs.values():
        t0 = time.process_time()
        r["reference"] = r["builder"].build()
        r["build_cpu"] = time.process_time() - t0

    river: list[RiverRun] = []
    for start in tqdm(range(0, stream.records, BATCH_RECORDS), desc=stream.name, unit="batch", leave=False):
        idx = start + np.arange(BATCH_RECORDS)
        share = None
        if stream.change_at is not None:
            ramp = max(stream.ramp_records, 1)
            share = np.clip((idx - stream.change_at + 1) / ramp, 0, 1) * (idx >= stream.change_at)
        if stream.text_shift:
            batch = maker.batch(
                natural, base_pool, BATCH_RECORDS, shifted_share=share, shifted_pool="example"
            )
        elif stream.fraction > 0:
            mix = (1 - stream.fraction) * natural + stream.fraction * moved
            batch = maker.batch(natural, base_pool, BATCH_RECORDS, shifted_probs=mix, shifted_share=share)
        else:
            batch = maker.batch(natural, base_pool, BATCH_RECORDS)

        for r in runs.values():
            suite, reference = r["suite"], r["reference"]
            window = suite.config.subwindow_records
            for w0 in range(0, BATCH_RECORDS, window):
                part = batch.select(np.arange(w0, w0 + window))
                current = suite.new_window()
                t0 = time.process_time()
                current.update(part)
                r["update_cpu"] += time.process_time() - t0
                r["records"] += len(part)
                t0 = time.process_time()
                scores = suite.score(reference, current)
                r["score_cpu"] += time.process_time() - t0
                end = start + w0 + window
                r["windows"].append(
                    {"end": end, "scores": {m: [s.value, s.threshold, s.breached] for m, s in scores.items()}}
                )
                changed = stream.change_at is not None and end > stream.change_at
                if evidently_dir is not None and changed and not r["evidently_s"]:
                    summary = build_evidently_report(
                        reference.window, current, evidently_dir / f"{window}-{end}", class_names=LEXNAMES
                    )
                    r["evidently_s"].append(summary["seconds"])

        sig = signal_values(batch, RecordSignals(batch))
        if not river:
            signal_sd = signal_sd or {k: float(np.std(v)) or 1.0 for k, (_, v) in sig.items()}
            river = [r for s in SIGNALS for r in make_river(s, signal_sd[s], river_tuned)]
        for run in river:
            rows, values = sig[run.signal]
            det = run.detector
            for i, v in zip(rows.tolist(), values.tolist(), strict=True):
                det.update(v)
                if det.drift_detected:
                    run.alarms.append(start + i)

    return {
        "stream": stream.__dict__,
        "suites": {
            label: {
                "window_records": r["suite"].config.subwindow_records,
                "calibration_subwindows": r["suite"].config.calibration_subwindows,
                "reference_records": r["reference"].n_records,
                "reference_build_cpu_s": r["build_cpu"],
                "update_records_per_cpu_s": r["records"] / r["update_cpu"],
                "score_cpu_s_per_window": r["score_cpu"] / len(r["windows"]),
                "evidently_report_s_per_window": r["evidently_s"],
                "windows": r["windows"],
                "calibration": r["reference"].thresholds(),
            }
            for label, r in runs.items()
        },
        "river": [{"signal": r.signal, "label": r.label, "alarms": r.alarms} for r in river],
        "signal_sd": signal_sd,
    }


def trips(breached: list[bool], k: int) -> list[int]:
    """Window indices where the k-th consecutive breach completes (rule trips, then re-arms after a clear)."""
    out, run = [], 0
    for i, b in enumerate(breached):
        run = run + 1 if b else 0
        if run == k:
            out.append(i)
    return out


def summarise_windows(stream: dict, windows: list[dict]) -> dict:
    change = stream["change_at"]
    ends = [w["end"] for w in windows]
    per_metric = {}
    any_breach = [any(bool(v[2]) for v in w["scores"].values()) for w in windows]
    for metric in (*METRIC_NAMES, "any"):
        breached = any_breach if metric == "any" else [bool(w["scores"][metric][2]) for w in windows]
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
    return per_metric


def summarise(result: dict) -> dict:
    stream = result["stream"]
    change = stream["change_at"]
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
    return {
        "suites": {label: summarise_windows(stream, s["windows"]) for label, s in result["suites"].items()},
        "river": river,
    }


def tune_river(stationary: dict) -> dict[str, dict[str, float]]:
    """Most sensitive grid setting per signal with no alarm on the stationary stream."""
    tuned: dict[str, dict[str, float]] = {}
    sd = stationary["signal_sd"]
    for signal in SIGNALS:
        quiet = {r["label"]: not r["alarms"] for r in stationary["river"] if r["signal"] == signal}
        delta = next((d for d in ADWIN_DELTAS if quiet[f"ADWIN(delta={d:g})"]), ADWIN_DELTAS[-1])
        k = next(
            (k for k in PH_THRESHOLD_SDS if quiet[f"PageHinkley(threshold={k}sd)"]), PH_THRESHOLD_SDS[-1]
        )
        tuned[signal] = {"adwin_delta": delta, "ph_threshold": k * sd[signal], "ph_threshold_sds": k}
    return tuned


def plot(results: list[dict], suite_label: str, path: Path) -> None:
    headline = (
        "divergence.agreement_drop",
        "prediction.class_js",
        "input.ngram_js",
        "prediction.confidence_drop",
    )
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.6 * len(results)), sharey=False)
    for ax, res in zip(np.atleast_1d(axes), results, strict=True):
        windows = res["suites"][suite_label]["windows"]
        ends = np.array([w["end"] for w in windows])
        for metric in headline:
            ratio = [
                (w["scores"][metric][0] / w["scores"][metric][1]) if w["scores"][metric][1] else np.nan
                for w in windows
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
    fig.savefig(path, dpi=80)


def _fmt(v: object) -> str:
    return "—" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def markdown(summary: dict, stationary_records: int) -> str:
    """The tables docs/benchmarks.md shows."""
    per_million = 1_000_000 / stationary_records
    streams = [name for name in summary["streams"] if name != "stationary"]
    lines: list[str] = []
    for label in summary["configs"]:
        lines += [
            f"**{label}** — delay in records after the change: first breaching window / rule trip "
            f"({TRIP_WINDOWS} consecutive windows); false alarms on the stationary stream per 1M records",
            "",
            "| metric | false alarm windows | false trips | " + " | ".join(streams) + " |",
            "|" + " --- |" * (3 + len(streams)),
        ]
        for metric in (*METRIC_NAMES, "any"):
            st = summary["streams"]["stationary"]["suites"][label][metric]
            row = [
                f"`{metric}`",
                f"{st['false_alarm_windows'] * per_million:g}",
                f"{st['false_trips'] * per_million:g}",
            ]
            for s in streams:
                m = summary["streams"][s]["suites"][label][metric]
                row.append(f"{_fmt(m['delay_records'])} / {_fmt(m['trip_delay_records'])}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "River on per-record signals — delay in records after the change (false alarms before the change)",
        "",
        "| signal: detector | false alarms per 1M stationary | " + " | ".join(streams) + " |",
        "|" + " --- |" * (2 + len(streams)),
    ]
    tuned = summary["river_tuned"]
    for key in summary["streams"][streams[0]]["river"]:
        signal, label = key.split(": ", 1)
        if label == "ADWIN(defaults)":
            grid_key = f"{signal}: ADWIN(delta=0.002)"
        elif label.startswith("ADWIN"):
            grid_key = f"{signal}: ADWIN(delta={tuned[signal]['adwin_delta']:g})"
        elif label == "PageHinkley(defaults)":
            grid_key = key
        else:
            grid_key = f"{signal}: PageHinkley(threshold={tuned[signal]['ph_threshold_sds']}sd)"
        fa = summary["streams"]["stationary"]["river"][grid_key]["false_alarms"]
        row = [key, f"{fa * per_million:g}"]
        for s in streams:
            r = summary["streams"][s]["river"][key]
            row.append(f"{_fmt(r['delay_records'])} ({r['false_alarms_before_change']})")
        lines.append("| " + " | ".join(row) + " |")
    labels = list(summary["configs"])
    lines += [
        "",
        "Costs (medians over the streams)",
        "",
        "| cost | " + " | ".join(labels) + " |",
        "|" + " --- |" * (1 + len(labels)),
    ]
    costs = summary["costs"]
    for key, unit in (
        ("update_records_per_cpu_s", "records/s per core, WindowState.update"),
        ("score_cpu_s_per_window", "CPU s per window, suite.score (with evidence)"),
        ("reference_build_cpu_s", "CPU s, ReferenceBuilder.build (calibration)"),
    ):
        row = [unit]
        for label in labels:
            vals = [c[label][key] for c in costs.values()]
            med = float(np.median(vals))
            row.append(f"{med:,.0f}" if med >= 100 else f"{med:.3g}")
        lines.append("| " + " | ".join(row) + " |")
    row = ["wall s per window, Evidently report (samples of 1 000 vs 1 000, with text drift)"]
    for label in labels:
        vals = [v for c in costs.values() for v in c[label]["evidently_report_s_per_window"]]
        row.append(f"{np.median(vals):.3g} (median of {len(vals)} reports)" if vals else "—")
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/distilld-bench-detect"))
    ap.add_argument("--stationary-records", type=int, default=1_000_000)
    ap.add_argument("--change-stream-records", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    suites = {
        label: DetectorSuite(config, n_classes=len(LEXNAMES), class_names=LEXNAMES)
        for label, config in (
            ("default_5000", DetectorsConfig()),
            ("fast_1000", DetectorsConfig(calibration_subwindows=100)),
        )
    }
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
        Stream("stationary", args.stationary_records), suites, pools, model, args.seed, None, None, None
    )
    tuned = tune_river(stationary)
    results = [stationary]
    for i, s in enumerate(change_streams):
        results.append(
            run_stream(
                s,
                suites,
                pools,
                model,
                args.seed + 100 + i,
                tuned,
                stationary["signal_sd"],
                args.out / "evidently" / s.name,
            )
        )
    summary = {
        "command": " ".join(
            [".venv/bin/python bench/detect.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "configs": {label: suite.config.model_dump() for label, suite in suites.items()},
        "river_tuned": tuned,
        "wall_s": time.time() - started,
        "streams": {r["stream"]["name"]: summarise(r) for r in results},
        "costs": {
            r["stream"]["name"]: {
                label: {
                    k: s[k]
                    for k in (
                        "update_records_per_cpu_s",
                        "score_cpu_s_per_window",
                        "reference_build_cpu_s",
                        "evidently_report_s_per_window",
                    )
                }
                for label, s in r["suites"].items()
            }
            for r in results
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "windows.json").write_text(json.dumps(results))
    for label in suites:
        plot(results, label, args.out / f"detect_streams_{label}.png")
    tables = markdown(summary, args.stationary_records)
    (args.out / "tables.md").write_text(tables + "\n")
    print(json.dumps({k: summary[k] for k in ("command", "river_tuned", "wall_s")}, indent=1))
    print(tables)


if __name__ == "__main__":
    main()

"""Replay recorded traffic through windows, detectors and the retrain policy, offline.

``distilld replay -c CONFIG --from FILE.jsonl`` (or ``--topic T`` with start/end
offsets or timestamps) answers "with these thresholds, what would the daemon
have done?": it decodes every record, builds each (model, version)'s
reference from its first ``detectors.reference_records`` records, scores
count-based windows of ``windows.window_records``, and runs a
``PolicyEngine`` whose clock is the records' event time, so cooldowns,
budgets and maintenance windows apply as they would have. The engine is
forced into dry-run: no training happens. After each would-be retrain the
reference is rebuilt from the records that follow (as the daemon re-baselines
after a promotion), unless ``--no-rebaseline``.

Output: a timeline of trips and retrains, a summary (retrains and their GPU
cost at ``policy.cost``), and a PNG per model of every rule's metric over
time with its thresholds and trip markers (``replay_plot``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from kafka import KafkaConsumer, TopicPartition
from tqdm import tqdm

from distilld.daemon.decision_record import DecisionKind, DecisionRecord, format_decision, iso
from distilld.daemon.policy_config import PolicyConfig
from distilld.daemon.policy_engine import PolicyEngine
from distilld.daemon.record import (
    InferenceRecord,
    RecordError,
    decode_record,
    group_by_model,
    records_to_batch,
)
from distilld.daemon.state_store import StateStore
from distilld.detectors.config import DetectorsConfig
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.reference import Reference, ReferenceBuilder
from distilld.detectors.suite import DetectorSuite, WindowState

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_RECORDS = 5000
# records decoded before they are grouped and folded into windows: bounds memory, keeps numpy batches large
DECODE_CHUNK = 4096
TIMELINE_KINDS = frozenset(
    {
        DecisionKind.RULE_TRIPPED,
        DecisionKind.RULE_REARMED,
        DecisionKind.RETRAIN_REQUESTED,
        DecisionKind.RETRAIN_WAITING,
        DecisionKind.RETRAIN_BLOCKED,
        DecisionKind.RETRAIN_CANCELLED,
    }
)


@dataclass(frozen=True)
class ReplaySettings:
    """The parts of the daemon's config that replay uses."""

    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    window_records: int = DEFAULT_WINDOW_RECORDS

    @classmethod
    def from_yaml(cls, path: Path) -> ReplaySettings:
        """Read the ``detectors``, ``policy`` and ``windows.window_records`` sections of a daemon config file."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: must be a mapping of sections")
        windows = data.get("windows") or {}
        return cls(
            detectors=DetectorsConfig.model_validate(data.get("detectors") or {}),
            policy=PolicyConfig.model_validate(data.get("policy") or {}),
            window_records=int(windows.get("window_records", DEFAULT_WINDOW_RECORDS)),
        )

    @classmethod
    def from_config(cls, config: Any) -> ReplaySettings:
        """From the daemon's full config object (``.detectors``, ``.policy``, ``.windows.window_records``)."""
        return cls(
            detectors=config.detectors, policy=config.policy, window_records=config.windows.window_records
        )


@dataclass(frozen=True)
class KafkaSource:
    """A topic range to replay: offsets (per partition, inclusive start, exclusive end) or event timestamps."""

    bootstrap: str
    topic: str
    start_offset: int | None = None
    end_offset: int | None = None
    start_ts: float | None = None
    end_ts: float | None = None
    client_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class WindowPoint:
    """One scored window, as the plot and the summary need it."""

    model: str
    version: str
    window_id: int
    end_ts: float
    n_records: int
    values: dict[str, float | None]
    thresholds: dict[str, float | None]
    reference_no: int  # which reference of this stream scored it (1 = first; more after re-baselines)


@dataclass
class ReplayResult:
    records: int = 0
    bad_records: Counter = field(default_factory=Counter)
    unwindowed_records: int = 0
    windows: list[WindowPoint] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    retrains: int = 0
    gpu_hours: float = 0.0
    gpu_cost: float = 0.0
    elapsed_s: float = 0.0
    plots: list[Path] = field(default_factory=list)

    def trips(self) -> list[DecisionRecord]:
        return [d for d in self.decisions if d.kind == DecisionKind.RULE_TRIPPED]

    def retrain_requests(self) -> list[DecisionRecord]:
        return [d for d in self.decisions if d.kind == DecisionKind.RETRAIN_REQUESTED]

    def timeline(self, verbose: bool = False) -> list[str]:
        lines = []
        events: list[tuple[float, str]] = [
            (
                r["built_ts"],
                f"{iso(r['built_ts'])} reference_built     {r['model']}@{r['version']} "
                f"{r['records']} records ({r['reason']})",
            )
            for r in self.references
        ]
        events += [(d.ts, format_decision(d)) for d in self.decisions if verbose or d.kind in TIMELINE_KINDS]
        for _, line in sorted(events, key=lambda e: e[0]):
            lines.append(line)
        return lines

    def summary(self) -> str:
        by_rule = Counter(d.rule for d in self.trips())
        rate = self.records / self.elapsed_s if self.elapsed_s > 0 else float("nan")
        lines = [
            f"records: {self.records} ({sum(self.bad_records.values())} bad"
            + (f": {dict(self.bad_records)}" if self.bad_records else "")
            + f", {self.unwindowed_records} in unfinished windows)",
            f"windows scored: {len(self.windows)}",
            f"trips: {len(self.trips())}"
            + (f" ({', '.join(f'{k}: {v}' for k, v in by_rule.items())})" if by_rule else ""),
            f"retrains that would have started: {self.retrains}",
            f"blocked or waiting: {sum(1 for d in self.decisions if d.kind in ('retrain_blocked', 'retrain_waiting'))}",
            f"GPU time: {self.gpu_hours:.2f} h, cost {self.gpu_cost:.2f}",
            f"replayed in {self.elapsed_s:.1f} s ({rate:,.0f} records/s)",
        ]
        return "\n".join(lines)


class _EventClock:
    """The engine's clock in replay: the event time of the latest closed window, never going back."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def move_to(self, t: float) -> None:
        self.t = max(self.t, t)


@dataclass
class _Stream:
    """Replay state of one (model, version)."""

    model: str
    version: str
    suite: DetectorSuite
    builder: ReferenceBuilder | None
    reference: Reference | None = None
    window: WindowState | None = None
    window_id: int = 0
    window_start_ts: float | None = None
    references_built: int = 0
    rebuild_reason: str = "first records"


def iter_jsonl(path: Path) -> Iterator[bytes]:
    with Path(path).open("rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


def iter_kafka(source: KafkaSource) -> Iterator[bytes]:
    """Message values of a topic range, partition by partition interleaved as the consumer returns them."""
    consumer = KafkaConsumer(
        bootstrap_servers=source.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="distilld-replay",
        **source.client_options,
    )
    try:
        parts = consumer.partitions_for_topic(source.topic)
        if not parts:
            raise ValueError(f"topic {source.topic!r} not found on {source.bootstrap}")
        tps = [TopicPartition(source.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        first, last = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        start = {tp: max(first[tp], source.start_offset or 0) for tp in tps}
        stop = {tp: last[tp] if source.end_offset is None else min(last[tp], source.end_offset) for tp in tps}
        if source.start_ts is not None:
            found = consumer.offsets_for_times({tp: int(source.start_ts * 1000) for tp in tps})
            start = {tp: max(start[tp], found[tp].offset if found[tp] else last[tp]) for tp in tps}
        if source.end_ts is not None:
            found = consumer.offsets_for_times({tp: int(source.end_ts * 1000) for tp in tps})
            stop = {tp: min(stop[tp], found[tp].offset if found[tp] else last[tp]) for tp in tps}
        remaining = {tp for tp in tps if start[tp] < stop[tp]}
        for tp in tps:
            consumer.seek(tp, start[tp])
        while remaining:
            polled = consumer.poll(timeout_ms=1000, max_records=5000)
            for tp, msgs in polled.items():
                for msg in msgs:
                    if msg.offset < stop[tp]:
                        yield msg.value
                if consumer.position(tp) >= stop[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
    finally:
        consumer.close()


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Replayer:
    """Feeds decoded batches through reference building, windows, detectors and the engine."""

    def __init__(
        self, settings: ReplaySettings, store: StateStore, rebaseline: bool = True, evidence: bool = False
    ):
        policy = settings.policy.model_copy(
            update={"limits": settings.policy.limits.model_copy(update={"dry_run": True})}
        )
        self.settings = settings
        self.rebaseline = rebaseline
        self.evidence = evidence
        self.clock = _EventClock()
        self.engine = PolicyEngine(policy, store, clock=self.clock)
        self.engine.subscribe(self._on_retrain, kinds=[DecisionKind.RETRAIN_REQUESTED])
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.suites: dict[int, DetectorSuite] = {}
        self.result = ReplayResult()

    def _stream(self, model: str, version: str, n_classes: int) -> _Stream:
        key = (model, version)
        s = self.streams.get(key)
        if s is None:
            suite = self.suites.setdefault(n_classes, DetectorSuite(self.settings.detectors, n_classes))
            s = self.streams[key] = _Stream(model, version, suite, ReferenceBuilder(suite, source="replay"))
        return s

    def _on_retrain(self, record: DecisionRecord) -> None:
        if not self.rebaseline or record.model is None:
            return
        for s in self.streams.values():
            if s.model == record.model:
                s.builder = ReferenceBuilder(s.suite, source="replay")
                s.reference = None
                s.window = None
                s.rebuild_reason = f"re-baseline after retrain decision #{record.id}"

    def feed(self, records: Sequence[InferenceRecord]) -> None:
        for (model, version), recs in group_by_model(records).items():
            batch = records_to_batch(recs)
            self._feed_stream(self._stream(model, version, batch.n_classes), batch)

    def _feed_stream(self, s: _Stream, batch: RecordBatch | None) -> None:
        window_records = self.settings.window_records
        while batch is not None and len(batch):
            if s.builder is not None:
                batch = s.builder.update(batch)
                if s.builder.complete:
                    self._build_reference(s)
                continue
            if s.window is None:
                s.window = s.suite.new_window()
                s.window_start_ts = float(batch.ts[0])
            take = min(len(batch), window_records - s.window.n_records)
            part = batch if take == len(batch) else batch.select(np.arange(take))
            s.window.update(part)
            batch = None if take == len(batch) else batch.select(np.arange(take, len(batch)))
            if s.window.n_records >= window_records:
                self._close_window(s, float(part.ts.max()))

    def _build_reference(self, s: _Stream) -> None:
        assert s.builder is not None
        s.reference = s.builder.build()
        s.references_built += 1
        built_ts = s.builder.last_ts or self.clock.t
        self.result.references.append(
            {
                "model": s.model,
                "version": s.version,
                "started_ts": s.builder.first_ts,
                "built_ts": built_ts,
                "records": s.reference.n_records,
                "reason": s.rebuild_reason,
            }
        )
        s.builder = None

    def _close_window(self, s: _Stream, end_ts: float) -> None:
        assert s.window is not None and s.reference is not None
        window, reference, s.window = s.window, s.reference, None
        s.window_id += 1
        # a retrain woken here re-baselines the stream; this window still scores against its reference
        self._advance(end_ts)
        if self.evidence:
            scores = s.suite.score(reference, window)
        else:
            stats = s.suite.statistics(reference.window, window, evidence=False)
            scores = {st.metric: reference.calibration.score(st) for st in stats}
        self.result.windows.append(
            WindowPoint(
                model=s.model,
                version=s.version,
                window_id=s.window_id,
                end_ts=end_ts,
                n_records=window.n_records,
                values={m: sc.value for m, sc in scores.items()},
                thresholds={m: sc.threshold for m, sc in scores.items()},
                reference_no=s.references_built,
            )
        )
        meta = {
            "id": s.window_id,
            "n_records": window.n_records,
            "start_ts": s.window_start_ts,
            "end_ts": end_ts,
            "offsets": None,
        }
        self.result.decisions.extend(self.engine.on_window_closed(s.model, s.version, meta, scores))

    def _advance(self, t: float) -> None:
        """Move event time to ``t``, waking waiting retrains at the moments they would have started."""
        while True:
            wake = self.engine.next_wakeup(self.clock.t)
            if wake is None or wake > t:
                break
            self.clock.move_to(wake)
            fired = self.engine.tick(wake)
            self.result.decisions.extend(fired)
            if not fired and self.engine.next_wakeup(wake) == wake:
                break
        self.clock.move_to(t)

    def finish(self) -> ReplayResult:
        self.result.unwindowed_records = sum(s.window.n_records for s in self.streams.values() if s.window)
        self.result.unwindowed_records += sum(s.builder.n_records for s in self.streams.values() if s.builder)
        cost = self.engine.config.cost
        self.result.retrains = len(self.result.retrain_requests())
        self.result.gpu_hours = self.result.retrains * cost.gpu_hours_per_retrain
        self.result.gpu_cost = self.result.gpu_hours * cost.gpu_cost_per_hour
        return self.result


def run_replay(
    config: Path | str | ReplaySettings,
    source: Path | str | KafkaSource | Iterable[bytes],
    *,
    window_records: int | None = None,
    plot_dir: Path | None = None,
    rebaseline: bool = True,
    evidence: bool = False,
    progress: bool = False,
    total: int | None = None,
) -> ReplayResult:
    """Replay ``source`` (a JSONL path, a Kafka range, or message values) under ``config``.

    ``config``: a daemon config file, or the settings. ``plot_dir``: where
    ``replay-<model>.png`` files go (None: no pictures). ``evidence``: have
    detectors attach evidence to every score (naming shifted n-grams costs
    more than scoring; off by default, so decision records in replay carry
    values and thresholds only).
    """
    settings = config if isinstance(config, ReplaySettings) else ReplaySettings.from_yaml(Path(config))
    if window_records is not None:
        settings = ReplaySettings(settings.detectors, settings.policy, window_records)
    if isinstance(source, str | Path):
        lines: Iterable[bytes] = iter_jsonl(Path(source))
    elif isinstance(source, KafkaSource):
        lines = iter_kafka(source)
    else:
        lines = source
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distilld-replay-") as tmp:
        store = StateStore(Path(tmp) / "replay.db")
        try:
            replayer = Replayer(settings, store, rebaseline=rebaseline, evidence=evidence)
            bar = tqdm(total=total, unit="rec", desc="replay", disable=not progress)
            for chunk in _chunks(lines, DECODE_CHUNK):
                good = []
                for raw in chunk:
                    try:
                        good.append(decode_record(raw))
                    except RecordError as err:
                        replayer.result.bad_records[err.reason] += 1
                replayer.result.records += len(chunk)
                if good:
                    replayer.feed(good)
                bar.update(len(chunk))
            bar.close()
            result = replayer.finish()
        finally:
            store.close()
    result.elapsed_s = time.perf_counter() - started
    if plot_dir is not None:
        from distilld.daemon.replay_plot import plot_replay

        result.plots = plot_replay(result, settings.policy, Path(plot_dir))
    return result


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="distilld replay",
        description="Replay recorded traffic through detectors and retrain rules; no training happens.",
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="daemon config YAML")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="from_file", type=Path, help="JSONL file of inference records")
    src.add_argument("--topic", help="Kafka topic to replay")
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers (with --topic)")
    p.add_argument("--start-offset", type=int, help="first offset, per partition (with --topic)")
    p.add_argument("--end-offset", type=int, help="stop before this offset, per partition (with --topic)")
    p.add_argument("--start-ts", help="first record time, ISO-8601 or epoch seconds (with --topic)")
    p.add_argument("--end-ts", help="stop at this record time, ISO-8601 or epoch seconds (with --topic)")
    p.add_argument("--window-records", type=int, help="override windows.window_records")
    p.add_argument("--out-dir", type=Path, default=Path("."), help="where replay-<model>.png goes")
    p.add_argument("--no-plot", action="store_true", help="do not write pictures")
    p.add_argument(
        "--no-rebaseline", action="store_true", help="keep the first reference after would-be retrains"
    )
    p.add_argument(
        "--evidence", action="store_true", help="attach detector evidence to every window (slower)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="timeline includes every rule state change")
    return p


def _parse_ts(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        from datetime import datetime

        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def replay_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return replay_command(args)


def replay_command(args: argparse.Namespace) -> int:
    """Run ``distilld replay`` from parsed arguments (see ``build_parser``)."""
    if args.topic:
        source: Path | KafkaSource = KafkaSource(
            bootstrap=args.bootstrap,
            topic=args.topic,
            start_offset=args.start_offset,
            end_offset=args.end_offset,
            start_ts=_parse_ts(args.start_ts),
            end_ts=_parse_ts(args.end_ts),
        )
    else:
        source = args.from_file
    result = run_replay(
        args.config,
        source,
        window_records=args.window_records,
        plot_dir=None if args.no_plot else args.out_dir,
        rebaseline=not args.no_rebaseline,
        evidence=args.evidence,
        progress=sys.stderr.isatty(),
    )
    print("timeline:")
    for line in result.timeline(verbose=args.verbose) or ["(nothing happened)"]:
        print(f"  {line}")
    print("summary:")
    for line in result.summary().splitlines():
        print(f"  {line}")
    for path in result.plots:
        print(f"picture: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(replay_main())

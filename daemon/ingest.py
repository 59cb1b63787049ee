"""The consumer loop: poll → decode → dead-letter → windows → persist → commit.

Delivery contract: an offset is committed only after the state that reflects
it is durable in the state store, so a crash replays rather than loses. The
store holds the next offset per partition in the same transaction as the
window state; a replayed record whose offset is below it is skipped, so no
record is counted twice by the instance that persisted it (offset
bookkeeping, not request_id dedupe: ids are the serving layer's to get right,
offsets are Kafka's). Bad records go to the dead-letter topic and are
acknowledged by the broker before their offsets are committed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from distilld.daemon.config import DistilldConfig
from distilld.daemon.dead_letter import DeadLetterWriter, dead_letter_producer
from distilld.daemon.metrics import DaemonMetrics
from distilld.daemon.record import DecodedRecord, RecordError, decode_record, records_to_batch
from distilld.daemon.state_store import StateStore
from distilld.daemon.windows import ClosedWindow, WindowManager
from distilld.detectors.record_batch import RecordBatch

log = logging.getLogger(__name__)

DEAD_LETTER_ACK_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_MS = 10_000

# called with each model's valid records of a batch, inside the batch's transaction
BatchListener = Callable[[str, str, RecordBatch, list[tuple[str, int, int]]], None]
# called with the windows a batch closed, inside the batch's transaction
WindowListener = Callable[[list[ClosedWindow]], None]


@dataclass
class IngestStats:
    consumed: int = 0
    valid: int = 0
    dead_lettered: int = 0
    replay_skipped: int = 0
    batches: int = 0
    last_errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.last_errors.append({"ts": time.time(), "kind": kind, "detail": detail[:500]})
        del self.last_errors[:-20]


def ensure_topics(config: DistilldConfig, partitions: int = 1) -> None:
    admin = KafkaAdminClient(**config.kafka.client_kwargs())
    try:
        existing = set(admin.list_topics())
        wanted = [*config.kafka.topics, config.kafka.dead_letter_topic]
        new = [NewTopic(t, partitions, 1) for t in wanted if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()


class _Rebalance(ConsumerRebalanceListener):
    # runs on kafka-python's IO thread: no blocking Kafka calls in here
    def __init__(self, loop: IngestLoop):
        self.loop = loop

    def on_partitions_revoked(self, revoked):
        self.loop._on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.loop._on_assigned(assigned)


class IngestLoop:
    def __init__(
        self,
        config: DistilldConfig,
        store: StateStore,
        windows: WindowManager,
        metrics: DaemonMetrics,
        on_records: BatchListener | None = None,
        on_windows_closed: WindowListener | None = None,
        before_persist: Callable[[], None] | None = None,
    ):
        self.config = config
        self.store = store
        self.windows = windows
        self.metrics = metrics
        self.on_records = on_records
        self.on_windows_closed = on_windows_closed
        # inside the batch's transaction, before its offsets are written: work
        # started by the listeners must be complete by then
        self.before_persist = before_persist
        self.stats = IngestStats()
        self.assignment: set[TopicPartition] = set()
        self._persisted: dict[TopicPartition, int] = {}
        self._ready = False
        self._broker_ok = True
        self.lag: dict[TopicPartition, int] = {}
        self.consumer: KafkaConsumer | None = None
        self.dead_letters: DeadLetterWriter | None = None
        self.lock = threading.Lock()

    # lifecycle -------------------------------------------------------------
    def connect(self) -> None:
        kafka = self.config.kafka
        if kafka.create_topics:
            ensure_topics(self.config)
        self.consumer = KafkaConsumer(
            **kafka.client_kwargs(),
            group_id=kafka.group_id,
            group_instance_id=kafka.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            max_poll_records=kafka.max_poll_records,
            session_timeout_ms=kafka.session_timeout_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
        )
        self.consumer.subscribe(kafka.topics, listener=_Rebalance(self))
        self.dead_letters = DeadLetterWriter(
            dead_letter_producer(kafka.client_kwargs()), kafka.dead_letter_topic
        )

    def close(self) -> None:
        if self.consumer is not None:
            # offsets were committed batch by batch; never auto-commit positions
            # whose records might not be persisted
            self.consumer.close(autocommit=False)
            self.consumer = None
        if self.dead_letters is not None:
            self.dead_letters.producer.close(timeout=10)
            self.dead_letters = None

    @property
    def ready(self) -> bool:
        return self._ready

    # rebalance ---------------------------------------------------------------
    def _on_revoked(self, revoked) -> None:
        # every processed batch was persisted and committed before the poll
        # that triggered this callback, so only the caches need dropping
        with self.lock:
            for tp in revoked:
                self.assignment.discard(tp)
                self._persisted.pop(tp, None)
                self.lag.pop(tp, None)
            self._ready = False
        self.metrics.ready.set(0)
        log.info(
            "partitions revoked", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in revoked)}
        )

    def _on_assigned(self, assigned) -> None:
        with self.lock:
            self.assignment = set(assigned)
            self._ready = False
        self.metrics.assigned_partitions.set(len(assigned))
        log.info(
            "partitions assigned", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in assigned)}
        )

    def _persisted_offset(self, tp: TopicPartition) -> int:
        if tp not in self._persisted:
            stored = self.store.next_offset(tp.topic, tp.partition)
            self._persisted[tp] = -1 if stored is None else stored
        return self._persisted[tp]

    # the loop ----------------------------------------------------------------
    def run(self, stop: threading.Event, on_idle: Callable[[], None] | None = None) -> None:
        """Poll until ``stop`` is set; the batch in hand is finished, persisted and committed first."""
        if self.consumer is None:
            self.connect()
        timeout_s = self.config.kafka.poll_timeout_ms / 1000
        while not stop.is_set():
            began = time.monotonic()
            try:
                polled = self.consumer.poll(timeout_ms=self.config.kafka.poll_timeout_ms)
            except KafkaError as err:
                self._kafka_trouble("poll", err)
                stop.wait(1.0)
                continue
            if polled:
                self.process(polled)
            else:
                self._closed_by_time()
                # with no broker reachable poll() can return at once; do not spin
                if time.monotonic() - began < timeout_s / 10:
                    stop.wait(timeout_s / 2)
            self._refresh_readiness()
            if on_idle is not None:
                on_idle()

    def process(self, polled: dict[TopicPartition, list]) -> None:
        started = time.perf_counter()
        good: dict[tuple[str, str], list[tuple[DecodedRecord, tuple[str, int, int]]]] = defaultdict(list)
        next_offsets: dict[TopicPartition, int] = {}
        # class count per (model, version): configured, else the open window's,
        # else the first record's in this batch, so one batch is never ragged
        classes: dict[tuple[str, str], int] = {}
        consumed = skipped = 0
        for tp, messages in polled.items():
            floor = self._persisted_offset(tp)
            for msg in messages:
                consumed += 1
                if msg.offset < floor:
                    skipped += 1
                    continue
                try:
                    rec = decode_record(msg.value)
                    key = (rec.model, rec.model_version)
                    established = classes.get(key)
                    if established is None:
                        established = (
                            self.config.expected_classes(rec.model)
                            or self.windows.n_classes(*key)
                            or rec.n_classes
                        )
                        classes[key] = established
                    if established != rec.n_classes:
                        raise RecordError(
                            "logits_length",
                            f"{rec.n_classes} logits, {rec.model}/{rec.model_version} has {established} classes",
                        )
                    good[key].append((rec, (tp.topic, tp.partition, msg.offset)))
                except RecordError as err:
                    self.dead_letters.send(msg, err)
                    self.metrics.records_dead_lettered.labels(err.reason).inc()
                    self.stats.dead_lettered += 1
            self.metrics.records_consumed.labels(tp.topic).inc(len(messages))
            if messages:
                next_offsets[tp] = messages[-1].offset + 1

        if not self._flush_dead_letters(polled, next_offsets):
            return

        closed: list[ClosedWindow] = []
        with self.store.transaction():
            for (model, version), items in good.items():
                records = [r for r, _ in items]
                sources = [s for _, s in items]
                batch = records_to_batch(records)
                if self.on_records is not None:
                    self.on_records(model, version, batch, sources)
                closed.extend(self.windows.add(model, version, batch, sources))
                self.metrics.records_valid.labels(model).inc(len(records))
                self.stats.valid += len(records)
            closed.extend(self.windows.close_due())
            if closed and self.on_windows_closed is not None:
                self.on_windows_closed(closed)
            self.windows.persist()
            if self.before_persist is not None:
                self.before_persist()
            for tp, nxt in next_offsets.items():
                self.store.set_next_offset(tp.topic, tp.partition, nxt)
        for tp, nxt in next_offsets.items():
            self._persisted[tp] = nxt
        self._after_windows_closed(closed)
        self._commit(next_offsets)

        self.stats.consumed += consumed
        self.stats.replay_skipped += skipped
        self.stats.batches += 1
        if skipped:
            self.metrics.records_replay_skipped.inc(skipped)
        self._update_lag(next_offsets)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _after_windows_closed(self, closed: list[ClosedWindow]) -> None:
        for w in closed:
            self.metrics.windows_closed.labels(w.meta.model, w.meta.version).inc()
        for w in self.windows.open_windows():
            self.metrics.window_records.labels(w.model, w.version).set(w.n_records)

    def _flush_dead_letters(self, polled, next_offsets) -> bool:
        try:
            self.dead_letters.flush(DEAD_LETTER_ACK_TIMEOUT_S)
            return True
        except KafkaError as err:
            # nothing of this batch is applied: rewind and take it again once
            # the dead-letter topic accepts writes
            self._kafka_trouble("dead_letter", err)
            for tp, messages in polled.items():
                if messages and tp in self.assignment:
                    self.consumer.seek(tp, messages[0].offset)
            self.dead_letters.pending = 0
            return False

    def _closed_by_time(self) -> None:
        if self.config.windows.window_s is None:
            return
        with self.store.transaction():
            closed = self.windows.close_due()
            if not closed:
                return
            if self.on_windows_closed is not None:
                self.on_windows_closed(closed)
            self.windows.persist()
        self._after_windows_closed(closed)

    def _commit(self, next_offsets: dict[TopicPartition, int]) -> None:
        if not next_offsets:
            return
        offsets = {
            tp: OffsetAndMetadata(o, "", -1) for tp, o in next_offsets.items() if tp in self.assignment
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            if not self._broker_ok:
                log.info("kafka reachable again")
                self._broker_ok = True
        except KafkaError as err:
            # the state store already holds these offsets: a failed commit
            # costs a replay that is skipped, never a lost record
            self.metrics.commit_failures.inc()
            self._kafka_trouble("commit", err)

    def _kafka_trouble(self, operation: str, err: Exception) -> None:
        self.metrics.kafka_errors.labels(operation).inc()
        self.stats.error(f"kafka_{operation}", repr(err))
        if self._broker_ok:
            log.warning("kafka unavailable; retrying", extra={"operation": operation, "error": repr(err)})
            self._broker_ok = False

    def _update_lag(self, next_offsets: dict[TopicPartition, int]) -> None:
        for tp, nxt in next_offsets.items():
            hw = self.consumer.highwater(tp)
            if hw is not None:
                self.lag[tp] = max(0, hw - nxt)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(self.lag[tp])

    def _refresh_readiness(self) -> None:
        if self._ready or not self.assignment:
            return
        try:
            for tp in list(self.assignment):
                position = self.consumer.position(tp, timeout_ms=1000)
                if position is None or position < self._persisted_offset(tp):
                    return
        except KafkaError:
            return
        self._ready = True
        self.metrics.ready.set(1)

    def status(self) -> dict[str, Any]:
        return {
            "ready": self._ready,
            "assigned": sorted(f"{t.topic}:{t.partition}" for t in self.assignment),
            "lag": {f"{t.topic}:{t.partition}": v for t, v in sorted(self.lag.items())},
            "records": {
                "consumed": self.stats.consumed,
                "valid": self.stats.valid,
                "dead_lettered": self.stats.dead_lettered,
                "replay_skipped": self.stats.replay_skipped,
            },
            "batches": self.stats.batches,
            "last_errors": list(self.stats.last_errors),
        }

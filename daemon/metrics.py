"""Prometheus metrics of one daemon instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            "distilld_records_consumed", "Records read from the input topics.", ["topic"], registry=r
        )
        self.records_valid = Counter(
            "distilld_records_valid",
            "Records decoded, validated and folded into a window.",
            ["model"],
            registry=r,
        )
        self.records_dead_lettered = Counter(
            "distilld_records_dead_lettered", "Records sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.records_replay_skipped = Counter(
            "distilld_records_replay_skipped",
            "Records re-delivered after a crash that the state store already reflects (not counted twice).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "distilld_consumer_lag_records",
            "High watermark minus position.",
            ["topic", "partition"],
            registry=r,
        )
        self.window_records = Gauge(
            "distilld_window_records", "Records in the open window.", ["model", "version"], registry=r
        )
        self.windows_closed = Counter(
            "distilld_windows_closed", "Windows closed and scored.", ["model", "version"], registry=r
        )
        self.batch_seconds = Histogram(
            "distilld_batch_seconds",
            "Time to decode, dead-letter, window, persist and commit one polled batch.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.commit_failures = Counter(
            "distilld_commit_failures",
            "Offset commits that failed (retried with the next batch).",
            registry=r,
        )
        self.kafka_errors = Counter(
            "distilld_kafka_errors", "Errors talking to Kafka, by operation.", ["operation"], registry=r
        )
        self.decisions = Counter(
            "distilld_decisions", "Policy decision records written, by kind.", ["kind", "model"], registry=r
        )
        self.training_jobs_running = Gauge(
            "distilld_training_jobs_running", "Re-distillation jobs running now.", registry=r
        )
        self.spooled_registrations = Gauge(
            "distilld_spooled_registrations",
            "Finished candidates waiting in the spool for the registry to accept them.",
            registry=r,
        )
        self.ready = Gauge("distilld_ready", "1 once partitions are assigned and caught up.", registry=r)
        self.assigned_partitions = Gauge(
            "distilld_assigned_partitions", "Partitions assigned to this instance.", registry=r
        )

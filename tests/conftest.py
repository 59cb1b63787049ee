"""Shared fixtures: a real local Kafka broker for the whole session."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _load_kit():
    spec = importlib.util.spec_from_file_location(
        "distilld_kafka_kit", REPO_ROOT / "deploy" / "kafka" / "broker.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kafka_kit = _load_kit()


class BrokerHandle:
    """The session broker plus helpers that keep tests apart (unique topic names)."""

    def __init__(self, broker):
        self.broker = broker
        self._seq = itertools.count()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def new_topic(self, partitions: int = 1, prefix: str = "t") -> str:
        from kafka.admin import KafkaAdminClient, NewTopic

        name = f"{prefix}-{next(self._seq)}-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="distilld-tests")
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        return name

    def stop(self) -> None:
        self.broker.stop()

    def start(self) -> None:
        self.broker.start()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    broker = kafka_kit.LocalKafka(work_dir=tmp_path_factory.mktemp("kafka"), heap_mb=384)
    broker.start()
    try:
        yield BrokerHandle(broker)
    finally:
        broker.cleanup()

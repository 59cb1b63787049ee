"""The dead-letter topic: every record that cannot be processed, with why and where from.

The original key and value are kept byte for byte; headers carry the reason
and the source coordinates, so a fixed consumer can re-inject a record.
"""

from __future__ import annotations

from kafka import KafkaProducer

from distilld.daemon.record import RecordError

HEADER_REASON = "distilld-reason"
HEADER_DETAIL = "distilld-detail"
HEADER_TOPIC = "distilld-source-topic"
HEADER_PARTITION = "distilld-source-partition"
HEADER_OFFSET = "distilld-source-offset"
HEADER_TIMESTAMP = "distilld-source-timestamp-ms"


class DeadLetterWriter:
    def __init__(self, producer: KafkaProducer, topic: str):
        self.producer = producer
        self.topic = topic
        self.pending = 0

    def send(self, message, error: RecordError) -> None:
        """Queue one bad ``ConsumerRecord``; ``flush()`` makes the queue durable."""
        headers = [
            (HEADER_REASON, error.reason.encode()),
            (HEADER_DETAIL, error.detail[:1000].encode("utf-8", "replace")),
            (HEADER_TOPIC, message.topic.encode()),
            (HEADER_PARTITION, str(message.partition).encode()),
            (HEADER_OFFSET, str(message.offset).encode()),
            (HEADER_TIMESTAMP, str(message.timestamp).encode()),
        ]
        self.producer.send(self.topic, key=message.key, value=message.value, headers=headers)
        self.pending += 1

    def flush(self, timeout_s: float) -> None:
        """Block until every queued record is acknowledged; raises if the broker does not ack in time."""
        if self.pending:
            self.producer.flush(timeout=timeout_s)
            self.pending = 0


def dead_letter_producer(client_kwargs: dict) -> KafkaProducer:
    # acks=all + idempotence: a dead-lettered record must be durable before
    # its offset is committed, and a retry must not duplicate it
    return KafkaProducer(**client_kwargs, acks="all", enable_idempotence=True, linger_ms=5, retries=2**31 - 1)

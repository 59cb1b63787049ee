"""The broker kit's cluster ids are always valid arguments for kafka-storage."""

from __future__ import annotations

import re

from tests.conftest import kafka_kit


def test_cluster_ids_never_start_with_a_dash():
    ids = [kafka_kit._cluster_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)

"""Windows per (model, version): exact sizes, offset spans, time-based closing, restart."""

from __future__ import annotations

import numpy as np

from distilld.daemon.config import WindowsConfig
from distilld.daemon.state_store import StateStore
from distilld.daemon.windows import WindowManager
from distilld.detectors.record_batch import RecordBatch


def _batch(n, ts0=0.0):
    rng = np.random.default_rng(n)
    return RecordBatch.from_columns(
        texts=["t"] * n, student_logits=rng.normal(size=(n, 5)), ts=ts0 + np.arange(n, dtype=float)
    )


def test_windows_close_at_exactly_window_records_with_offset_spans(tmp_path):
    store = StateStore(tmp_path / "s.sqlite")
    wm = WindowManager(WindowsConfig(window_records=100, window_s=None, min_window_records=10), store)
    # two partitions interleaved in runs, as a poll returns them
    sources = [("t", 0, 10 + i) for i in range(120)] + [("t", 1, 500 + i) for i in range(130)]
    closed = wm.add("m", "1", _batch(250), sources)
    assert [c.meta.n_records for c in closed] == [100, 100]
    assert closed[0].meta.offsets == {"t:0": [10, 109]}
    assert closed[1].meta.offsets == {"t:0": [110, 129], "t:1": [500, 579]}
    assert wm.status()[0]["n_records"] == 50 and wm.status()[0]["total_records"] == 250
    with store.transaction():
        wm.persist()
    again = WindowManager(WindowsConfig(window_records=100, window_s=None, min_window_records=10), store)
    meta = again.open_windows()[0]
    assert (meta.window_id, meta.n_records, meta.offsets) == (3, 50, {"t:1": [580, 629]})


def test_time_based_close_needs_min_records(tmp_path):
    now = [1000.0]
    store = StateStore(tmp_path / "s.sqlite")
    wm = WindowManager(
        WindowsConfig(window_records=1000, window_s=60, min_window_records=20), store, clock=lambda: now[0]
    )
    wm.add("m", "1", _batch(10), [("t", 0, i) for i in range(10)])
    now[0] += 120
    assert wm.close_due() == [], "fewer than min_window_records keep the window open"
    wm.add("m", "1", _batch(15), [("t", 0, 10 + i) for i in range(15)])
    closed = wm.close_due()
    assert [(c.closed_by, c.meta.n_records) for c in closed] == [("time", 25)]

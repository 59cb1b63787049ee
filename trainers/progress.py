"""The progress file a job keeps up to date, for the daemon's job runner to read.

One small JSON object, replaced atomically (write + rename) at most every
``min_interval_s``, so a reader never sees half a file: phase, epoch,
samples done/total, samples/s, ETA, and the time of the update.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class ProgressFile:
    def __init__(self, path: Path | None, min_interval_s: float = 1.0):
        self.path = path
        self.min_interval_s = min_interval_s
        self._last_write = 0.0
        self.state: dict = {"phase": "starting"}

    def update(self, force: bool = False, **fields) -> None:
        self.state.update(fields)
        now = time.monotonic()
        if self.path is None or (not force and now - self._last_write < self.min_interval_s):
            return
        self._last_write = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.state, "updated_at": time.time()}))
        os.replace(tmp, self.path)

    def phase(self, name: str) -> None:
        self.update(force=True, phase=name)


def read_progress(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None

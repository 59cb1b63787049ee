"""Feeds the training buffer from a thread of its own, so its SQLite work overlaps the consumer's.

sqlite3 steps its B-trees without holding the GIL, so while the writer
inserts a batch the consumer thread goes on with detectors and windows.
``flush()`` waits until every submitted batch is written (and re-raises a
write error); the consumer calls it inside the batch's state transaction, so
the buffer is as complete as the state that commits the offsets.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

from distilld.daemon.training_buffer import TrainingBuffer
from distilld.detectors.record_batch import RecordBatch


class TrainingBufferWriter:
    def __init__(self, buffer: TrainingBuffer):
        self.buffer = buffer
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="distilld-buffer-writer", daemon=True)
        self._thread.start()

    def submit(
        self, model: str, batch: RecordBatch, sources: Sequence[tuple[str, int, int]], version: str
    ) -> None:
        self._queue.put((model, batch, sources, version))

    def flush(self) -> None:
        self._queue.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                model, batch, sources, version = item
                self.buffer.add(model, batch, sources, model_version=version)
            except BaseException as err:  # handed to the consumer thread by flush()
                self._error = err
            finally:
                self._queue.task_done()

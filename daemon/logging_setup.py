"""Structured logging: JSON lines by default, key=value for humans.

Fields come from ``extra={...}``. Raw input text never reaches a log line
unless the operator sets ``logging.log_input_text``; code that wants to log a
text passes it as ``extra={"input_text": ...}`` and this module drops it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
TEXT_FIELDS = frozenset({"input_text", "text"})


def _fields(record: logging.LogRecord, keep_text: bool) -> dict:
    out = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if key in TEXT_FIELDS and not keep_text:
            continue
        out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def __init__(self, keep_text: bool = False):
        super().__init__()
        self.keep_text = keep_text

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record, self.keep_text))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class KeyValueFormatter(logging.Formatter):
    def __init__(self, keep_text: bool = False):
        super().__init__()
        self.keep_text = keep_text

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [f"{ts} {record.levelname.lower():<5} {record.getMessage()}"]
        for key, value in _fields(record, self.keep_text).items():
            text = (
                value
                if isinstance(value, str) and value and " " not in value
                else json.dumps(value, default=str)
            )
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(
    fmt: Literal["json", "kv"] = "json", level: str = "INFO", keep_text: bool = False
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(keep_text) if fmt == "json" else KeyValueFormatter(keep_text))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python logs every reconnect attempt at WARNING/ERROR; our own
    # loop reports broker outages once, with context
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

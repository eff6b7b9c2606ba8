"""Logging: JSON lines (production) or text (dev); secrets never reach a formatter because nothing logs them."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# color_message: uvicorn adds an ANSI-coloured copy of the message to its records.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    # The API writes a line per request (~1/3 of its cost was here): the time from the record's own clock (the
    # second's text made once a second, not strftime per line) and one encoder, not a new one per line.
    _encode = json.JSONEncoder(default=str).encode

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return self._encode(payload)

    def _timestamp(self, created: float) -> str:
        """As synchook.timeutil.isoformat: UTC, milliseconds, Z."""
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int(created * 1000) % 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure(fmt: str, *, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "aiosqlite", "sqlalchemy.engine", "arq.worker", "arq.jobs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

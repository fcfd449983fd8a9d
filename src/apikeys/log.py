"""Log set-up: one JSON object per line by default, or plain text for people."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic_core import to_json

# uvicorn adds color_message, an ANSI-coloured copy of the message.
_SKIPPED_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in vars(record).items():
        if name in _SKIPPED_ATTRIBUTES:
            continue
        if isinstance(value, dict):
            fields.update(value)
        else:
            fields[name] = value
    return fields


@lru_cache(maxsize=1)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _utc_timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 with milliseconds. Every request logs a line, and formatting a datetime
    costs more than the rest of the line, so each second is formatted once."""
    return f"{_utc_second(int(record.created))}.{int(record.msecs):03d}+00:00"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        # pydantic-core's encoder: several times cheaper than json.dumps with a default.
        return to_json(entry, fallback=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{name}={value}" for name, value in _extras(record).items())
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(log_format: Literal["json", "text"], level: str) -> None:
    # Every request writes an access line, so a record's cost counts. Neither format shows
    # the calling thread, process or source line: don't pay for looking them up (the
    # "Optimization" section of the logging documentation).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The service writes its own access line per request, with the request id and key.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

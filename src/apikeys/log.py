"""Logs: one JSON object per line by default, or plain text for people; and the access log.

Application logs (start-up, warnings, errors) go through `logging`. The access log, one line
per request, is written by AccessLog in the same formats, without `logging`.
"""

from __future__ import annotations

import asyncio
import logging
import select
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, TextIO

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


LogFormat = Literal["json", "text"]
ACCESS_LOGGER = "apikeys.access"


# A line per request: formatting a datetime costs more than the rest of a line, so each
# second is formatted once.
@lru_cache(maxsize=1)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@lru_cache(maxsize=1)
def _local_second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


def _rfc3339(seconds: float) -> str:
    """UTC, with milliseconds: the JSON lines' time."""
    return f"{_utc_second(int(seconds))}.{int(seconds % 1 * 1000):03d}+00:00"


# The two line formats, shared by the formatters and the access log.
def _json_line(
    seconds: float, level: str, logger: str, message: str, fields: dict[str, Any]
) -> str:
    entry = {
        "time": _rfc3339(seconds),
        "level": level.lower(),
        "logger": logger,
        "message": message,
        **fields,
    }
    # pydantic-core's encoder: several times cheaper than json.dumps with a default.
    return to_json(entry, fallback=str).decode()


def _text_line(
    seconds: float, level: str, logger: str, message: str, fields: dict[str, Any]
) -> str:
    """logging's default time format, the level, the logger, then name=value fields."""
    moment = f"{_local_second(int(seconds))},{int(seconds % 1 * 1000):03d}"
    line = f"{moment} {level.upper():<7} {logger}: {message}"
    return " ".join([line, *(f"{name}={value}" for name, value in fields.items())])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _extras(record)
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return _json_line(
            record.created, record.levelname, record.name, record.getMessage(), fields
        )


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = _text_line(
            record.created, record.levelname, record.name, record.getMessage(), _extras(record)
        )
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def logs_at(level: str, wanted: int) -> bool:
    """Whether a configured level name lets records of `wanted` through."""
    return logging.getLevelNamesMapping().get(level.upper(), logging.INFO) <= wanted


class AccessLog:
    """One line per request on stderr (in the `logger` "apikeys.access"), as the formatters
    above would write it, when the log level lets INFO through.

    Not written through `logging`: its per-record machinery (a LogRecord, the handler's lock,
    a formatter walking the record's attributes) cost a fifth of an authenticated request,
    for a line whose shape never changes. The lines made during one turn of the event loop
    are written together at its end, in one call.
    """

    def __init__(self, log_format: LogFormat, enabled: bool, stream: TextIO | None = None):
        self._line = _json_line if log_format == "json" else _text_line
        self._enabled = enabled
        self._stream = stream
        self._lines: list[str] = []

    def write(self, message: str, fields: dict[str, Any]) -> None:
        if not self._enabled:
            return
        self._lines.append(self._line(time.time(), "info", ACCESS_LOGGER, message, fields))
        if len(self._lines) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        # Looked up now rather than kept, so a redirected stderr (pytest's capture) is seen.
        stream = self._stream or sys.stderr
        try:
            for chunk in _whole_lines_per_write(lines):
                stream.write(chunk)
                stream.flush()
        except (OSError, ValueError):
            # A full disk or a closed stderr loses these lines; it must not fail requests.
            pass


def _whole_lines_per_write(lines: list[str]) -> Iterator[str]:
    """The lines joined into writes of at most PIPE_BUF bytes (but one line each at least):
    the workers of `apikeys serve --workers N` share one stderr, and only a write that small
    to a pipe is never interleaved with another process's."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = (len(line) if line.isascii() else len(line.encode())) + 1
        if chunk and size + length > select.PIPE_BUF:
            yield "\n".join(chunk) + "\n"
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        yield "\n".join(chunk) + "\n"


def configure_logging(log_format: LogFormat, level: str) -> None:
    # Neither format shows the calling thread, process or source line: don't pay for looking
    # them up (the "Optimization" section of the logging documentation).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The service writes its own access line per request (AccessLog), with request id and key.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

"""How uvicorn serves the application: the options `apikeys serve` and the benchmark's
baseline share, and an HTTP protocol that bounds what a slow or hostile client can hold.

uvicorn's httptools protocol waits for a request's headers and body for as long as the
client likes, accepts megabytes of headers, and keeps every connection it is offered until
the process runs out of file descriptors; a few hundred clients sending a byte a second
would stop the server answering anyone. `GuardedHttpToolsProtocol` gives each request a
deadline for its headers and one for its body, refuses header blocks over a size, and keeps
the number of open connections under a limit: at the limit, a new connection displaces the
connection that has waited longest on its client, so a flood of idle or dribbling clients
cannot lock out one that sends its request at once.
"""

from __future__ import annotations

import asyncio
import enum
import os
import resource
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic_core import to_json
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from apikeys.api.problems import PROBLEM_MEDIA_TYPE, error_document
from apikeys.config import Settings
from apikeys.errors import ApiError, HeadersTooLarge, RequestTimeout, ServiceUnavailable

# Descriptors kept back from the connection limit for the database pool, log files and the
# listening socket.
RESERVED_DESCRIPTORS = 64


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_header_bytes=settings.max_header_bytes,
            max_connections=connection_limit(settings.max_connections),
        )


def connection_limit(configured: int) -> int:
    """`configured`, lowered to what the process's open-file limit leaves room for."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - RESERVED_DESCRIPTORS))


@cache
def client_limits() -> ClientLimits:
    # uvicorn builds the protocol itself, in each worker process, so the limits are read
    # from the same environment the application's settings come from.
    return ClientLimits.from_settings(Settings())


class _Phase(enum.Enum):
    AWAITING_REQUEST = "awaiting request"  # a new connection, or one between requests
    HEADERS = "headers"
    BODY = "body"
    SERVER = "server"  # the request is read: the application's turn, not the client's


_READING_HEADERS = (_Phase.AWAITING_REQUEST, _Phase.HEADERS)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for the client, a header size limit and a
    connection limit (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = client_limits()
        self._phase = _Phase.AWAITING_REQUEST
        self._first_request = True
        self._waiting_since: float | None = None
        self._waiting_limit = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at: float | None = None
        # Bytes received while the headers were incomplete, and the size of those parsed.
        self._header_bytes_received = 0
        self._header_size = 0
        self._refused = False

    # The connection.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_client(self._limits.header_timeout)
        self._arm_deadline()
        if len(self.connections) > self._limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting_since = None
        self._arm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._phase in _READING_HEADERS:
            self._header_bytes_received += len(data)
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if (
            self._phase in _READING_HEADERS
            and self._header_bytes_received > self._limits.max_header_bytes
        ):
            self._refuse_headers_too_large()
            return
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase is _Phase.SERVER and not self.transport.is_closing():
            self._phase = _Phase.AWAITING_REQUEST
            self._wait_for_client(self._limits.header_timeout)
            self._arm_deadline()

    # Parser callbacks: where the request stands, and how big its headers are.

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._phase = _Phase.HEADERS
        self._header_size = 0
        # The first request's deadline runs from the connection's opening: a client that
        # connects and stays silent gets no more time than one that starts at once.
        if not self._first_request:
            self._wait_for_client(self._limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self._header_size += len(url)
        if self._header_size > self._limits.max_header_bytes:
            self._refuse_headers_too_large()
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._header_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_size > self._limits.max_header_bytes:
            self._refuse_headers_too_large()
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._phase = _Phase.BODY
        self._header_bytes_received = 0
        self._wait_for_client(self._limits.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._phase = _Phase.SERVER
        self._first_request = False
        self._waiting_since = None
        super().on_message_complete()

    # Deadlines.

    def _wait_for_client(self, limit: float) -> None:
        self._waiting_since = self.loop.time()
        self._waiting_limit = limit

    def _arm_deadline(self) -> None:
        """Keep one timer, due when the client's time runs out (none on the server's turn)."""
        due = None if self._waiting_since is None else self._waiting_since + self._waiting_limit
        if due == self._deadline_at:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None if due is None else self.loop.call_at(due, self._client_too_slow)
        self._deadline_at = due

    def _client_too_slow(self) -> None:
        self._deadline = self._deadline_at = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The server stopped reading (a pipelined request, a body not yet consumed):
            # the wait is not the client's doing.
            self._wait_for_client(self._waiting_limit)
            self._arm_deadline()
            return
        self._cut_off()

    def _cut_off(self) -> None:
        """End a connection whose client is too slow: a 408 if it was sending a request."""
        if self._phase is _Phase.HEADERS:
            self._refuse(RequestTimeout("The request's headers took too long to arrive"))
        elif self._phase is _Phase.BODY and not self.cycle.response_started:
            self._refuse(RequestTimeout("The request's body took too long to arrive"))
        else:  # between requests, or answered already without waiting for the whole body
            self._close()

    # Connections.

    def _make_room(self) -> None:
        """Over the limit: displace the open connection that has waited longest on its
        client, or refuse this one if every other is the server's to answer."""
        waiting = [
            connection
            for connection in self.connections
            if isinstance(connection, GuardedHttpToolsProtocol)
            and connection is not self
            and connection._waiting_since is not None
            and not connection.transport.is_closing()
        ]
        if not waiting:
            self._refuse(
                ServiceUnavailable(
                    "The server has as many connections open as it allows; retry shortly",
                    retry_after=1,
                )
            )
            return
        min(waiting, key=lambda connection: connection._waiting_since or 0.0)._cut_off()

    # Refusals, answered here rather than by the application, which never sees the request.

    def _refuse_headers_too_large(self) -> None:
        self._refuse(
            HeadersTooLarge(
                f"The request line and headers are over {self._limits.max_header_bytes:,} bytes"
            )
        )

    def _refuse(self, error: ApiError) -> None:
        self._refused = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self._close()
                return
            # The application is waiting for a body that will not come: it hears the client
            # has gone, and answers nothing of its own.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(self._problem_response(error))
        self._close()

    def _problem_response(self, error: ApiError) -> bytes:
        request_id = os.urandom(16).hex()
        url: bytes = getattr(self, "url", b"")
        instance = url.split(b"?", 1)[0][:2048].decode("latin-1")
        body = to_json(error_document(error, instance, request_id))
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
            *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
            *self.server_state.default_headers,
        ]
        lines = [
            STATUS_LINE[error.status],
            *(name + b": " + value + b"\r\n" for name, value in headers),
        ]
        return b"".join([*lines, b"\r\n", body])

    def _close(self) -> None:
        self._waiting_since = None
        self._arm_deadline()
        self.transport.close()


# Shared with the benchmark's bare-FastAPI baseline, so both run on the same server.
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": GuardedHttpToolsProtocol,
    # The service speaks no WebSocket; an Upgrade request is answered as plain HTTP.
    "ws": "none",
    "log_config": None,
    "access_log": False,  # the service writes its own access line (apikeys.api.middleware)
    "server_header": False,
}

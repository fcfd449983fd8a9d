"""Slow and hostile clients against a real `apikeys serve`: silent connections, headers and
bodies sent a byte at a time, oversized headers, more connections than file descriptors, and
a credential header crafted to be expensive. None of them may hold the server for longer
than its deadlines, or delay anyone else's request."""

from __future__ import annotations

import contextlib
import resource
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests import servers
from tests.conftest import random_master_key

pytestmark = pytest.mark.full

DEADLINE_SECONDS = 2
# How much later than its deadline a connection may be cut off on a loaded machine.
SLACK_SECONDS = 3.0
# What a normal request may take while others misbehave; a stalled loop shows as seconds.
PROMPT_SECONDS = 1.0
OPEN_FILE_LIMIT = 256


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILE_LIMIT, OPEN_FILE_LIMIT))


@contextmanager
def serving(directory: Path, template: Path, **settings: str) -> Iterator[servers.Server]:
    """`apikeys serve` on a copy of the SQLite template, with an open-file limit of 256."""
    database = directory / "apikeys.db"
    shutil.copy(template, database)
    env = servers.environment(f"sqlite:///{database}", random_master_key(), **settings)
    port = servers.free_port()
    log_path = directory / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [servers.APIKEYS, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_limit_open_files,
        )
    server = servers.Server(process, port, log_path)
    try:
        servers.wait_ready(server)
        yield server
    finally:
        servers.stop(server)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[servers.Server]:
    directory = tmp_path_factory.mktemp("slow-clients")
    with serving(
        directory,
        sqlite_template,
        APIKEYS_HEADER_TIMEOUT=str(DEADLINE_SECONDS),
        APIKEYS_BODY_TIMEOUT=str(DEADLINE_SECONDS),
    ) as running:
        yield running


def connect(server: servers.Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # closed with some of what was sent still unread, as a refusal may be
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def assert_prompt_answer(server: servers.Server) -> None:
    started = time.monotonic()
    response = httpx.get(f"{server.base_url}/healthz", timeout=10)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < PROMPT_SECONDS, f"/healthz took {elapsed:.2f} s"


class Dribbler:
    """Sends one byte a tick to each connection until the server closes it."""

    def __init__(self, connections: list[socket.socket], tick: float = 0.25) -> None:
        self.open = list(connections)
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Dribbler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while self.open and not self._stop.wait(self.tick):
            for connection in list(self.open):
                try:
                    connection.send(b"a")
                except OSError:
                    self.open.remove(connection)


def test_a_silent_connection_is_closed_after_the_header_deadline(server: servers.Server) -> None:
    started = time.monotonic()
    with connect(server) as silent:
        assert_prompt_answer(server)

        assert read_until_closed(silent) == b""
    elapsed = time.monotonic() - started

    assert DEADLINE_SECONDS - 0.5 < elapsed < DEADLINE_SECONDS + SLACK_SECONDS


def test_headers_sent_a_byte_at_a_time_get_a_408_after_the_header_deadline(
    server: servers.Server,
) -> None:
    started = time.monotonic()
    with connect(server) as slow, Dribbler([slow]):
        slow.sendall(b"GET /me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
        assert_prompt_answer(server)

        response = read_until_closed(slow)
    elapsed = time.monotonic() - started

    assert status_of(response) == 408
    assert b"application/problem+json" in response
    assert b"headers took too long" in response
    assert elapsed < DEADLINE_SECONDS + SLACK_SECONDS


def test_a_body_sent_a_byte_at_a_time_gets_a_408_after_the_body_deadline(
    server: servers.Server,
) -> None:
    started = time.monotonic()
    with connect(server) as slow, Dribbler([slow]):
        slow.sendall(
            b"POST /accounts/10/api-keys HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        assert_prompt_answer(server)

        response = read_until_closed(slow)
    elapsed = time.monotonic() - started

    assert status_of(response) == 408
    assert b"body took too long" in response
    assert elapsed < DEADLINE_SECONDS + SLACK_SECONDS
    # The request the application was reading is logged as cut off, not as a server error.
    logs = server.logs_containing('"message":"POST (unmatched) 499"')
    access = [line for line in logs.splitlines() if '"logger":"apikeys.access"' in line]
    assert any('"message":"POST (unmatched) 499"' in line for line in access), access[-5:]
    assert not any('"status":500' in line for line in access), access[-5:]


def test_a_body_answered_before_it_arrived_ends_the_connection_without_a_second_answer(
    server: servers.Server,
) -> None:
    started = time.monotonic()
    with connect(server) as slow, Dribbler([slow]):
        slow.sendall(
            b"POST /accounts/10/api-keys HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )

        response = read_until_closed(slow)
    elapsed = time.monotonic() - started

    assert status_of(response) == 413
    assert response.count(b"HTTP/1.1 ") == 1
    assert elapsed < DEADLINE_SECONDS + SLACK_SECONDS


@pytest.mark.parametrize("size", [20 * 1024, 1024 * 1024])
def test_headers_over_16_kib_are_431_and_the_connection_closed(
    server: servers.Server, size: int
) -> None:
    with connect(server) as greedy:
        greedy.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
        with contextlib.suppress(OSError):  # closed by the server before all was sent
            greedy.sendall(b"a" * size + b"\r\n\r\n")
        response = read_until_closed(greedy)

    # A client still sending when the server closes may see the connection reset instead.
    if size < 64 * 1024 or response:
        assert status_of(response) == 431
        assert b"over 16,384 bytes" in response


def test_headers_just_under_16_kib_are_served(server: servers.Server) -> None:
    response = httpx.get(
        f"{server.base_url}/healthz", headers={"X-Padding": "a" * 15 * 1024}, timeout=10
    )

    assert response.status_code == 200


def test_more_slow_connections_than_file_descriptors_leave_the_server_answering(
    server: servers.Server,
) -> None:
    silent = [connect(server) for _ in range(130)]
    slow = [connect(server) for _ in range(130)]
    started = time.monotonic()
    try:
        for connection in slow:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
        with Dribbler(slow):
            for _ in range(3):
                assert_prompt_answer(server)
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(read_until_closed, silent + slow))
        elapsed = time.monotonic() - started
    finally:
        for connection in silent + slow:
            connection.close()

    # Each one was closed: by its deadline, or earlier to make room for a newer connection.
    assert elapsed < DEADLINE_SECONDS + SLACK_SECONDS
    assert {status_of(answer) for answer in answers if answer} <= {408}
    assert_prompt_answer(server)


# The crafted credential header: a 64-digit signature, then spaces, then junk.


@pytest.fixture(scope="module")
def roomy_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[servers.Server]:
    """A server taking headers as large as uvicorn's own parser would, so the credential
    parser itself meets the crafted header."""
    directory = tmp_path_factory.mktemp("roomy")
    with serving(directory, sqlite_template, APIKEYS_MAX_HEADER_BYTES=str(2 * 1024 * 1024)) as s:
        yield s


def crafted_authorization(spaces: int) -> str:
    return "Convert-HMAC-SHA256 Signature=" + "a" * 64 + " " * spaces + "x"


@pytest.mark.parametrize("spaces", [7_000, 30_000, 1_000_000])
def test_a_signature_trailed_by_many_spaces_is_401_at_once_and_delays_nobody(
    roomy_server: servers.Server, spaces: int
) -> None:
    headers = {
        "Authorization": crafted_authorization(spaces),
        "Convert-Application-ID": "a" * 24,
        "Expires": str(int(time.time()) + 60),
    }

    def crafted() -> tuple[int, float]:
        started = time.monotonic()
        response = httpx.get(f"{roomy_server.base_url}/me", headers=headers, timeout=30)
        return response.status_code, time.monotonic() - started

    with ThreadPoolExecutor(2) as pool:
        attack = pool.submit(crafted)
        time.sleep(0.05)
        assert_prompt_answer(roomy_server)
        status, elapsed = attack.result()

    assert status == 401
    assert elapsed < PROMPT_SECONDS


def test_with_the_default_header_limit_the_crafted_header_is_431(server: servers.Server) -> None:
    response = httpx.get(
        f"{server.base_url}/me",
        headers={"Authorization": crafted_authorization(30_000)},
        timeout=10,
    )

    assert response.status_code == 431

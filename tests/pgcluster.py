"""A PostgreSQL cluster of a test's own, to stop, restart, freeze and fill at will.

Never the shared server: each cluster lives in a fresh directory, listens on a free loopback
port with its own socket directory, runs as the OS user `postgres`, and is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"


def _as_postgres(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", OS_USER, "--", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


@dataclass
class Cluster:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def sockets(self) -> Path:
        return self.directory / "sockets"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, *, wait: bool = True, options: str = "") -> None:
        _as_postgres(
            str(BIN / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.directory / "server.log")),
            *("-o", f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 {options}"),
            "-w" if wait else "-W",
            "start",
        )

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        _as_postgres(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w" if wait else "-W", "stop"
        )

    def create_database(self) -> str:
        """A new empty database on this cluster, for one test."""
        name = f"apikeys_{uuid.uuid4().hex[:12]}"
        _as_postgres(
            str(BIN / "psql"),
            *("-h", str(self.sockets), "-p", str(self.port), "-U", "postgres", "-d", "postgres"),
            *("-c", f'CREATE DATABASE "{name}"'),
        )
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    @contextmanager
    def in_recovery(self, *, readable: bool) -> Iterator[None]:
        """Restarted as a standby with no primary to follow, so it stays in recovery for good:
        answering reads only (`readable`), or refusing every connection as "not accepting
        connections", as a server starting up does. A primary again on the way out."""
        self.stop()
        signal_file = self.data / "standby.signal"
        signal_file.touch()
        shutil.chown(signal_file, OS_USER, OS_USER)
        try:
            self.start(wait=readable, options=f"-c hot_standby={'on' if readable else 'off'}")
            yield
        finally:
            if self.is_running():
                self.stop()
            signal_file.unlink()
            self.start()

    def is_running(self) -> bool:
        done = subprocess.run(
            ["runuser", "-u", OS_USER, "--", str(BIN / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            timeout=30,
        )
        return done.returncode == 0

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _processes(self) -> list[int]:
        """The postmaster and every backend it forked."""
        postmaster = self.postmaster_pid()
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, timeout=10
        ).stdout.split()
        return [postmaster, *map(int, children)]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the cluster stopped (SIGSTOP): connections are accepted by the
        kernel and then nothing answers. Always resumed on the way out."""
        stopped: list[int] = []
        try:
            for pid in self._processes():
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            yield
        finally:
            _resume(stopped)

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text() if path.exists() else ""


def _resume(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@contextmanager
def cluster(max_connections: int = 20) -> Iterator[Cluster]:
    """A fresh cluster, started; stopped and deleted afterwards whatever happened."""
    directory = Path(tempfile.mkdtemp(prefix="apikeys-pg-"))
    shutil.chown(directory, OS_USER, OS_USER)
    own = Cluster(directory, free_port())
    own.sockets.mkdir()
    shutil.chown(own.sockets, OS_USER, OS_USER)
    try:
        _as_postgres(
            str(BIN / "initdb"),
            *("-D", str(own.data), "-U", "postgres", "--auth=trust", "--no-sync"),
            timeout=120,
        )
        with (own.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"max_connections = {max_connections}\n"
                "superuser_reserved_connections = 0\n"
                "fsync = off\n"
                "shared_buffers = 16MB\n"
            )
        own.start()
        yield own
    finally:
        try:
            if (own.data / "postmaster.pid").exists():
                # A frozen cluster would never stop: resume it first.
                _resume(own._processes())
                own.stop("immediate")
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def wait_until(condition: object, timeout: float = 30.0) -> None:
    """Poll a zero-argument callable until it is true."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(0.05)

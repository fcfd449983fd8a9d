"""The `apikeys` command and a real server, run as child processes the way an operator runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import POSTGRES_ADMIN_URL, _admin, run_now

APIKEYS = str(Path(sys.executable).parent / "apikeys")
START_TIMEOUT_SECONDS = 90.0


def command_env(**variables: str) -> dict[str, str]:
    """This process's environment without any APIKEYS_ setting, plus `variables`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")}
    env.update(variables)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APIKEYS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped afterwards."""
    name = f"apikeys_test_{uuid.uuid4().hex[:12]}"
    run_now(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        run_now(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """`apikeys serve` on a free loopback port; its stdout and stderr go to one file."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.output_path = directory / f"server-{self.port}.log"
        self._output = self.output_path.open("w")
        self.process = subprocess.Popen(
            [APIKEYS, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=directory,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"apikeys serve exited:\n{self.output_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"apikeys serve did not start:\n{self.output_path.read_text()}")

    def stop(self) -> str:
        """Stop the server as an orchestrator would (SIGTERM) and return all it wrote."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()
        return self.output_path.read_text()

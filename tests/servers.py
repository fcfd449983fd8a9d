"""Real `apikeys` processes for tests that need a server over real HTTP, or the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

APIKEYS = str(Path(sys.executable).with_name("apikeys"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(database_url: str, master_key: str, **extra: str) -> dict[str, str]:
    """The process environment for a server or CLI run: this one's, minus any APIKEYS_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIKEYS_")}
    env.update(APIKEYS_DATABASE_URL=database_url, APIKEYS_MASTER_KEY=master_key, **extra)
    return env


def cli(args: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> Any:
    """Run `apikeys ARGS`, expect success, and return its JSON output."""
    done = subprocess.run(
        [APIKEYS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise AssertionError(f"apikeys {args[:2]} exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    log_path: Path
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text()

    def logs_containing(self, fragment: str, within: float = 5.0) -> str:
        """The logs once they hold `fragment`, or as they are after `within` seconds: a line
        about a request can be written just after its client saw the answer."""
        deadline = time.monotonic() + within
        while fragment not in (logs := self.logs()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return logs


def start(env: dict[str, str], log_path: Path, *extra_args: str) -> Server:
    """Start `apikeys serve` on a free loopback port; call wait_ready before using it."""
    port = free_port()
    log = log_path.open("w")
    process = subprocess.Popen(
        [APIKEYS, "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Server(process, port, log_path)


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"server exited {server.process.returncode}: {server.logs()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready in {timeout} s: {server.logs()[-3000:]}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def running(env: dict[str, str], log_path: Path, *extra_args: str) -> Iterator[Server]:
    server = start(env, log_path, *extra_args)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)


def bare_environment() -> dict[str, str]:
    """This process's environment without any APIKEYS_*: the defaults, as `make run` has them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("APIKEYS_")}


@dataclass
class Quickstart:
    server: Server
    output_path: Path

    def output(self) -> str:
        return self.output_path.read_text()

    def exports(self) -> dict[str, str]:
        """The `export NAME=VALUE` lines it printed for the README's examples."""
        found: dict[str, str] = {}
        for line in self.output().splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = value
        return found


def start_quickstart(directory: Path, env: dict[str, str], port: int | None = None) -> Quickstart:
    """`apikeys quickstart` in `directory`, as `make run` runs it; wait_ready before using it."""
    port = port or free_port()
    output_path = directory / "quickstart.out"
    log_path = directory / "quickstart.log"
    with output_path.open("w") as output, log_path.open("w") as log:
        process = subprocess.Popen(
            [APIKEYS, "quickstart", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=directory,
            stdout=output,
            stderr=log,
            text=True,
        )
    return Quickstart(Server(process, port, log_path), output_path)

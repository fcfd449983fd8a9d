"""Real processes in front of and behind `/verify`: the sample API of examples/, nginx with
deploy/nginx-forward-auth.conf, and Traefik, each on free loopback ports under a test's own
directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import servers
from tests.live import LiveService
from tests.servers import free_port
from tests.signing import bearer_headers, signed_headers

ROOT = Path(__file__).resolve().parent.parent
FORWARD_AUTH_CONF = ROOT / "deploy" / "nginx-forward-auth.conf"
TRAEFIK = Path(sys.executable).with_name("traefik")
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Running:
    base_url: str
    log: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"not listening on {port}: {log.read_text()[-3000:]}")


@contextmanager
def sample_api(module: str, directory: Path, **env: str) -> Iterator[Running]:
    """examples/<module>.py under uvicorn, as its docstring runs it."""
    port = free_port()
    log = directory / f"{module}.log"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "examples")),
            *(f"{module}:app", "--host", "127.0.0.1", "--port", str(port)),
        ],
        env={**_base_env(), **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, process, log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code != 200:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Running(f"http://127.0.0.1:{port}", log)
    finally:
        _stop(process)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("APIKEYS_")}


def forward_auth_config(service_port: int, api_port: int, listen_port: int) -> str:
    """deploy/nginx-forward-auth.conf as shipped, with this test's ports, and nginx's
    temporary files and logs kept under its prefix directory."""
    text = FORWARD_AUTH_CONF.read_text()
    replaced = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{service_port};",
        "server 127.0.0.1:9000;": f"server 127.0.0.1:{api_port};",
        "listen 8080;": f"listen 127.0.0.1:{listen_port};",
        "worker_processes auto;": "worker_processes 1;\npid nginx.pid;\nerror_log error.log warn;",
        "http {": "http {\n"
        + "".join(
            f"    {kind}_temp_path tmp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + "    access_log off;",
    }
    for old, new in replaced.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@contextmanager
def nginx(directory: Path, service_port: int, api_port: int) -> Iterator[Running]:
    executable = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin")
    assert executable, "nginx is not installed: run .ci/ensure-nginx"
    prefix = directory / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(forward_auth_config(service_port, api_port, port))
    log = prefix / "nginx.out"
    process = subprocess.Popen(
        [executable, "-p", str(prefix), "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        _wait_for_port(port, process, log)
        yield Running(f"http://127.0.0.1:{port}", log)
    finally:
        _stop(process)


def traefik_dynamic_config(service_url: str, api_url: str) -> str:
    """The README's Traefik configuration (file provider), for a service and an API."""
    return TRAEFIK_DYNAMIC.format(service_url=service_url, api_url=api_url)


TRAEFIK_DYNAMIC = """\
http:
  routers:
    reads:
      rule: "PathPrefix(`/projects/`) && (Method(`GET`) || Method(`HEAD`))"
      middlewares: [require-browse, apikeys]
      service: experiences
    writes:
      rule: "PathPrefix(`/projects/`)"
      middlewares: [require-edit, apikeys]
      service: experiences
  middlewares:
    require-browse:
      headers:
        customRequestHeaders:
          X-Apikeys-Require-Role: browse
    require-edit:
      headers:
        customRequestHeaders:
          X-Apikeys-Require-Role: edit
    apikeys:
      forwardAuth:
        address: "{service_url}/verify"
        forwardBody: true
        maxBodySize: 65536
        authResponseHeaders:
          - X-Apikeys-Key
          - X-Apikeys-Account
          - X-Apikeys-Role
          - X-Apikeys-Type
          - X-Apikeys-Projects
  services:
    experiences:
      loadBalancer:
        servers:
          - url: "{api_url}"
"""


@contextmanager
def traefik(directory: Path, service_url: str, api_url: str) -> Iterator[Running]:
    assert TRAEFIK.exists(), "traefik is not installed: pip install -e '.[test]'"
    prefix = directory / "traefik"
    prefix.mkdir()
    port = free_port()
    (prefix / "dynamic.yml").write_text(traefik_dynamic_config(service_url, api_url))
    log = prefix / "traefik.log"
    process = subprocess.Popen(
        [
            str(TRAEFIK),
            f"--entryPoints.web.address=127.0.0.1:{port}",
            f"--providers.file.filename={prefix / 'dynamic.yml'}",
            "--log.level=ERROR",
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, process, log)
        # The file provider's routes load just after the entry point listens.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while httpx.get(f"http://127.0.0.1:{port}/projects/1/experiences").status_code == 404:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Running(f"http://127.0.0.1:{port}", log)
    finally:
        _stop(process)


# --- the keys the forward-auth tests present -------------------------------------------------

REVOCATION_BOUND_SECONDS = 1.0  # SPEC §3: on every replica within one second


@dataclass(frozen=True)
class Made:
    key: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Keys:
    browse: Made  # secretKey, every project
    edit_project_one: Made  # secretKey, project 1 only
    signing: Made  # requestSigning, edit, every project


def create_key(live: LiveService, **body: Any) -> Made:
    response = httpx.post(
        live.keys_url, json=body, headers=bearer_headers(live.bearer_owner.secret), timeout=10
    )
    assert response.status_code == 201, response.text
    return Made(response.json()["key"], response.json()["secret"])


def revoke(live: LiveService, made: Made) -> None:
    response = httpx.delete(
        f"{live.keys_url}/{made.key}", headers=bearer_headers(live.bearer_owner.secret)
    )
    assert response.status_code == 204


@pytest.fixture(scope="module")
def keys(live: LiveService) -> Keys:
    servers.cli(
        [
            *("projects", "create", "--account", str(live.account_id), "--name", "Shop"),
            *("--id", "2", "--json"),
        ],
        live.env,
    )
    return Keys(
        browse=create_key(live, name="browse", type="secretKey", role="browse"),
        edit_project_one=create_key(
            live, name="project one", type="secretKey", role="edit", projects=[1]
        ),
        signing=create_key(live, name="signing", type="requestSigning", role="edit"),
    )


def signed(made: Made, url: str, body: bytes = b"") -> dict[str, str]:
    return signed_headers(made.key, made.secret, url, body)

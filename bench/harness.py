"""The service against the bare-FastAPI ceiling, side by side, on SQLite and PostgreSQL.

For each backend: a fresh database bootstrapped with the `apikeys` command line, then
`--rounds` rounds of: start the baseline, load each of its routes with wrk, stop it; start
`apikeys serve`, load each of its routes, stop it. Both run one uvicorn worker with the same
options (apikeys.server.SERVER_OPTIONS). The medians go into a Markdown report.

Plain requests per second swing with whatever else the machine runs, so the report also
gives requests per CPU-second of the server process, a far steadier ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from apikeys import security
from apikeys.client import KeyVerifier, require_key
from apikeys.config import async_database_url
from apikeys.security import SecretKeeper, SignedMessage
from bench import seed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APIKEYS = str(Path(sys.executable).with_name("apikeys"))
ACCOUNT_ID = 1
PROJECT_ID = 1
SIGNATURE_LIFETIME = 900
CREATE_BODY = json.dumps({"name": "bench", "projects": [PROJECT_ID], "role": "browse"})
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Key:
    key: str
    secret: str


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the report: a route loaded on the service and on the baseline."""

    name: str
    method: str
    path: str
    auth: str  # "signature", "bearer", or "forwarded signature" (a request another API got)
    target: float  # the lowest acceptable ratio of the service's rps to the baseline's
    baseline_path: str | None = None  # the baseline's route, when it differs
    # Each request carries an Idempotency-Key of its own, so each still creates a key.
    idempotency_keys: bool = False


PLAIN_CREATE = "POST /accounts/{id}/api-keys, one project"
IDEMPOTENT_CREATE = "POST /accounts/{id}/api-keys, one project, Idempotency-Key"
SCENARIOS = (
    Scenario("GET /me, requestSigning key", "GET", "/me", "signature", 0.70),
    Scenario("GET /me, secretKey key", "GET", "/me", "bearer", 0.75),
    # The creates with a secretKey key: wrk repeats one request, and a signed POST is
    # accepted once.
    Scenario(
        PLAIN_CREATE,
        "POST",
        f"/accounts/{ACCOUNT_ID}/api-keys",
        "bearer",
        0.40,
    ),
    Scenario(
        IDEMPOTENT_CREATE,
        "POST",
        f"/accounts/{ACCOUNT_ID}/api-keys",
        "bearer",
        0.25,
        idempotency_keys=True,
    ),
    # /verify against the bare GET: what a proxy pays per request of the API behind it.
    Scenario("/verify, secretKey key", "GET", "/verify", "bearer", 0.80, baseline_path="/me"),
    Scenario(
        "/verify, signed GET forwarded",
        "GET",
        "/verify",
        "forwarded signature",
        0.70,
        baseline_path="/me",
    ),
)
# The request a proxy asks /verify about, in the forwarded-signature scenario.
FORWARDED_URL = f"https://api.example.com/projects/{PROJECT_ID}/experiences?status=active"
# The ratio for key creation on PostgreSQL, where a commit is a round trip and an fsync.
POSTGRES_CREATE_TARGET = 0.30
P99_LIMIT = 3.0


@dataclass
class Run:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    rss_mb: float
    errors: int  # statuses >= 400, and timeouts or broken connections

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def per_cpu_s(self) -> float:
        return self.requests / self.server_cpu_s if self.server_cpu_s else 0.0


@dataclass
class Options:
    rounds: int
    duration: int
    warmup: int
    connections: int
    threads: int
    workdir: Path


@dataclass
class Database:
    backend: str
    url: str
    env: dict[str, str]
    signing: Key = field(init=False)
    bearer: Key = field(init=False)


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cli(args: Sequence[str], env: dict[str, str]) -> Any:
    done = subprocess.run([APIKEYS, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"apikeys {' '.join(args[:2])} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


@contextmanager
def serving(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Server]:
    """A server on a free port, ready, stopped afterwards. The command must not fork: its
    process is the one whose CPU time is measured."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*argv, "--port", str(port)],
            env=env,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    server = Server(process, port)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{server.base_url}/healthz"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{argv[0]} did not start; see {log}")
            time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def service_argv() -> list[str]:
    return [APIKEYS, "serve", "--host", "127.0.0.1", "--workers", "1"]


def baseline_argv() -> list[str]:
    return [sys.executable, "-m", "bench.baseline_app", "--host", "127.0.0.1"]


# --- requests ------------------------------------------------------------------------------


def signed(key: Key, url: str, body: str) -> dict[str, str]:
    expires = str(int(time.time()) + SIGNATURE_LIFETIME)
    message = "\n".join((key.key, expires, url, body)).encode()
    signature = hmac.new(key.secret.encode(), message, hashlib.sha256).hexdigest()
    return {
        "Convert-Application-ID": key.key,
        "Expires": expires,
        "Authorization": f"Convert-HMAC-SHA256 Signature={signature}",
    }


def headers_for(scenario: Scenario, database: Database | None, url: str) -> dict[str, str]:
    if database is None:
        return {}
    if scenario.auth == "bearer":
        return {"Authorization": f"Bearer {database.bearer.secret}"}
    if scenario.auth == "forwarded signature":
        proto, _, rest = FORWARDED_URL.partition("://")
        host, _, uri = rest.partition("/")
        return {
            **signed(database.signing, FORWARDED_URL, ""),
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Proto": proto,
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": f"/{uri}",
            "X-Apikeys-Require-Role": "browse",
            "X-Apikeys-Require-Project": str(PROJECT_ID),
        }
    body = CREATE_BODY if scenario.method == "POST" else ""
    return signed(database.signing, url, body)


def expect_success(scenario: Scenario, url: str, headers: dict[str, str]) -> None:
    """wrk counts only statuses >= 400 as errors; one request first makes sure it is 2xx."""
    body = CREATE_BODY.encode() if scenario.method == "POST" else None
    if scenario.idempotency_keys:
        headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    request = urllib.request.Request(url, data=body, method=scenario.method, headers=headers)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status not in (200, 201):
            raise SystemExit(f"{scenario.method} {url} answered {response.status}")


def wrk(
    options: Options,
    method: str,
    url: str,
    duration: int,
    *,
    headers: dict[str, str] | None = None,
    header_file: Path | None = None,
    idempotency_keys: bool = False,
) -> dict[str, Any]:
    env = dict(
        os.environ,
        BENCH_HEADERS="\n".join(f"{name}: {value}" for name, value in (headers or {}).items()),
        BENCH_HEADER_FILE=str(header_file or ""),
        BENCH_BODY=CREATE_BODY if method == "POST" else "",
        # A prefix of this run's own, so no key repeats one of an earlier run's.
        BENCH_IDEMPOTENCY_PREFIX=uuid.uuid4().hex if idempotency_keys else "",
    )
    script = HERE / "wrk" / ("post.lua" if method == "POST" else "get.lua")
    argv = [
        "wrk",
        f"-t{options.threads}",
        f"-c{options.connections}",
        f"-d{duration}s",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return result
    raise SystemExit(f"wrk printed no result for {method} {url}:\n{output}")


def measure(
    options: Options,
    server: Server,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    header_file: Path | None = None,
    idempotency_keys: bool = False,
) -> Run:
    def run(duration: int) -> dict[str, Any]:
        return wrk(
            options,
            method,
            url,
            duration,
            headers=headers,
            header_file=header_file,
            idempotency_keys=idempotency_keys,
        )

    if options.warmup:
        run(options.warmup)
    before = server.cpu_s()
    result = run(options.duration)
    return Run(
        requests=result["requests"],
        duration_s=result["duration_s"],
        p50_ms=result["lat_p50_ms"],
        p99_ms=result["lat_p99_ms"],
        server_cpu_s=server.cpu_s() - before,
        rss_mb=server.rss_mb(),
        errors=result["status_errors"] + result["socket_errors"],
    )


# --- databases -----------------------------------------------------------------------------


def _environment(url: str, master_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIKEYS_")}
    env.update(APIKEYS_DATABASE_URL=url, APIKEYS_MASTER_KEY=master_key)
    return env


async def _postgres_admin(admin_url: str, statement: str) -> None:
    engine = create_async_engine(async_database_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def database(backend: str, workdir: Path, postgres_admin_url: str) -> Iterator[Database]:
    """A new, empty database of the backend, with an account, a project and two owner keys
    made by the command line."""
    master_key = base64.b64encode(os.urandom(32)).decode()
    name = f"apikeys_bench_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        url = f"sqlite:///{workdir / name}.db"
    else:
        url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(_postgres_admin(postgres_admin_url, f'CREATE DATABASE "{name}"'))
    try:
        result = Database(backend, url, _environment(url, master_key))
        cli(
            ["accounts", "create", "--name", "Bench", "--id", str(ACCOUNT_ID), "--json"], result.env
        )
        cli(
            [
                *("projects", "create", "--account", str(ACCOUNT_ID)),
                *("--name", "Bench", "--id", str(PROJECT_ID), "--json"),
            ],
            result.env,
        )
        made = {
            kind: cli(
                [
                    *("keys", "create", "--account", str(ACCOUNT_ID)),
                    *("--name", f"bench {kind}", "--role", "owner", "--type", kind, "--json"),
                ],
                result.env,
            )
            for kind in ("requestSigning", "secretKey")
        }
        result.signing = Key(made["requestSigning"]["key"], made["requestSigning"]["secret"])
        result.bearer = Key(made["secretKey"]["key"], made["secretKey"]["secret"])
        yield result
    finally:
        if backend != "sqlite":
            asyncio.run(
                _postgres_admin(
                    postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                )
            )


# --- the comparison ------------------------------------------------------------------------


def compare(options: Options, db: Database) -> dict[str, dict[str, list[Run]]]:
    """runs[scenario][server] over all rounds, baseline and service started in turn."""
    runs: dict[str, dict[str, list[Run]]] = {
        s.name: {"baseline": [], "service": []} for s in SCENARIOS
    }
    log = options.workdir / f"{db.backend}.log"
    for round_number in range(1, options.rounds + 1):
        for server_name, argv, env, auth in (
            ("baseline", baseline_argv(), os.environ.copy(), None),
            ("service", service_argv(), db.env, db),
        ):
            with serving(argv, env, log) as server:
                for scenario in SCENARIOS:
                    path = scenario.path if auth else scenario.baseline_path or scenario.path
                    url = server.base_url + path
                    headers = headers_for(scenario, auth, url)
                    expect_success(scenario, url, headers)
                    run = measure(
                        options,
                        server,
                        scenario.method,
                        url,
                        headers=headers,
                        idempotency_keys=scenario.idempotency_keys,
                    )
                    runs[scenario.name][server_name].append(run)
                    print(
                        f"{db.backend} round {round_number} {server_name:8} {scenario.name}: "
                        f"{run.rps:.0f} rps, {run.per_cpu_s:.0f} req/CPU-s, "
                        f"p99 {run.p99_ms:.1f} ms, {run.errors} errors",
                        file=sys.stderr,
                        flush=True,
                    )
    return runs


def _median(runs: list[Run], attribute: str) -> float:
    return float(statistics.median(getattr(run, attribute) for run in runs))


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def comparison_table(backend: str, runs: dict[str, dict[str, list[Run]]]) -> list[str]:
    lines = [
        "| measure | service rps | baseline rps | rps ratio | req/CPU-s service / baseline "
        "| CPU ratio | target | met (rps / CPU) | p99 ms service / baseline | p99 ratio (≤ 3) "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        service, baseline = runs[scenario.name]["service"], runs[scenario.name]["baseline"]
        target = scenario.target
        if backend == "postgresql" and scenario.method == "POST":
            target = min(target, POSTGRES_CREATE_TARGET)
        # Rounded as printed, so that each verdict follows from the figure beside it.
        rps_ratio = round(_median(service, "rps") / _median(baseline, "rps"), 2)
        cpu_ratio = round(_median(service, "per_cpu_s") / _median(baseline, "per_cpu_s"), 2)
        p99_ratio = round(_median(service, "p99_ms") / _median(baseline, "p99_ms"), 2)
        lines.append(
            f"| {scenario.name} | {_median(service, 'rps'):.0f} | {_median(baseline, 'rps'):.0f} "
            f"| {rps_ratio:.2f} | {_median(service, 'per_cpu_s'):.0f} / "
            f"{_median(baseline, 'per_cpu_s'):.0f} | {cpu_ratio:.2f} | ≥ {target:.2f} "
            f"| {_verdict(rps_ratio >= target)} / {_verdict(cpu_ratio >= target)} "
            f"| {_median(service, 'p99_ms'):.1f} / {_median(baseline, 'p99_ms'):.1f} "
            f"| {p99_ratio:.2f} {_verdict(p99_ratio <= P99_LIMIT)} "
            f"| {sum(run.errors for run in service + baseline)} |"
        )
    return [*lines, "", idempotency_cost(runs)]


def idempotency_cost(runs: dict[str, dict[str, list[Run]]]) -> str:
    """What an Idempotency-Key costs a create on the service: its claim and its record."""
    plain, idempotent = runs[PLAIN_CREATE]["service"], runs[IDEMPOTENT_CREATE]["service"]
    plain_us = 1e6 / _median(plain, "per_cpu_s")
    idempotent_us = 1e6 / _median(idempotent, "per_cpu_s")
    return (
        f"Idempotency-Key: a create with one takes {idempotent_us:.0f} µs of server CPU "
        f"against {plain_us:.0f} µs without ({idempotent_us / plain_us:.2f}x), and "
        f"{_median(idempotent, 'rps'):.0f} against {_median(plain, 'rps'):.0f} creates/s."
    )


def verification_costs() -> list[str]:
    """CPU per verification in process, with the service's own SecretKeeper."""
    keeper = SecretKeeper(os.urandom(32))
    key = security.generate_key()
    secret = security.generate_secret("cvrs_")
    ciphertext = keeper.encrypt(secret, key)
    message = SignedMessage(key, str(int(time.time())), "http://127.0.0.1:8000/me", b"")
    signature = security.sign(secret.encode(), message)
    bearer = security.generate_secret("cvsk_")

    def signature_check() -> None:
        plain = keeper.decrypt(ciphertext, key)
        assert security.signature_matches(plain, message, signature)

    def bearer_digest() -> None:
        security.has_valid_checksum(bearer, "cvsk_")
        keeper.digest(bearer)

    def cost_us(work: Any) -> float:
        timer = timeit.Timer(work, timer=time.process_time)
        return min(timer.repeat(repeat=5, number=20_000)) / 20_000 * 1e6

    signing_us, bearer_us = cost_us(signature_check), cost_us(bearer_digest)
    dependency_us = require_key_cost_us()
    return [
        "| verification in process | CPU per request | target | met |",
        "|---|---|---|---|",
        f"| decrypt + HMAC + compare (requestSigning) | {signing_us:.1f} µs | ≤ 15 µs "
        f"| {_verdict(signing_us <= 15)} |",
        f"| checksum + digest (Bearer) | {bearer_us:.1f} µs | ≤ 5 µs "
        f"| {_verdict(bearer_us <= 5)} |",
        f"| `require_key` on a cache hit (Bearer, role and project) | {dependency_us:.1f} µs "
        f"| ≤ 20 µs | {_verdict(dependency_us <= 20)} |",
    ]


def require_key_cost_us() -> float:
    """CPU per call of apikeys.client.require_key's dependency when the verifier's cache holds
    the key: a new Starlette request each time, as FastAPI makes one per request. The one
    verification that fills the cache is answered by an in-memory transport."""
    secret = security.generate_secret("cvsk_")
    identity = {
        "x-apikeys-key": security.generate_key(),
        "x-apikeys-account": str(ACCOUNT_ID),
        "x-apikeys-role": "edit",
        "x-apikeys-type": "secretKey",
        "x-apikeys-projects": "*",
    }
    transport = httpx.MockTransport(
        lambda _request: httpx.Response(200, headers=identity, json={"name": "bench"})
    )
    verifier = KeyVerifier("http://apikeys.internal", transport=transport)
    app = FastAPI()
    verifier.install(app)
    dependency = require_key(role="edit", project_param="project_id")
    scope = {
        "type": "http",
        "app": app,
        "method": "GET",
        "scheme": "http",
        "server": ("127.0.0.1", 9000),
        "client": ("127.0.0.1", 50000),
        "path": f"/projects/{PROJECT_ID}/experiences",
        "raw_path": f"/projects/{PROJECT_ID}/experiences".encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:9000"),
            (b"authorization", f"Bearer {secret}".encode()),
            (b"accept", b"*/*"),
        ],
        "path_params": {"project_id": PROJECT_ID},
    }
    asyncio.run(dependency(Request(scope)))  # fills the cache

    def cache_hit() -> None:
        call = dependency(Request(scope))
        try:
            call.send(None)
        except StopIteration:
            return
        raise AssertionError("require_key waited: not a cache hit")

    timer = timeit.Timer(cache_hit, timer=time.process_time)
    return min(timer.repeat(repeat=5, number=20_000)) / 20_000 * 1e6


# --- growth --------------------------------------------------------------------------------

GROWTH_SIZES = (1_000, 1_000_000)


def _header_file(path: Path, probes: list[seed.ProbeKey], url: str) -> Path:
    blocks = []
    for probe in probes:
        headers = signed(Key(probe.key, probe.secret), url, "")
        blocks.append("\n".join(f"{name}: {value}" for name, value in headers.items()))
    path.write_text("\n\n".join(blocks) + "\n")
    return path


def _seed_for_growth(db: Database, size: int, probe_keys: int) -> list[seed.ProbeKey]:
    """Fill `db` to `size` keys: the two owner keys, the probes and filler; return the probes."""
    keeper = SecretKeeper(base64.b64decode(db.env["APIKEYS_MASTER_KEY"]))
    probes, probe_rows = seed.make_probe_keys(keeper, "cvrs_", ACCOUNT_ID, probe_keys)
    started = time.monotonic()
    fillers = size - 2 - probe_keys
    asyncio.run(seed.seed(db.url, ACCOUNT_ID, probes=probe_rows, fillers=fillers))
    print(
        f"{db.backend}: {size:,} keys (seeded in {time.monotonic() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return probes


def growth(
    options: Options, small: Database, large: Database, sizes: tuple[int, int] = GROWTH_SIZES
) -> list[str]:
    """p50 of authenticate and of create with `sizes` keys in the table (by default 1,000 and
    1,000,000).

    Two databases, seeded once; the service is started on each in turn, A B A B, for
    `--rounds` rounds, so drift hits both sizes alike. Authentication spreads over probe keys
    taken in turn, every key of the small table but the two owner keys (998 by default), so
    most requests miss the in-process cache and run the indexed lookup. Each create run adds
    its keys to its table (a few thousand: small beside 1,000,000).
    """
    small_size, large_size = sizes
    databases = {small_size: small, large_size: large}
    probes = {size: _seed_for_growth(db, size, small_size - 2) for size, db in databases.items()}
    runs: dict[int, dict[str, list[Run]]] = {size: {"auth": [], "create": []} for size in sizes}
    log = options.workdir / f"{small.backend}-growth.log"
    for round_number in range(1, options.rounds + 1):
        for size, db in databases.items():
            with serving(service_argv(), db.env, log) as server:
                me = server.base_url + "/me"
                header_file = _header_file(options.workdir / "probes.txt", probes[size], me)
                authenticate = measure(options, server, "GET", me, header_file=header_file)
                create_url = server.base_url + SCENARIOS[2].path
                create = measure(
                    options,
                    server,
                    "POST",
                    create_url,
                    headers={"Authorization": f"Bearer {db.bearer.secret}"},
                )
            runs[size]["auth"].append(authenticate)
            runs[size]["create"].append(create)
            print(
                f"{db.backend} round {round_number} {size:,} keys: authenticate p50 "
                f"{authenticate.p50_ms:.1f} ms, create p50 {create.p50_ms:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
    lines = [
        "| keys in the table | authenticate p50 ms | authenticate rps | create p50 ms "
        "| create rps | worker RSS MB after |",
        "|---|---|---|---|---|---|",
    ]
    for size, measured in runs.items():
        lines.append(
            f"| {size:,} | {_median(measured['auth'], 'p50_ms'):.2f} "
            f"| {_median(measured['auth'], 'rps'):.0f} "
            f"| {_median(measured['create'], 'p50_ms'):.2f} "
            f"| {_median(measured['create'], 'rps'):.0f} "
            f"| {max(run.rss_mb for run in measured['create']):.0f} |"
        )

    def change(measure: str) -> float:
        return (
            _median(runs[large_size][measure], "p50_ms")
            / _median(runs[small_size][measure], "p50_ms")
            - 1
        )

    auth_growth, create_growth = change("auth"), change("create")
    rss = max(run.rss_mb for run in runs[large_size]["create"])
    lines += [
        "",
        f"Growth of the median p50 from {small_size:,} to {large_size:,} keys: authenticate "
        f"{auth_growth:+.0%}, create {create_growth:+.0%} (target: within ±25%: "
        f"{_verdict(abs(auth_growth) <= 0.25)} / {_verdict(abs(create_growth) <= 0.25)}); "
        f"worker RSS after the {large_size:,}-key runs at most {rss:.0f} MB "
        f"(target ≤ 150 MB: {_verdict(rss <= 150)}).",
    ]
    return lines


# --- the report ----------------------------------------------------------------------------


def _version(command: list[str]) -> str:
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError:
        return "?"
    return (output.stdout or output.stderr).strip().splitlines()[0]


def machine() -> list[str]:
    from importlib.metadata import version

    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy")
    )
    return [
        f"- When: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit `{commit or '?'}`",
        f"- Machine: {os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {packages}",
        f"- {_version(['wrk', '-v'])}",
    ]


def write_report(
    path: Path, options: Options, sections: list[str], command: Sequence[str], in_turn: str
) -> None:
    header = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench {' '.join(command)}`. Each figure is the median of "
        f"{options.rounds} run(s) of {options.duration} s ({options.warmup} s warm-up) at "
        f"{options.connections} connections from {options.threads} wrk threads, {in_turn}. "
        "The machine is shared: rps moves with other tenants' load, requests per server "
        "CPU-second much less; read the CPU ratio when the two disagree.",
        "",
        *machine(),
        "",
    ]
    path.write_text("\n".join([*header, *sections]) + "\n")


def _sizes(text: str) -> tuple[int, int]:
    small, large = (int(size) for size in text.split(","))
    if not 3 <= small < large:
        raise argparse.ArgumentTypeError("expected SMALL,LARGE with 3 <= SMALL < LARGE")
    return small, large


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--growth", action="store_true", help="the 1,000 vs 1,000,000 keys run")
    parser.add_argument(
        "--growth-sizes",
        type=_sizes,
        default=GROWTH_SIZES,
        metavar="SMALL,LARGE",
        help="keys in the two tables of --growth; default 1000,1000000",
    )
    parser.add_argument("--output", type=Path, help="default: bench/RESULTS.md, or GROWTH.md")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "APIKEYS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an administrative connection; the benchmark makes and drops its own database",
    )
    args = parser.parse_args(argv)
    output: Path = args.output or HERE / ("GROWTH.md" if args.growth else "RESULTS.md")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="apikeys-bench-") as workdir:
        options = Options(
            args.rounds, args.duration, args.warmup, args.connections, args.threads, Path(workdir)
        )
        sections = ["## Verification cost", "", *verification_costs(), ""]
        for backend in args.backends.split(","):
            with database(backend, options.workdir, args.postgres_url) as db:
                if args.growth:
                    with database(backend, options.workdir, args.postgres_url) as large:
                        lines = growth(options, db, large, args.growth_sizes)
                    sections += [f"## Growth, {backend}", "", *lines, ""]
                else:
                    runs = compare(options, db)
                    sections += [f"## {backend}", "", *comparison_table(backend, runs), ""]
        small_size, large_size = args.growth_sizes
        in_turn = (
            f"the service started on the {small_size:,}-key and the {large_size:,}-key "
            "database in turn"
            if args.growth
            else "the baseline and the service started in turn; ratios are the service's "
            "median over the baseline's"
        )
        write_report(output, options, sections, sys.argv[1:] if argv is None else argv, in_turn)
    print(output.read_text())

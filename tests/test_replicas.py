"""Two `apikeys serve` replicas on one database (and one Redis, when configured): a signature
used on one is used on both, and failures on both add up to one throttle."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests import stores
from tests.conftest import random_master_key
from tests.servers import Server, cli, environment, running
from tests.signing import bearer_headers, signed_headers
from tests.stores import store_environment

pytestmark = pytest.mark.full

# Every test on each store: the database, and Redis.
store = stores.store

ACCOUNT_ID = 10
LIMIT = 6
BAD = bearer_headers("cvsk_" + "x" * 49)
JSON = {"Content-Type": "application/json"}


@contextmanager
def two_replicas(
    database_url: str, store: str, directory: Path, **extra: str
) -> Iterator[tuple[Server, Server, dict[str, dict[str, str]]]]:
    """Two servers sharing the database and the store, and owner keys made by the CLI."""
    env = environment(
        database_url,
        random_master_key(),
        APIKEYS_LOG_LEVEL="WARNING",
        APIKEYS_AUTH_FAILURE_LIMIT=str(LIMIT),
        **store_environment(store),
        **extra,
    )
    cli(["accounts", "create", "--name", "Acme", "--id", str(ACCOUNT_ID), "--json"], env)
    owners = {
        kind: cli(
            [
                *("keys", "create", "--account", str(ACCOUNT_ID), "--name", f"{kind} owner"),
                *("--type", kind, "--role", "owner", "--json"),
            ],
            env,
        )
        for kind in ("requestSigning", "secretKey")
    }
    with ExitStack() as stack:
        first = stack.enter_context(running(env, directory / "first.log"))
        second = stack.enter_context(running(env, directory / "second.log"))
        yield first, second, owners


def eventually_429(url: str, headers: dict[str, str]) -> int:
    """The status a replica gives once it has reloaded the blocks (within a generous 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        status = httpx.get(url, headers=headers, timeout=10).status_code
        if status == 429 or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_a_signature_used_on_one_replica_is_used_on_the_other(
    database_url: str, store: str, tmp_path: Path
) -> None:
    with two_replicas(database_url, store, tmp_path) as (first, second, owners):
        signing = owners["requestSigning"]
        keys_path = f"/accounts/{ACCOUNT_ID}/api-keys"

        def sign(path: str, body: bytes = b"") -> dict[str, str]:
            # Both replicas answer the same Host header here, as behind one proxy.
            url = f"{first.base_url}{path}"
            return signed_headers(signing["key"], signing["secret"], url, body)

        victim = httpx.post(
            first.base_url + keys_path,
            json={"name": "victim", "type": "secretKey", "role": "browse"},
            headers=bearer_headers(owners["secretKey"]["secret"]),
        ).json()["key"]
        victim_path = f"{keys_path}/{victim}"
        captured = sign(victim_path)
        host = {"Host": first.base_url.removeprefix("http://")}
        read = httpx.get(first.base_url + victim_path, headers=captured)
        replayed = httpx.delete(second.base_url + victim_path, headers=captured | host)
        victim_after = httpx.get(
            second.base_url + victim_path, headers=bearer_headers(owners["secretKey"]["secret"])
        ).json()

        body = b'{"name": "made once", "type": "secretKey", "role": "browse"}'
        create = sign(keys_path, body) | JSON | host
        creates = [
            httpx.post(server.base_url + keys_path, content=body, headers=create).status_code
            for server in (first, second, first)
        ]
        listed = httpx.get(
            second.base_url + keys_path, headers=bearer_headers(owners["secretKey"]["secret"])
        ).json()["data"]

    assert read.status_code == 200
    assert replayed.status_code == 401, replayed.text
    assert victim_after["revoked_at"] is None
    assert creates == [201, 401, 401]
    assert [key["name"] for key in listed].count("made once") == 1


def test_failures_on_two_replicas_add_up_and_rotating_forwarded_entries_do_not_escape(
    database_url: str, store: str, tmp_path: Path
) -> None:
    # The loopback peer is not a trusted proxy here: its X-Forwarded-For is the client's own.
    with two_replicas(database_url, store, tmp_path, APIKEYS_FORWARDED_ALLOW_IPS="192.0.2.254") as (
        first,
        second,
        owners,
    ):
        answers = [
            httpx.get(
                (first, second)[n % 2].base_url + "/me",
                headers=BAD | {"X-Forwarded-For": f"203.0.113.{n}"},
            ).status_code
            for n in range(LIMIT + 1)
        ]
        valid = bearer_headers(owners["secretKey"]["secret"]) | {"X-Forwarded-For": "198.51.100.1"}
        on_the_other = eventually_429(second.base_url + "/me", valid)
        health = httpx.get(second.base_url + "/healthz").status_code

    assert answers == [401] * LIMIT + [429]
    assert on_the_other == 429
    assert health == 200


def test_the_audit_trail_records_the_address_a_trusted_proxy_saw(
    database_url: str, store: str, tmp_path: Path
) -> None:
    # The loopback peer is the trusted proxy (the default): the entry it appended counts,
    # never what the client wrote before it, and never something that is not an address.
    with two_replicas(database_url, store, tmp_path) as (first, _, owners):
        owner = bearer_headers(owners["secretKey"]["secret"]) | JSON
        keys_url = f"{first.base_url}/accounts/{ACCOUNT_ID}/api-keys"
        for name, forwarded in (
            ("through the proxy", "I-was-never-here, 198.51.100.23"),
            ("forged only", "I-was-never-here"),
        ):
            made = httpx.post(
                keys_url,
                json={"name": name, "type": "secretKey", "role": "browse"},
                headers=owner | {"X-Forwarded-For": forwarded},
            )
            assert made.status_code == 201, made.text
        events = httpx.get(
            f"{first.base_url}/accounts/{ACCOUNT_ID}/audit-events", headers=owner
        ).json()["data"]

    addresses = [event["client_address"] for event in events if event["action"].endswith("created")]
    assert addresses[:2] == ["127.0.0.1", "198.51.100.23"]

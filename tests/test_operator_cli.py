"""An operator's commands (accounts, projects and keys listed, keys revoked, tables or JSON,
quiet migrations) and the quickstart `make run` starts, all as child processes."""

from __future__ import annotations

import json
import re
import shlex
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from apikeys.cli import QUICKSTART_FILENAME
from tests import servers
from tests.conftest import random_master_key
from tests.live import LiveService, live_fixture  # noqa: F401  (the fixture)
from tests.signing import bearer_headers, signed_headers

pytestmark = pytest.mark.full

Run = subprocess.CompletedProcess[str]


def apikeys(live: LiveService, *args: str) -> Run:
    return subprocess.run(
        [servers.APIKEYS, *args], env=live.env, capture_output=True, text=True, timeout=120
    )


def succeeded(run: Run) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout


def json_of(run: Run) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(succeeded(run))
    return parsed


def table(run: Run) -> list[list[str]]:
    """A table's rows (the header first), split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in succeeded(run).splitlines()]


def test_accounts_list_shows_each_account_as_a_table_and_as_json(live: LiveService) -> None:
    human = table(apikeys(live, "accounts", "list"))
    machine = json_of(apikeys(live, "accounts", "list", "--json"))

    assert human[0] == ["id", "name", "created_at"]
    assert [row[:2] for row in human[1:]] == [[str(live.account_id), "Acme"]]
    assert [(row["id"], row["name"]) for row in machine["data"]] == [  # type: ignore[attr-defined]
        (live.account_id, "Acme")
    ]


def test_projects_list_shows_the_accounts_projects(live: LiveService) -> None:
    made = json_of(
        apikeys(
            live,
            "projects",
            "create",
            "--account",
            str(live.account_id),
            "--name",
            "Shop",
            "--json",
        )
    )

    listed = json_of(apikeys(live, "projects", "list", "--account", str(live.account_id), "--json"))
    human = table(apikeys(live, "projects", "list", "--account", str(live.account_id)))

    names = {row["id"]: row["name"] for row in listed["data"]}  # type: ignore[attr-defined]
    assert names[made["id"]] == "Shop" and names[1] == "Website"
    assert human[0] == ["id", "account_id", "name", "created_at"]
    assert [str(made["id"]), str(live.account_id), "Shop"] in [row[:3] for row in human[1:]]


def test_listing_the_projects_of_an_unknown_account_is_refused_clearly(live: LiveService) -> None:
    run = apikeys(live, "projects", "list", "--account", "999")

    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == "apikeys: Account 999 was not found"
    assert "Traceback" not in run.stderr


def test_create_commands_print_fields_for_people_and_json_only_with_json(
    live: LiveService,
) -> None:
    account = ("keys", "create", "--account", str(live.account_id), "--type", "secretKey")
    human = apikeys(live, *account, "--name", "for a person")
    machine = json_of(apikeys(live, *account, "--name", "for a program", "--json"))

    fields = dict(row for row in table(human) if len(row) == 2)
    assert not succeeded(human).lstrip().startswith("{")
    assert fields["name"] == "for a person"
    assert fields["projects"] == "all" and fields["expires_at"] == "never"
    shows_the_secret = fields["secret"].startswith("cvsk_")
    assert shows_the_secret
    assert "shown only now" in human.stdout
    prints_the_secret = str(machine["secret"]).startswith("cvsk_")
    assert machine["name"] == "for a program" and prints_the_secret


def test_keys_list_shows_no_secret_and_revoked_keys_only_when_asked(live: LiveService) -> None:
    made = json_of(
        apikeys(
            live,
            "keys",
            "create",
            "--account",
            str(live.account_id),
            "--name",
            "to revoke",
            "--json",
        )
    )
    succeeded(
        apikeys(
            live, "keys", "revoke", "--account", str(live.account_id), "--key", str(made["key"])
        )
    )

    active = apikeys(live, "keys", "list", "--account", str(live.account_id), "--json")
    everything = json_of(
        apikeys(
            live, "keys", "list", "--account", str(live.account_id), "--include-revoked", "--json"
        )
    )
    human = table(apikeys(live, "keys", "list", "--account", str(live.account_id)))

    shows_a_secret = any(word in active.stdout for word in ('"secret"', "cvsk_", "cvrs_"))
    assert not shows_a_secret
    assert made["key"] not in [row["key"] for row in json_of(active)["data"]]  # type: ignore[attr-defined]
    revoked = [row for row in everything["data"] if row["key"] == made["key"]]  # type: ignore[attr-defined]
    assert revoked and revoked[0]["revoked_at"] is not None
    assert human[0] == [
        "key",
        "name",
        "type",
        "role",
        "projects",
        "created_at",
        "expires_at",
        "revoked_at",
    ]
    assert live.bearer_owner.key in [row[0] for row in human[1:]]


def test_keys_revoke_turns_an_owner_key_away_on_the_running_server(live: LiveService) -> None:
    owner = json_of(
        apikeys(
            live,
            *("keys", "create", "--account", str(live.account_id), "--name", "leaked owner"),
            *("--type", "secretKey", "--role", "owner", "--json"),
        )
    )
    me = f"{live.base_url}/me"
    assert httpx.get(me, headers=bearer_headers(str(owner["secret"]))).status_code == 200

    revoked = json_of(
        apikeys(
            live,
            "keys",
            "revoke",
            "--account",
            str(live.account_id),
            "--key",
            str(owner["key"]),
            "--json",
        )
    )
    again = apikeys(
        live, "keys", "revoke", "--account", str(live.account_id), "--key", str(owner["key"])
    )

    assert revoked["key"] == owner["key"] and revoked["revoked_at"] is not None
    assert "secret" not in revoked
    assert succeeded(again)
    deadline = time.monotonic() + 10  # the server's key cache lets go within a second
    while httpx.get(me, headers=bearer_headers(str(owner["secret"]))).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still authenticates"
        time.sleep(0.1)
    audit = httpx.get(
        f"{live.base_url}/accounts/{live.account_id}/audit-events",
        headers=bearer_headers(live.bearer_owner.secret),
    ).json()["data"]
    revocations = [
        event
        for event in audit
        if event["action"] == "api_key.revoked" and event["target_key"] == owner["key"]
    ]
    assert len(revocations) == 1
    assert revocations[0]["actor_key"] is None
    assert revocations[0]["client_address"] == "command line"


def test_revoking_an_unknown_key_is_refused_clearly(live: LiveService) -> None:
    run = apikeys(live, "keys", "revoke", "--account", str(live.account_id), "--key", "nosuchkey")

    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == (
        f"apikeys: API key nosuchkey was not found in account {live.account_id}"
    )


def test_migrations_are_quiet_unless_verbose(live: LiveService) -> None:
    quiet = apikeys(live, "accounts", "list")
    verbose = apikeys(live, "accounts", "list", "--verbose")

    succeeded(quiet)
    succeeded(verbose)
    assert quiet.stderr == ""
    assert "alembic" in verbose.stderr


# The quickstart: SQLite in a directory of its own, as `make run` in a fresh clone.


def stop_and_wait(quickstart: servers.Quickstart) -> None:
    servers.stop(quickstart.server)
    quickstart.server.process.wait(timeout=30)


def started(directory: Path, port: int | None = None) -> servers.Quickstart:
    quickstart = servers.start_quickstart(directory, servers.bare_environment(), port)
    servers.wait_ready(quickstart.server, timeout=90)
    return quickstart


def status_with(quickstart: servers.Quickstart, exports: dict[str, str]) -> tuple[int, int]:
    """GET /me with the Bearer owner key, then signed with the signing owner key."""
    url = f"{quickstart.server.base_url}/me"
    bearer = httpx.get(url, headers=bearer_headers(exports["OWNER"]))
    signed = httpx.get(
        url, headers=signed_headers(exports["SIGNING_KEY"], exports["SIGNING_SECRET"], url)
    )
    return bearer.status_code, signed.status_code


def test_quickstart_on_a_busy_port_stops_before_making_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        quickstart = servers.start_quickstart(tmp_path, servers.bare_environment(), port)
        exit_code = quickstart.server.process.wait(timeout=60)

    assert exit_code != 0
    last_line = quickstart.server.logs().strip().splitlines()[-1]
    assert last_line.startswith(f"apikeys: cannot listen on 127.0.0.1:{port}")
    printed_nothing = quickstart.output() == ""
    assert printed_nothing
    assert sorted(path.name for path in tmp_path.iterdir()) == ["quickstart.log", "quickstart.out"]


def test_quickstart_prints_two_owner_keys_reuses_them_and_replaces_them_when_lost(
    tmp_path: Path,
) -> None:
    first = started(tmp_path)
    try:
        made = first.exports()
        statuses = status_with(first, made)
        me = httpx.get(f"{first.server.base_url}/me", headers=bearer_headers(made["OWNER"])).json()
    finally:
        stop_and_wait(first)
    key_file = tmp_path / QUICKSTART_FILENAME
    saved_mode = stat.S_IMODE(key_file.stat().st_mode)

    second = started(tmp_path)
    try:
        reused = second.exports()
        reused_statuses = status_with(second, reused)
    finally:
        stop_and_wait(second)
    key_file.unlink()
    third = started(tmp_path)
    try:
        replaced = third.exports()
        old_statuses = status_with(third, made)
        new_statuses = status_with(third, replaced)
    finally:
        stop_and_wait(third)

    assert sorted(made) == ["OWNER", "SIGNING_KEY", "SIGNING_SECRET"]
    secrets_shaped = made["OWNER"].startswith("cvsk_") and made["SIGNING_SECRET"].startswith(
        "cvrs_"
    )
    assert secrets_shaped
    assert statuses == (200, 200)
    assert (me["role"], me["type"], me["account_id"]) == ("owner", "secretKey", 1)
    assert saved_mode == 0o600
    said_new, said_reused = "new;" in first.output(), "reused" in second.output()
    assert said_new and said_reused
    same_keys = reused == made
    assert same_keys and reused_statuses == (200, 200)
    new_keys = replaced["OWNER"] != made["OWNER"] and replaced["SIGNING_KEY"] != made["SIGNING_KEY"]
    assert new_keys
    assert old_statuses == (401, 401) and new_statuses == (200, 200)


def test_a_schema_newer_than_this_release_is_refused_clearly(tmp_path: Path) -> None:
    database = tmp_path / "apikeys.db"
    env = servers.environment(f"sqlite:///{database}", random_master_key())
    servers.cli(["migrate"], env)
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_a_later_release'")

    run = subprocess.run(
        [servers.APIKEYS, "accounts", "list"], env=env, capture_output=True, text=True, timeout=60
    )

    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "apikeys: cannot bring the schema up to date: "
        "Can't locate revision identified by '9999_from_a_later_release'"
    )


def test_sign_curl_prints_no_progress_and_fails_on_an_error_status_showing_the_problem(
    live: LiveService,
) -> None:
    env = {**live.env, "WRONG_SECRET": live.bearer_owner.secret}
    command = succeeded(
        subprocess.run(
            [
                *(servers.APIKEYS, "sign", "--key", live.signing_owner.key),
                *("--secret-env", "WRONG_SECRET", "--url", f"{live.base_url}/me", "--curl"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    )

    sent = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)

    assert shlex.split(command)[:3] == ["curl", "-sS", "--fail-with-body"]
    assert sent.returncode == 22  # curl's "the server answered an error status"
    assert json.loads(sent.stdout)["status"] == 401
    assert sent.stderr.strip() == "curl: (22) The requested URL returned error: 401"

"""The `apikeys` command (SPEC §6), run as a child process, and the keys it makes at work
against a real `apikeys serve` on the same database."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from apikeys.config import MASTER_KEY_FILENAME
from apikeys.security import has_valid_checksum
from tests import servers
from tests.conftest import BACKENDS, new_postgres_database, random_master_key
from tests.signing import bearer_headers, signed_headers

pytestmark = pytest.mark.full

Run = subprocess.CompletedProcess[str]
NO_DATABASE = "postgresql://postgres@127.0.0.1:1/apikeys"


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> Run:
    return subprocess.run(
        [servers.APIKEYS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def without_master_key(database_url: str) -> dict[str, str]:
    env = servers.environment(database_url, "")
    del env["APIKEYS_MASTER_KEY"]
    return env


@dataclass
class Deployment:
    backend: str
    directory: Path
    server: servers.Server
    runs: dict[str, Run]
    master_key_file_at_start: str | None
    env: dict[str, str]

    def json(self, run: str) -> dict[str, object]:
        result = self.runs[run]
        assert result.returncode == 0, result.stderr
        output: dict[str, object] = json.loads(result.stdout)
        return output


def _in_parallel(
    directory: Path, env: dict[str, str], commands: dict[str, Sequence[str]]
) -> dict[str, Run]:
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {
            name: pool.submit(run_cli, *args, env=env, cwd=directory)
            for name, args in commands.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A fresh database set up only with the command line, and a server on it.

    Commands that do not depend on each other run side by side to keep this quick.
    """
    backend: str = request.param
    directory = tmp_path_factory.mktemp(f"cli-{backend}")
    with ExitStack() as stack:
        if backend == "sqlite":
            # No master key: the SQLite default makes one beside the database.
            env = without_master_key(f"sqlite:///{directory / 'apikeys.db'}")
        else:
            url = stack.enter_context(new_postgres_database())
            env = servers.environment(url, random_master_key())
        server = servers.start(env, directory / "server.log")
        stack.callback(servers.stop, server)
        account = ["accounts", "create", "--json"]
        project = ["projects", "create", "--json", "--account"]
        key = ["keys", "create", "--json", "--account"]
        # The server, `migrate` and the first accounts all start on an empty database at once,
        # as replicas and a deploy step would: their migrations must queue, not collide.
        runs = _in_parallel(
            directory,
            env,
            {
                "migrate": ["migrate"],
                "account": [*account, "--name", "N", "--id", "7"],
                "first account": [*account, "--name", "First", "--id", "1"],
            },
        )
        runs |= _in_parallel(
            directory,
            env,
            {
                "project": [*project, "7", "--name", "P", "--id", "70"],
                "owner": [*key, "7", "--name", "K", "--role", "owner", "--type", "secretKey"],
                "account without id": [*account, "--name", "Later"],
                "duplicate account": [*account, "--name", "Again", "--id", "7"],
                "key in unknown account": [*key, "999", "--name", "K"],
            },
        )
        runs |= _in_parallel(
            directory,
            env,
            {
                "signing": [
                    *key,
                    "7",
                    "--name",
                    "S",
                    "--type",
                    "requestSigning",
                    "--projects",
                    "70",
                ],
            },
        )
        servers.wait_ready(server, timeout=90)
        key_file = directory / MASTER_KEY_FILENAME
        yield Deployment(
            backend,
            directory,
            server,
            runs,
            key_file.read_text() if key_file.exists() else None,
            env,
        )


def test_migrate_succeeds_and_says_so(deployment: Deployment) -> None:
    assert deployment.json("migrate") == {"migrated": True}


def test_accounts_and_projects_create_print_what_they_made(deployment: Deployment) -> None:
    assert deployment.json("account") == {"id": 7, "name": "N"}
    assert deployment.json("first account") == {"id": 1, "name": "First"}
    assert deployment.json("project") == {"id": 70, "account_id": 7, "name": "P"}


def test_an_account_without_id_after_explicit_ids_gets_a_free_id(deployment: Deployment) -> None:
    made = deployment.json("account without id")

    assert made["name"] == "Later"
    assert made["id"] not in (1, 7)


def test_keys_create_prints_the_same_fields_as_the_http_201(deployment: Deployment) -> None:
    owner = deployment.json("owner")
    signing = deployment.json("signing")
    over_http = httpx.post(
        f"{deployment.server.base_url}/accounts/7/api-keys",
        json={"name": "made over HTTP"},
        headers=bearer_headers(str(owner["secret"])),
    )

    assert over_http.status_code == 201, over_http.text
    assert list(owner) == list(signing) == list(over_http.json())
    assert (owner["type"], owner["role"], owner["projects"]) == ("secretKey", "owner", None)
    assert (signing["type"], signing["role"], signing["projects"]) == (
        "requestSigning",
        "browse",
        [70],
    )
    assert owner["account_id"] == signing["account_id"] == 7
    assert has_valid_checksum(str(owner["secret"]), "cvsk_")
    assert has_valid_checksum(str(signing["secret"]), "cvrs_")


def test_a_signing_key_from_the_cli_authenticates_against_the_server(
    deployment: Deployment,
) -> None:
    signing = deployment.json("signing")
    url = f"{deployment.server.base_url}/me"

    response = httpx.get(
        url, headers=signed_headers(str(signing["key"]), str(signing["secret"]), url)
    )

    assert response.status_code == 200, response.text
    assert response.json()["key"] == signing["key"]


@pytest.mark.full
def test_keys_roll_prints_a_new_key_that_works_while_the_old_one_winds_down(
    deployment: Deployment,
) -> None:
    env = deployment.env
    made = run_cli(
        *("keys", "create", "--json", "--account", "7", "--name", "to roll", "--role", "review"),
        *("--type", "secretKey"),
        env=env,
        cwd=deployment.directory,
    )
    old = json.loads(made.stdout)

    rolled = run_cli(
        *("keys", "roll", "--json", "--account", "7", "--key", str(old["key"])),
        *("--expires-in", "0"),
        env=env,
        cwd=deployment.directory,
    )

    assert rolled.returncode == 0, rolled.stderr
    new = json.loads(rolled.stdout)
    assert new["rolled_from"] == old["key"]
    assert (new["name"], new["role"], new["type"]) == ("to roll", "review", "secretKey")
    me = f"{deployment.server.base_url}/me"
    assert httpx.get(me, headers=bearer_headers(str(new["secret"]))).status_code == 200
    assert httpx.get(me, headers=bearer_headers(str(old["secret"]))).status_code == 401


@pytest.mark.full
def test_keys_roll_refuses_an_expires_in_over_a_week(deployment: Deployment) -> None:
    result = run_cli(
        *("keys", "roll", "--json", "--account", "7", "--key", "x" * 24),
        *("--expires-in", "604801"),
        env=deployment.env,
        cwd=deployment.directory,
    )

    assert_refused_clearly(result, "expires_in")


def assert_refused_clearly(result: Run, message: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("apikeys: ")
    assert message in last_line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("duplicate account", "Account 7 already exists"),
        ("key in unknown account", "Account 999 was not found"),
    ],
)
def test_a_refused_command_exits_non_zero_with_a_clear_message(
    deployment: Deployment, run: str, message: str
) -> None:
    result = deployment.runs[run]

    assert_refused_clearly(result, message)


def test_master_key_file_is_private_and_kept_only_for_the_sqlite_default(
    deployment: Deployment,
) -> None:
    key_file = deployment.directory / MASTER_KEY_FILENAME

    if deployment.backend == "sqlite":
        assert key_file.exists()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # Every later command used the same key: the CLI's keys work on the server above.
        assert key_file.read_text() == deployment.master_key_file_at_start
    else:
        assert not key_file.exists()
        assert deployment.master_key_file_at_start is None
    assert not list(deployment.directory.glob(f".{MASTER_KEY_FILENAME}.*"))


def test_postgresql_without_master_key_refuses_naming_the_variable(tmp_path: Path) -> None:
    env = without_master_key(NO_DATABASE)

    runs = _in_parallel(
        tmp_path,
        env,
        {
            "keys": ["keys", "create", "--account", "1", "--name", "K", "--json"],
            "serve": ["serve", "--host", "127.0.0.1", "--port", "1"],
        },
    )

    for result in runs.values():
        assert result.returncode != 0
        assert "APIKEYS_MASTER_KEY" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / MASTER_KEY_FILENAME).exists()


def test_invalid_key_options_are_refused_before_touching_the_database(tmp_path: Path) -> None:
    env = without_master_key(f"sqlite:///{tmp_path / 'apikeys.db'}")
    key = ["keys", "create", "--json", "--account", "7"]

    runs = _in_parallel(
        tmp_path,
        env,
        {
            "name": [*key, "--name", "   "],
            "control character": [*key, "--name", "a\x07b"],
            "--projects": [*key, "--name", "K", "--projects", "1,x"],
        },
    )

    for message, result in runs.items():
        assert_refused_clearly(result, message)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_database_is_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli("migrate", env=servers.environment(NO_DATABASE, ""), cwd=tmp_path)

    assert_refused_clearly(result, "the database did not answer")

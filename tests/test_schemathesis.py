"""Schemathesis against a real server, from the service's own OpenAPI document: every phase
(the documented examples, boundary coverage, fuzzing, stateful sequences), authenticated
with an owner key, must meet no server error and no answer the document does not describe."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.live import LiveService, database_for, live_service

pytestmark = pytest.mark.full

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# Per backend; fuzzing and stateful sequences repeat until it is spent.
MAX_SECONDS = 45


@pytest.fixture(name="live", scope="module", params=BACKENDS)
def live_without_throttle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    """A server whose failed-authentication throttle is off: the generated requests include
    hundreds of refused credentials a minute, and the throttle would rightly answer the rest of
    the run 429 (its own tests are in test_throttle.py and test_replicas.py)."""
    directory = tmp_path_factory.mktemp("live")
    database_url = database_for(request.param, request, directory)
    with live_service(database_url, directory, APIKEYS_AUTH_FAILURE_LIMIT="0") as service:
        yield service


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live: LiveService, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    # The live account, so generated requests reach validation and storage rather than
    # stopping at the 404 of an account that is not the caller's; and revocations aimed at
    # the other owner key, since a stateful sequence would otherwise find the calling key
    # through /me, revoke it, and spend the rest of the run on 401s.
    config.write_text(
        f"[parameters]\naccount_id = {live.account_id}\n\n"
        f'[[operations]]\ninclude-method = "DELETE"\n'
        f'parameters = {{ key = "{live.signing_owner.key}" }}\n'
    )
    report = tmp_path / "report.json"

    run = subprocess.run(
        [
            SCHEMATHESIS, "--config-file", str(config), "run", f"{live.base_url}/openapi.json",
            "--header", f"Authorization: Bearer {live.bearer_owner.secret}",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--checks", ",".join(CHECKS),
            "--max-examples", "10",
            "--max-time", str(MAX_SECONDS),
            "--seed", "20261203",
            "--workers", "1",
            "--generation-database", "none",
            "--suppress-health-check", "all",
            "--generation-with-security-parameters", "false",
            "--no-color",
            "--report", "json", "--report-json-path", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS * 3,
        cwd=tmp_path,  # where it keeps its own state
    )  # fmt: skip

    output = run.stdout.replace(live.bearer_owner.secret, "<owner secret>")
    assert run.returncode == 0, output[-8000:]
    summary = json.loads(report.read_text())
    assert summary["failures"] == summary["errors"] == []
    assert summary["test_cases"]["with_failures"] == 0
    assert summary["test_cases"]["generated"] > 100
    assert summary["operations"]["tested"] == summary["operations"]["total"]
    # Each operation's logic was reached, not only its refusals.
    assert summary["warnings"]["rate_limited"] == summary["warnings"]["missing_test_data"] == []

"""apikeys.client and `apikeys sign`, against a real `apikeys serve` over real HTTP."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import httpx

from apikeys.client import BearerAuth, ConvertSigningAuth
from apikeys.security import generate_secret
from tests import servers
from tests.live import LiveService, live_fixture  # noqa: F401

CREATE_BODY = '{"name": "Nightly Data Sync Script", "role": "edit", "projects": [1]}'


def sign(live: LiveService, *args: str, secret: str | None = None) -> str:
    """Run `apikeys sign` with the signing owner's key and the secret in an env variable."""
    env = {**live.env, "SIGNING_SECRET": secret or live.signing_owner.secret}
    key = live.signing_owner.key
    done = subprocess.run(
        [servers.APIKEYS, "sign", "--key", key, "--secret-env", "SIGNING_SECRET", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_signing_auth_creates_a_key_and_lists_with_a_query_over_real_http(
    live: LiveService,
) -> None:
    auth = ConvertSigningAuth(live.signing_owner.key, live.signing_owner.secret)

    with httpx.Client(auth=auth) as http:
        created = http.post(
            live.keys_url,
            content=CREATE_BODY.encode(),
            headers={"Content-Type": "application/json"},
        )
        listed = http.get(live.keys_url, params={"limit": 5, "include_revoked": "true"})

    assert created.status_code == 201
    assert created.json()["name"] == "Nightly Data Sync Script"
    assert listed.status_code == 200
    assert created.json()["key"] in [key["key"] for key in listed.json()["data"]]


def test_signing_auth_signs_a_json_body_that_httpx_encodes(live: LiveService) -> None:
    auth = ConvertSigningAuth(live.signing_owner.key, live.signing_owner.secret)

    response = httpx.post(live.keys_url, json={"name": "Café ✓ integration"}, auth=auth)

    assert response.status_code == 201
    assert response.json()["name"] == "Café ✓ integration"


def test_signing_auth_with_a_wrong_secret_is_401(live: LiveService) -> None:
    auth = ConvertSigningAuth(live.signing_owner.key, generate_secret("cvrs_"))

    response = httpx.get(f"{live.base_url}/me", auth=auth)

    assert response.status_code == 401
    assert "The signature does not match" in response.json()["detail"]


def test_bearer_auth_reads_the_calling_key(live: LiveService) -> None:
    response = httpx.get(f"{live.base_url}/me", auth=BearerAuth(live.bearer_owner.secret))

    assert response.status_code == 200
    assert response.json()["key"] == live.bearer_owner.key


def test_auth_reprs_hide_the_secret() -> None:
    secret = generate_secret("cvrs_")

    shown = repr(ConvertSigningAuth("a" * 24, secret)) + repr(BearerAuth(secret))

    secret_shown = secret[-8:] in shown
    assert not secret_shown
    assert "<hidden>" in shown


def test_sign_prints_a_curl_command_that_creates_a_key(live: LiveService) -> None:
    command = sign(
        live, "--method", "POST", "--url", live.keys_url, "--data", CREATE_BODY, "--curl"
    )

    secret_in_command = live.signing_owner.secret in command
    assert not secret_in_command
    done = subprocess.run(
        [*shlex.split(command), "--silent", "--output", "/dev/null", "--write-out", "%{http_code}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "201"


def test_sign_prints_three_headers_that_sign_a_file_body_with_a_query(
    live: LiveService, tmp_path: Path
) -> None:
    body_file = tmp_path / "body.json"
    body_file.write_bytes(CREATE_BODY.encode())
    url = f"{live.keys_url}?note=a%20b"

    printed = sign(live, "--method", "POST", "--url", url, "--data-file", str(body_file))

    headers = dict(line.split(": ", 1) for line in printed.splitlines())
    assert list(headers) == ["Convert-Application-ID", "Expires", "Authorization"]
    response = httpx.post(
        url,
        content=body_file.read_bytes(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201


def test_sign_with_the_wrong_secret_makes_a_request_the_server_refuses(live: LiveService) -> None:
    printed = sign(live, "--url", f"{live.base_url}/me", secret=generate_secret("cvrs_"))

    headers = dict(line.split(": ", 1) for line in printed.splitlines())
    assert httpx.get(f"{live.base_url}/me", headers=headers).status_code == 401


def test_sign_refuses_a_secret_given_as_an_argument_or_a_missing_variable() -> None:
    as_argument = subprocess.run(
        [servers.APIKEYS, "sign", "--key", "k" * 24, "--secret", "x", "--url", "http://h/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    unset = subprocess.run(
        [
            *(servers.APIKEYS, "sign", "--key", "k" * 24),
            *("--secret-env", "APIKEYS_TEST_UNSET", "--url", "http://h/"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )

    assert as_argument.returncode == 2
    assert unset.returncode != 0 and "$APIKEYS_TEST_UNSET" in unset.stderr

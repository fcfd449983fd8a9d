"""No secret in any log (SPEC §8): everything logged during a full run, by every logger at
DEBUG in process, and everything a real `apikeys serve` writes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from apikeys.config import Settings
from apikeys.domain import KeyType, Role
from apikeys.log import JsonFormatter, TextFormatter
from apikeys.security import generate_secret
from tests import servers
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, Credential, World
from tests.signing import bearer_headers, signed_headers

KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"
CHECKSUM_LENGTH = 6
NAMED_LOGGERS = ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.pool", "uvicorn", "alembic")


class EverythingHandler(logging.Handler):
    """Keeps each record as the service's formatters would write it, and all its attributes."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.entries: list[tuple[str, str]] = []
        self._formatters = (JsonFormatter(), TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        texts = [formatter.format(record) for formatter in self._formatters]
        texts.append(repr(vars(record)))
        self.entries.append((record.name, "\n".join(texts)))


@pytest.fixture(autouse=True)
def everything_logged() -> Iterator[EverythingHandler]:
    """Root at DEBUG and every logger, including library ones, enabled and propagating."""
    handler = EverythingHandler()
    root = logging.getLogger()
    names = {*logging.root.manager.loggerDict, *NAMED_LOGGERS}
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger, logger.level, logger.disabled, logger.propagate) for logger in loggers]
    saved_root_level = root.level
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
        logger.propagate = True
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root_level)
        for logger, level, disabled, propagate in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.propagate = propagate


def sensitive_forms(value: str) -> list[str]:
    forms = [value]
    if value.startswith(("cvsk_", "cvrs_")):
        forms.append(value[len("cvsk_") : -CHECKSUM_LENGTH])  # the random part
    return forms


async def full_run(world: World) -> list[str]:
    """Create keys of both types, use them, and fail in every common way.

    Returns every secret and credential header value sent, none of which may be logged.
    """
    sent: list[str] = []

    async def remember_credentials(request: httpx.Request) -> None:
        for header in ("authorization", "convert-authorization"):
            if header in request.headers:
                sent.append(request.headers[header])
                sent.append(request.headers[header].split("=", 1)[-1].upper())

    world.client.event_hooks["request"].append(remember_credentials)
    owner = await world.mint(role=Role.OWNER)
    made = {}
    for key_type in KeyType:
        response = await world.request(
            owner, "POST", KEY_PATH, {"name": f"a {key_type} key", "type": key_type.value}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        made[key_type] = Credential(body["key"], body["secret"], key_type, body)
    signer, bearer = made[KeyType.REQUEST_SIGNING], made[KeyType.SECRET_KEY]
    mistyped = bearer.secret[:20] + ("a" if bearer.secret[20] != "a" else "b") + bearer.secret[21:]
    unknown = generate_secret("cvsk_")
    base = str(world.client.base_url).rstrip("/")

    expected = {
        "signed /me": (await world.request(signer, "GET", "/me"), 200),
        "bearer /me": (await world.request(bearer, "GET", "/me"), 200),
        "bad signature": (
            await world.client.post(
                KEY_PATH,
                content=b'{"name": "sent"}',
                headers={
                    "Content-Type": "application/json",
                    **signed_headers(signer.key, signer.secret, base + KEY_PATH, b'{"name": "x"}'),
                },
            ),
            401,
        ),
        "mistyped bearer": (await world.client.get("/me", headers=bearer_headers(mistyped)), 401),
        "unknown bearer": (await world.client.get("/me", headers=bearer_headers(unknown)), 401),
        "signing secret as bearer": (
            await world.client.get("/me", headers=bearer_headers(signer.secret)),
            401,
        ),
        "secret as a name": (
            await world.request(owner, "POST", KEY_PATH, {"name": signer.secret * 3}),
            422,
        ),
        "secret in an unknown field": (
            await world.request(owner, "POST", KEY_PATH, {"name": "k", "secret": bearer.secret}),
            422,
        ),
        "too large": (
            await world.request(owner, "POST", KEY_PATH, {"name": bearer.secret * 2000}),
            413,
        ),
        "not JSON": (
            await world.request(
                owner,
                "POST",
                KEY_PATH,
                raw=signer.secret.encode(),
                headers={"Content-Type": "text/plain"},
            ),
            415,
        ),
        "unknown path": (await world.request(bearer, "GET", "/no/such/path"), 404),
        "other account": (
            await world.request(
                owner, "POST", f"/accounts/{OTHER_ACCOUNT_ID}/api-keys", {"name": "k"}
            ),
            404,
        ),
    }
    world.client.event_hooks["request"].remove(remember_credentials)

    assert {name: response.status_code for name, (response, _) in expected.items()} == {
        name: status for name, (_, status) in expected.items()
    }
    secrets = [owner.secret, signer.secret, bearer.secret, mistyped, unknown]
    return [form for value in [*secrets, *sent] for form in sensitive_forms(value)]


def leaks(texts: list[tuple[str, str]], sensitive: list[str]) -> list[tuple[str, int]]:
    """(where, which) for each sensitive value found, never the value itself."""
    return [
        (where, index)
        for where, text in texts
        for index, value in enumerate(sensitive)
        if value in text
    ]


async def test_no_log_record_of_a_full_run_holds_a_secret(
    world: World, everything_logged: EverythingHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    sensitive = await full_run(world)
    await asyncio.sleep(0)  # the access log writes at the end of a loop turn
    access_log = capsys.readouterr().err

    logged = {name for name, _ in everything_logged.entries}
    assert "sqlalchemy.engine.Engine" in logged
    assert access_log.count('"logger":"apikeys.access"') == 14  # a line per request made
    assert len(sensitive) > 10
    assert leaks([*everything_logged.entries, ("access log", access_log)], sensitive) == []


@pytest.mark.full
async def test_a_real_server_logs_no_secret(
    world: World, settings: Settings, tmp_path: Path
) -> None:
    assert settings.master_key is not None
    env = servers.environment(
        settings.database_url, settings.master_key.get_secret_value(), APIKEYS_LOG_LEVEL="DEBUG"
    )
    with servers.running(env, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            sensitive = await full_run(World(world.services, http))
    output = server.logs()

    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(entry["logger"] == "apikeys.access" for entry in entries)
    assert leaks([("server output", output)], sensitive) == []

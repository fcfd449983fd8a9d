"""The `apikeys` command: serve, migrate, and bootstrap accounts, projects and keys."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from apikeys.api.app import create_app
from apikeys.api.schemas import ApiKeyCreate, ApiKeyRoll, created_body
from apikeys.client import DEFAULT_LIFETIME_SECONDS, signature_headers
from apikeys.config import ConfigurationError, Settings
from apikeys.domain import COMMAND_LINE, KeyType, Role
from apikeys.errors import ApiError, InvalidInput
from apikeys.log import configure_logging
from apikeys.service import accounts, keys
from apikeys.services import Services, build_services
from apikeys.storage.database import AsyncSession
from apikeys.storage.migrations import DatabaseUnavailable, upgrade_to_head, wait_for_database

DEMO_ACCOUNT_ID = 1
DEMO_PROJECT_ID = 1

# Shared with the benchmark's bare-FastAPI baseline, so both run on the same server.
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "log_config": None,
    "access_log": False,  # the service writes its own access line (apikeys.api.middleware)
    "server_header": False,
}


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


async def _with_services(settings: Settings, work: Callable[[Services], Awaitable[Any]]) -> Any:
    # A missing master key is refused before the database is touched.
    settings.load_master_key()
    await upgrade_to_head(settings.async_database_url)
    async with build_services(settings) as services:
        return await work(services)


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    async def in_transaction(services: Services) -> Any:
        async with services.database.transaction() as session:
            return await work(session)

    return await _with_services(settings, in_transaction)


def _key_request(args: argparse.Namespace) -> keys.KeyRequest:
    try:
        projects = (
            [int(item) for item in args.projects.split(",") if item.strip()]
            if args.projects
            else None
        )
    except ValueError:
        raise InvalidInput("--projects takes comma-separated project ids, e.g. 1,2") from None
    body = ApiKeyCreate.model_validate(
        {"name": args.name, "type": args.type, "projects": projects, "expires_at": args.expires_at}
    )
    request = body.to_request()
    return keys.KeyRequest(
        name=request.name,
        type=request.type,
        role=Role(args.role),
        project_ids=request.project_ids,
        expires_at=request.expires_at,
    )


async def _issue_key(
    settings: Settings, account_id: int, request: keys.KeyRequest
) -> dict[str, Any]:
    async def issue(services: Services) -> keys.IssuedKey:
        return await services.keys.create_bootstrap(account_id, request)

    issued: keys.IssuedKey = await _with_services(settings, issue)
    return created_body(issued)


async def _roll_key(
    settings: Settings, account_id: int, key: str, expires_in: int
) -> dict[str, Any]:
    async def roll(services: Services) -> keys.IssuedKey:
        return await services.keys.roll(None, account_id, key, expires_in, COMMAND_LINE)

    issued: keys.IssuedKey = await _with_services(settings, roll)
    return created_body(issued)


def create_served_app() -> FastAPI:
    """The app as a server process runs it: once start-up has built what lives as long as
    the process (modules, routes, the engine), that is moved out of the collector's reach,
    so a full collection no longer walks it, which otherwise stalls every request in flight
    for a tenth of a second now and then. In-process test apps are left as they are."""
    app = create_app()
    starting = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with starting(app) as state:
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    settings.load_master_key()
    url = settings.async_database_url
    asyncio.run(wait_for_database(url, settings.startup_timeout, settings.database_timeout))
    asyncio.run(upgrade_to_head(url))
    uvicorn.run(
        "apikeys.cli:create_served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # The app applies X-Forwarded-For and -Proto itself (apikeys.api.app), after /verify's
        # gate has seen the TCP peer.
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_grace,
        **SERVER_OPTIONS,
    )


def _quickstart(settings: Settings, args: argparse.Namespace) -> None:
    """Demo account and project (made once), a fresh owner key printed, then serve."""

    async def ensure_demo(session: AsyncSession) -> None:
        if not await accounts.account_exists(session, DEMO_ACCOUNT_ID):
            await accounts.create_account(session, "Demo account", DEMO_ACCOUNT_ID)
            await accounts.create_project(session, DEMO_ACCOUNT_ID, "Demo project", DEMO_PROJECT_ID)

    asyncio.run(_with_session(settings, ensure_demo))
    owner_key = keys.KeyRequest(
        name="Quickstart owner key",
        type=KeyType.SECRET_KEY,
        role=Role.OWNER,
        project_ids=None,
        expires_at=None,
    )
    body = asyncio.run(_issue_key(settings, DEMO_ACCOUNT_ID, owner_key))
    base = f"http://{args.host}:{args.port}"
    print(
        f"Owner key for account {DEMO_ACCOUNT_ID} (its secret is shown only now):\n"
        f"{json.dumps(body, indent=2, ensure_ascii=False)}\n\n"
        f"Try it:\n"
        f"  curl -s {base}/me -H 'Authorization: Bearer {body['secret']}'\n"
        f"  curl -s {base}/accounts/{DEMO_ACCOUNT_ID}/api-keys -H 'Authorization: Bearer "
        f"{body['secret']}' -H 'Content-Type: application/json' "
        f'-d \'{{"name": "Nightly Data Sync Script"}}\'\n'
        f"Docs: {base}/docs\n",
        flush=True,
    )
    _serve(settings, args)


def _read_secret(args: argparse.Namespace) -> str:
    if args.secret_stdin:
        secret = sys.stdin.read().strip()
    else:
        secret = os.environ.get(args.secret_env, "").strip()
    if not secret:
        source = "standard input" if args.secret_stdin else f"${args.secret_env}"
        raise ConfigurationError(f"no secret in {source}")
    return secret


def _sign(args: argparse.Namespace) -> str:
    """The signing headers for one request, or a curl command that sends it."""
    url = httpx.URL(args.url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("--url must be absolute: http(s)://host[:port]/path[?query]")
    if args.data_file is not None:
        body = Path(args.data_file).read_bytes()
    else:
        body = (args.data or "").encode()
    # Signed as httpx would send it (percent-encoded), so the URL signed is the URL sent.
    headers = signature_headers(
        args.key, _read_secret(args), str(url), body, int(time.time()) + args.expires_in
    )
    if not args.curl:
        return "\n".join(f"{name}: {value}" for name, value in headers.items())
    command = ["curl", "--path-as-is", "-X", args.method.upper(), str(url)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if args.data_file is not None:
        command += ["-H", "Content-Type: application/json", "--data-binary", f"@{args.data_file}"]
    elif args.data is not None:
        command += ["-H", "Content-Type: application/json", "--data-raw", args.data]
    return shlex.join(command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apikeys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_server_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8000)
        command.add_argument("--workers", type=int, default=1)

    serve = commands.add_parser("serve", help="apply pending migrations, then serve HTTP")
    add_server_options(serve)
    quickstart = commands.add_parser(
        "quickstart", help="make a demo account and an owner key, print it, then serve"
    )
    add_server_options(quickstart)
    commands.add_parser("migrate", help="upgrade the database schema to the newest revision")

    account_commands = commands.add_parser("accounts").add_subparsers(dest="action", required=True)
    account = account_commands.add_parser("create", help="create an account")
    account.add_argument("--name", required=True)
    account.add_argument("--id", type=int)
    account.add_argument("--json", action="store_true", help="print JSON (the only format)")

    project_commands = commands.add_parser("projects").add_subparsers(dest="action", required=True)
    project = project_commands.add_parser("create", help="create a project in an account")
    project.add_argument("--account", type=int, required=True)
    project.add_argument("--name", required=True)
    project.add_argument("--id", type=int)
    project.add_argument("--json", action="store_true", help="print JSON (the only format)")

    key_commands = commands.add_parser("keys").add_subparsers(dest="action", required=True)
    key = key_commands.add_parser("create", help="create an API key; the only way to an owner key")
    key.add_argument("--account", type=int, required=True)
    key.add_argument("--name", required=True)
    key.add_argument("--type", choices=["requestSigning", "secretKey"], default="requestSigning")
    key.add_argument("--role", choices=[role.value for role in Role], default="browse")
    key.add_argument("--projects", help="comma-separated project ids; omit for every project")
    key.add_argument("--expires-at", help="RFC 3339 date-time with an offset")
    key.add_argument("--json", action="store_true", help="print JSON (the only format)")
    roll = key_commands.add_parser(
        "roll", help="replace a key with a new one; the old one keeps working for a while"
    )
    roll.add_argument("--account", type=int, required=True)
    roll.add_argument("--key", required=True, help="the key to replace")
    roll.add_argument(
        "--expires-in",
        type=int,
        default=keys.ROLL_OVERLAP_DEFAULT,
        help="seconds the old key keeps working, 0-604800; 0 revokes it at once; default 86400",
    )
    roll.add_argument("--json", action="store_true", help="print JSON (the only format)")

    sign = commands.add_parser(
        "sign",
        help="print the headers that sign one request with a requestSigning key, or a curl command",
        # So that a mistaken `--secret VALUE` is refused rather than read as a prefix.
        allow_abbrev=False,
    )
    sign.add_argument("--key", required=True, help="the key (Convert-Application-ID)")
    # Never the secret itself as an argument: it would land in shell history and `ps`.
    secret_source = sign.add_mutually_exclusive_group(required=True)
    secret_source.add_argument("--secret-env", metavar="VAR", help="read the secret from $VAR")
    secret_source.add_argument(
        "--secret-stdin", action="store_true", help="read the secret from standard input"
    )
    sign.add_argument("--method", default="GET")
    sign.add_argument("--url", required=True, help="the absolute URL, with any query")
    body = sign.add_mutually_exclusive_group()
    body.add_argument("--data", help="the JSON body, exactly as it will be sent")
    body.add_argument("--data-file", metavar="FILE", help="send and sign this file's bytes")
    sign.add_argument(
        "--expires-in", type=int, default=DEFAULT_LIFETIME_SECONDS, help="seconds; default 300"
    )
    sign.add_argument("--curl", action="store_true", help="print a curl command instead")
    return parser


def _run(args: argparse.Namespace, settings: Settings) -> None:
    match args.command, getattr(args, "action", None):
        case "serve", _:
            _serve(settings, args)
        case "quickstart", _:
            _quickstart(settings, args)
        case "migrate", _:
            asyncio.run(upgrade_to_head(settings.async_database_url))
            print(json.dumps({"migrated": True}))
        case "accounts", "create":
            new_id = asyncio.run(
                _with_session(settings, lambda s: accounts.create_account(s, args.name, args.id))
            )
            _print_json({"id": new_id, "name": args.name})
        case "projects", "create":
            new_id = asyncio.run(
                _with_session(
                    settings,
                    lambda s: accounts.create_project(s, args.account, args.name, args.id),
                )
            )
            _print_json({"id": new_id, "account_id": args.account, "name": args.name})
        case "keys", "create":
            _print_json(asyncio.run(_issue_key(settings, args.account, _key_request(args))))
        case "keys", "roll":
            expires_in = ApiKeyRoll.model_validate({"expires_in": args.expires_in}).overlap
            _print_json(asyncio.run(_roll_key(settings, args.account, args.key, expires_in)))
        case "sign", _:
            print(_sign(args))


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        configure_logging(settings.log_format, settings.log_level)
        _run(args, settings)
    except ConfigurationError as error:
        sys.exit(f"apikeys: configuration error: {error}")
    except ApiError as error:
        sys.exit(f"apikeys: {error.detail}")
    except DatabaseUnavailable as error:
        sys.exit(f"apikeys: {error}")
    except (OperationalError, InterfaceError, OSError) as error:
        # The class names the failure; the driver's text can hold the URL or SQL.
        sys.exit(f"apikeys: the database did not answer ({type(error).__name__}); is it running?")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()
        )
        sys.exit(f"apikeys: invalid input: {problems}")

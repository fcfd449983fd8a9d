"""The `apikeys` command: serve, migrate, and bootstrap accounts, projects and keys."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from alembic.util.exc import CommandError
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from apikeys.api.app import create_app
from apikeys.api.schemas import ApiKeyCreate, ApiKeyRoll, created_body, key_body
from apikeys.client import DEFAULT_LIFETIME_SECONDS, signature_headers
from apikeys.config import ConfigurationError, Settings
from apikeys.domain import COMMAND_LINE, ApiKeyInfo, KeyType, Role
from apikeys.errors import ApiError, InvalidInput
from apikeys.log import configure_logging
from apikeys.server import SERVER_OPTIONS
from apikeys.service import accounts, keys
from apikeys.services import Services, build_services
from apikeys.storage.database import AsyncSession
from apikeys.storage.faults import error_name
from apikeys.storage.migrations import DatabaseUnavailable, upgrade_to_head, wait_for_database

DEMO_ACCOUNT_ID = 1
DEMO_PROJECT_ID = 1
QUICKSTART_FILENAME = "apikeys.quickstart.env"
# The names of the quickstart's two owner keys, by type: it revokes earlier keys so named.
QUICKSTART_KEYS = {
    KeyType.SECRET_KEY: "Quickstart owner key",
    KeyType.REQUEST_SIGNING: "Quickstart owner signing key",
}


class PortUnavailable(Exception):
    """The server could not listen where it was asked to; the message says what to do."""


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# What a null means in the fields where it is not "nothing".
_NULL_MEANS = {"projects": "all", "expires_at": "never"}


def _cell(column: str, value: Any) -> str:
    if value is None:
        return _NULL_MEANS.get(column, "-")
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Aligned columns for people, headed by the JSON field names."""
    cells = [[_cell(column, row[column]) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)
    ]
    for line in [list(columns), *cells]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _print_fields(value: dict[str, Any]) -> None:
    """One object for people: a field per line."""
    width = max(map(len, value))
    for name, field_value in value.items():
        print(f"{name.ljust(width)}  {_cell(name, field_value)}")


def _output(args: argparse.Namespace, value: dict[str, Any]) -> None:
    if args.json:
        _print_json(value)
    else:
        _print_fields(value)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        # The service itself decides what X-Forwarded-For to believe (apikeys.api.context),
        # so uvicorn leaves the peer address and scheme as the connection gave them.
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_grace,
        **SERVER_OPTIONS,
    )


def _ensure_port_free(host: str, port: int) -> None:
    """Bind and let go, as the server is about to: so a busy port stops the quickstart before
    it makes anything, rather than after."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise PortUnavailable(f"cannot listen on {host}: {error.strerror}") from None
    with socket.socket(family, kind, protocol) as probe:
        # As uvicorn binds: a port whose last connections are in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise PortUnavailable(
                f"cannot listen on {host}:{port}: {error.strerror}. Is a server already running "
                f"there? Stop it, or pick another port: --port, or PORT=... with `make run`"
            ) from None


def _quickstart_file(settings: Settings) -> Path:
    """Beside the SQLite database, as the generated master key is; else the working directory."""
    database = settings.async_database_url.database or ""
    if settings.is_sqlite and database not in ("", ":memory:"):
        return Path(database).resolve().parent / QUICKSTART_FILENAME
    return Path.cwd() / QUICKSTART_FILENAME


@dataclass(frozen=True)
class QuickstartKeys:
    owner_key: str
    owner_secret: str = field(repr=False)
    signing_key: str
    signing_secret: str = field(repr=False)
    reused: bool

    def exports(self) -> dict[str, str]:
        """The shell variables the README's examples use."""
        return {
            "OWNER": self.owner_secret,
            "SIGNING_KEY": self.signing_key,
            "SIGNING_SECRET": self.signing_secret,
        }


def _read_quickstart_file(path: Path) -> dict[str, str]:
    """`export NAME=VALUE` lines, as _write_quickstart_file writes them; nothing if unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = value.strip()
    return found


def _write_quickstart_file(path: Path, keys_made: QuickstartKeys) -> None:
    lines = [
        "# The owner keys `apikeys quickstart` (make run) made for the demo account, reused while",
        "# they work. Load them into a shell for the README's examples: . ./" + path.name,
        f"# OWNER: the secret of secretKey owner key {keys_made.owner_key} (Bearer);",
        "# SIGNING_KEY, SIGNING_SECRET: a requestSigning owner key and its secret.",
        *(f"export {name}={value}" for name, value in keys_made.exports().items()),
    ]
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")
    os.replace(draft, path)


async def _quickstart_keys(settings: Settings, saved: dict[str, str]) -> QuickstartKeys:
    """The demo account and project (made once), and two owner keys: the saved ones while both
    still work, else two new ones, the quickstart's earlier keys then revoked."""
    now = time.time()

    def usable(info: ApiKeyInfo | None, key_type: KeyType) -> bool:
        return (
            info is not None
            and info.is_active(now)
            and (info.account_id, info.type, info.role) == (DEMO_ACCOUNT_ID, key_type, Role.OWNER)
        )

    async def run(services: Services) -> QuickstartKeys:
        database = services.database
        async with database.transaction() as session:
            if not await accounts.account_exists(session, DEMO_ACCOUNT_ID):
                await accounts.create_account(session, "Demo account", DEMO_ACCOUNT_ID)
                await accounts.create_project(
                    session, DEMO_ACCOUNT_ID, "Demo project", DEMO_PROJECT_ID
                )
        owner_secret, signing_secret = saved.get("OWNER", ""), saved.get("SIGNING_SECRET", "")
        async with database.reads() as connection:
            owner = await accounts.key_by_secret(connection, services.keeper, owner_secret)
            signing = await accounts.key_by_secret(connection, services.keeper, signing_secret)
        if (
            owner is not None
            and signing is not None
            and usable(owner, KeyType.SECRET_KEY)
            and usable(signing, KeyType.REQUEST_SIGNING)
            and signing.key == saved.get("SIGNING_KEY")
        ):
            return QuickstartKeys(owner.key, owner_secret, signing.key, signing_secret, reused=True)
        issued = {
            key_type: await services.keys.create_bootstrap(
                DEMO_ACCOUNT_ID,
                keys.KeyRequest(
                    name=name, type=key_type, role=Role.OWNER, project_ids=None, expires_at=None
                ),
            )
            for key_type, name in QUICKSTART_KEYS.items()
        }
        kept = {made.info.key for made in issued.values()}
        async with database.transaction() as session:
            for earlier in await accounts.list_account_keys(
                session, DEMO_ACCOUNT_ID, include_revoked=False
            ):
                if earlier.name in QUICKSTART_KEYS.values() and earlier.key not in kept:
                    await accounts.revoke_account_key(session, DEMO_ACCOUNT_ID, earlier.key)
        owner_made, signing_made = issued[KeyType.SECRET_KEY], issued[KeyType.REQUEST_SIGNING]
        return QuickstartKeys(
            owner_made.info.key,
            owner_made.secret,
            signing_made.info.key,
            signing_made.secret,
            reused=False,
        )

    result: QuickstartKeys = await _with_services(settings, run)
    return result


def _quickstart(settings: Settings, args: argparse.Namespace) -> None:
    """The demo account and project, two owner keys (reused from an earlier run while they
    work), the lines that put them into a shell, then serve."""
    _ensure_port_free(args.host, args.port)
    path = _quickstart_file(settings)
    made = asyncio.run(_quickstart_keys(settings, _read_quickstart_file(path)))
    if not made.reused:
        _write_quickstart_file(path, made)
    shown = f"./{path.relative_to(Path.cwd())}" if path.is_relative_to(Path.cwd()) else str(path)
    base = f"http://{args.host}:{args.port}"
    origin = (
        f"reused from {shown}, where an earlier run kept them"
        if made.reused
        else f"new; the quickstart's earlier owner keys, if any, are revoked. Kept in {shown} "
        "(mode 0600) and reused by the next run; delete the file for new ones"
    )
    exports = "\n".join(f"export {name}={value}" for name, value in made.exports().items())
    print(
        f"Demo account {DEMO_ACCOUNT_ID} with project {DEMO_PROJECT_ID}, and two owner keys "
        f"({origin}):\n"
        f"  secretKey       {made.owner_key}\n"
        f"  requestSigning  {made.signing_key}\n\n"
        f"Paste these lines into the shell you run the README's examples in "
        f"(or run: . {shown}):\n\n"
        f"{exports}\n\n"
        f'Try it:  curl -s {base}/me -H "Authorization: Bearer $OWNER"\n'
        f"Docs:    {base}/docs\n",
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
    # -sS: no progress meter, errors still shown; --fail-with-body: an error status is a
    # non-zero exit, with the problem+json still printed.
    command = [
        "curl",
        "-sS",
        "--fail-with-body",
        "--path-as-is",
        "-X",
        args.method.upper(),
        str(url),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if args.data_file is not None:
        command += ["-H", "Content-Type: application/json", "--data-binary", f"@{args.data_file}"]
    elif args.data is not None:
        command += ["-H", "Content-Type: application/json", "--data-raw", args.data]
    return shlex.join(command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apikeys", description=__doc__)
    # Every command takes --verbose, after its own name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="also log each migration step (Alembic's INFO)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_server_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8000)
        command.add_argument("--workers", type=int, default=1)

    def group(name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return commands.add_parser(name, help=help).add_subparsers(dest="action", required=True)

    def command(
        actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
    ) -> argparse.ArgumentParser:
        made = actions.add_parser(name, help=help, parents=[common])
        made.add_argument(
            "--json", action="store_true", help="print JSON for programs instead of a table"
        )
        return made

    serve = commands.add_parser(
        "serve", help="apply pending migrations, then serve HTTP", parents=[common]
    )
    add_server_options(serve)
    quickstart = commands.add_parser(
        "quickstart",
        help="make a demo account and two owner keys (or reuse them), print them, then serve",
        parents=[common],
    )
    add_server_options(quickstart)
    commands.add_parser(
        "migrate", help="upgrade the database schema to the newest revision", parents=[common]
    )

    account_commands = group("accounts", "create and list accounts")
    account = command(account_commands, "create", "create an account")
    account.add_argument("--name", required=True)
    account.add_argument("--id", type=int)
    command(account_commands, "list", "list every account")

    project_commands = group("projects", "create and list an account's projects")
    project = command(project_commands, "create", "create a project in an account")
    project.add_argument("--account", type=int, required=True)
    project.add_argument("--name", required=True)
    project.add_argument("--id", type=int)
    projects_list = command(project_commands, "list", "list an account's projects")
    projects_list.add_argument("--account", type=int, required=True)

    key_commands = group("keys", "create, list and revoke an account's API keys")
    key = command(key_commands, "create", "create an API key; the only way to an owner key")
    key.add_argument("--account", type=int, required=True)
    key.add_argument("--name", required=True)
    key.add_argument("--type", choices=["requestSigning", "secretKey"], default="requestSigning")
    key.add_argument("--role", choices=[role.value for role in Role], default="browse")
    key.add_argument("--projects", help="comma-separated project ids; omit for every project")
    key.add_argument("--expires-at", help="RFC 3339 date-time with an offset")
    keys_list = command(key_commands, "list", "list an account's keys, newest first; no secrets")
    keys_list.add_argument("--account", type=int, required=True)
    keys_list.add_argument("--include-revoked", action="store_true")
    roll = command(
        key_commands, "roll", "replace a key with a new one; the old one keeps working for a while"
    )
    roll.add_argument("--account", type=int, required=True)
    roll.add_argument("--key", required=True, help="the key to replace")
    roll.add_argument(
        "--expires-in",
        type=int,
        default=keys.ROLL_OVERLAP_DEFAULT,
        help="seconds the old key keeps working, 0-604800; 0 revokes it at once; default 86400",
    )
    revoke = command(key_commands, "revoke", "revoke a key of an account at once, owner keys too")
    revoke.add_argument("--account", type=int, required=True)
    revoke.add_argument("--key", required=True, help="the key's public identifier")

    sign = commands.add_parser(
        "sign",
        help="print the headers that sign one request with a requestSigning key, or a curl command",
        # So that a mistaken `--secret VALUE` is refused rather than read as a prefix.
        allow_abbrev=False,
        parents=[common],
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


KEY_COLUMNS = ("key", "name", "type", "role", "projects", "created_at", "expires_at", "revoked_at")


def _in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    return asyncio.run(_with_session(settings, work))


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
            new_id = _in_session(settings, lambda s: accounts.create_account(s, args.name, args.id))
            _output(args, {"id": new_id, "name": args.name})
        case "accounts", "list":
            found = _in_session(settings, accounts.list_accounts)
            _list_output(
                args,
                [
                    {"id": row.id, "name": row.name, "created_at": _timestamp(row.created_at)}
                    for row in found
                ],
                ("id", "name", "created_at"),
            )
        case "projects", "create":
            new_id = _in_session(
                settings, lambda s: accounts.create_project(s, args.account, args.name, args.id)
            )
            _output(args, {"id": new_id, "account_id": args.account, "name": args.name})
        case "projects", "list":
            found = _in_session(settings, lambda s: accounts.list_projects(s, args.account))
            _list_output(
                args,
                [
                    {
                        "id": row.id,
                        "account_id": row.account_id,
                        "name": row.name,
                        "created_at": _timestamp(row.created_at),
                    }
                    for row in found
                ],
                ("id", "account_id", "name", "created_at"),
            )
        case "keys", "create":
            body = asyncio.run(_issue_key(settings, args.account, _key_request(args)))
            _output(args, body)
            if not args.json:
                print("\nThe secret is shown only now: keep it somewhere safe.")
        case "keys", "roll":
            expires_in = ApiKeyRoll.model_validate({"expires_in": args.expires_in}).overlap
            _output(args, asyncio.run(_roll_key(settings, args.account, args.key, expires_in)))
            if not args.json:
                print("\nThe new secret is shown only now: keep it somewhere safe.")
        case "keys", "list":
            listed: list[ApiKeyInfo] = _in_session(
                settings,
                lambda s: accounts.list_account_keys(
                    s, args.account, include_revoked=args.include_revoked
                ),
            )
            _list_output(args, [key_body(info) for info in listed], KEY_COLUMNS)
        case "keys", "revoke":
            revoked: ApiKeyInfo = _in_session(
                settings, lambda s: accounts.revoke_account_key(s, args.account, args.key)
            )
            _output(args, key_body(revoked))
        case "sign", _:
            print(_sign(args))


def _list_output(
    args: argparse.Namespace, rows: list[dict[str, Any]], columns: Sequence[str]
) -> None:
    if args.json:
        _print_json({"data": rows})
    elif rows:
        _print_table(rows, columns)
    else:
        print("(none)")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        configure_logging(settings.log_format, settings.log_level)
        if not args.verbose:
            # Alembic says at INFO what it checks on every run, even with nothing to upgrade.
            logging.getLogger("alembic").setLevel(logging.WARNING)
        _run(args, settings)
    except ConfigurationError as error:
        sys.exit(f"apikeys: configuration error: {error}")
    except PortUnavailable as error:
        sys.exit(f"apikeys: {error}")
    except CommandError as error:
        # Most often a schema newer than this release: its revision is unknown here.
        sys.exit(f"apikeys: cannot bring the schema up to date: {error}")
    except ApiError as error:
        sys.exit(f"apikeys: {error.detail}")
    except DatabaseUnavailable as error:
        sys.exit(f"apikeys: {error}")
    except (OperationalError, InterfaceError, OSError) as error:
        # The class names the failure; the driver's text can hold the URL or SQL.
        sys.exit(f"apikeys: the database did not answer ({error_name(error)}); is it running?")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()
        )
        sys.exit(f"apikeys: invalid input: {problems}")

"""Bulk-loads keys straight into the database, for the growth benchmark.

Probe keys are real requestSigning keys whose secrets the benchmark knows, so it can sign
requests with them. Filler keys only take up room: random digests and ciphertexts that no
secret matches, written in large batches (executemany on SQLite, COPY on PostgreSQL).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import create_engine, insert, text

from apikeys import security
from apikeys.config import async_database_url
from apikeys.security import SecretKeeper
from apikeys.storage.models import ApiKey

BATCH = 20_000
_COLUMNS = (
    "public_id",
    "account_id",
    "name",
    "type",
    "role",
    "all_projects",
    "secret_digest",
    "secret_ciphertext",
    "secret_hint",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class ProbeKey:
    key: str
    secret: str


def _filler_rows(account_id: int, count: int, created_at: datetime) -> Iterator[tuple[Any, ...]]:
    for index in range(count):
        signing = index % 2 == 0
        yield (
            secrets.token_urlsafe(18),
            account_id,
            "filler",
            "requestSigning" if signing else "secretKey",
            "browse",
            True,
            os.urandom(32),
            os.urandom(83) if signing else None,
            "…fill",
            created_at,
        )


def make_probe_keys(
    keeper: SecretKeeper, prefix: str, account_id: int, count: int
) -> tuple[list[ProbeKey], list[tuple[Any, ...]]]:
    """`count` signing keys: what a client holds, and the rows the service would store."""
    probes, rows = [], []
    now = datetime.now(UTC)
    for _ in range(count):
        key, secret = security.generate_key(), security.generate_secret(prefix)
        probes.append(ProbeKey(key, secret))
        rows.append(
            (
                key,
                account_id,
                "probe",
                "requestSigning",
                "browse",
                True,
                keeper.digest(secret),
                keeper.encrypt(secret, key),
                security.secret_hint(secret),
                now,
            )
        )
    return probes, rows


def _batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert_sqlite(url: str, rows: Iterator[tuple[Any, ...]]) -> None:
    engine = create_engine(url)
    table = ApiKey.__table__
    statement = insert(table)  # type: ignore[arg-type]
    # Core names a column by its key, which is not always its name (public_id is `key`).
    key_of = {column.name: column.key for column in table.columns}
    keys = [key_of[name] for name in _COLUMNS]
    try:
        for batch in _batches(rows):
            with engine.begin() as connection:
                connection.execute(statement, [dict(zip(keys, row, strict=True)) for row in batch])
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


async def _insert_postgres(url: str, rows: Iterator[tuple[Any, ...]]) -> None:
    dsn = async_database_url(url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        for batch in _batches(rows):
            await connection.copy_records_to_table("api_keys", records=batch, columns=_COLUMNS)
        await connection.execute("ANALYZE api_keys")
    finally:
        await connection.close()


async def insert_keys(url: str, rows: Iterator[tuple[Any, ...]]) -> None:
    if url.startswith("sqlite"):
        _insert_sqlite(url, rows)
    else:
        await _insert_postgres(url, rows)


async def seed(url: str, account_id: int, *, probes: list[tuple[Any, ...]], fillers: int) -> None:
    """Insert the probe rows and `fillers` filler keys into the account."""

    def rows() -> Iterator[tuple[Any, ...]]:
        yield from probes
        yield from _filler_rows(account_id, fillers, datetime.now(UTC))

    await insert_keys(url, rows())

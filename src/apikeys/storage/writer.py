"""New keys, group-committed: keys asked for while one transaction runs share the next."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from apikeys import metrics
from apikeys.domain import ApiKeyInfo
from apikeys.storage import repository
from apikeys.storage.database import AsyncConnection, Database, deadline_of
from apikeys.storage.faults import error_name, is_unavailable
from apikeys.storage.repository import NewKey

logger = logging.getLogger("apikeys.storage")

# Enough for every client of a busy replica at once, few enough to keep one commit short.
MAX_BATCH = 100
# Under load, how long a batch waits for company before it starts (see KeyWriter).
LINGER_SECONDS = 0.001
# A batch gives up this long before its callers' deadline, so that the caller hears the
# outcome, committed or not, before it gives up itself.
DEADLINE_MARGIN_SECONDS = 0.05


class UnknownAccount(Exception):
    """A new key's account does not exist."""


class KeyRefused(Exception):
    """The database refused a new key's values (the key alone: the others were written)."""

    def __init__(self) -> None:
        super().__init__("the database refused the key's values")


class UnknownProjects(Exception):
    """Some of a new key's projects are not projects of its account."""

    def __init__(self, project_ids: list[int]) -> None:
        super().__init__(f"not projects of the account: {project_ids}")
        self.project_ids = project_ids


@dataclass(frozen=True, slots=True)
class _Waiting:
    key: NewKey
    created: asyncio.Future[ApiKeyInfo]
    deadline: float  # loop time


class KeyWriter:
    """Inserts new keys with their project links and audit events, many per transaction.

    Most of what a key's creation costs is its transaction (the begin, each statement's round
    trip, the commit), not its rows. So keys asked for while a transaction runs wait, and the
    next one takes them all, up to MAX_BATCH, in the same few statements. A key asked for
    alone is written at once; but after a batch of several, whose callers then all ask again
    at about the same moment, the next batch waits a millisecond for them rather than leave
    with the first (larger batches, less CPU per key: bench/RESULTS.md has the figures); so
    does a lone key that follows such a batch.
    Each caller hears back only once its key is committed, and a key that cannot be written
    fails alone.

    A caller must not hold a transaction that writes while it waits: on SQLite, whose one
    write lock covers the whole file, the writer would wait for it in turn.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._waiting: list[_Waiting] = []
        self._flushing: asyncio.Task[None] | None = None
        self._last_batch_size = 0

    async def add(self, key: NewKey) -> ApiKeyInfo:
        """The key as stored, once committed. Raises UnknownAccount, UnknownProjects,
        KeyRefused, or the error of a database that is unavailable."""
        created: asyncio.Future[ApiKeyInfo] = asyncio.get_running_loop().create_future()
        deadline = deadline_of(self._database.timeout) - DEADLINE_MARGIN_SECONDS
        self._waiting.append(_Waiting(key, created, deadline))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await created

    async def close(self) -> None:
        """Wait for the keys already asked for, at shutdown."""
        if self._flushing is not None:
            await self._flushing

    async def _flush(self) -> None:
        try:
            while self._waiting:
                # Otherwise one turn of the loop, for requests already read to join.
                await asyncio.sleep(LINGER_SECONDS if self._last_batch_size > 1 else 0)
                # A caller gone before its transaction begins gets no key: nobody would ever
                # learn its secret.
                batch = [
                    waiting for waiting in self._waiting[:MAX_BATCH] if not waiting.created.done()
                ]
                del self._waiting[:MAX_BATCH]
                self._last_batch_size = len(batch)
                if batch:
                    metrics.KEY_WRITER_BATCH.observe(len(batch))
                    await self._write_in_time(batch)
        finally:
            self._flushing = None

    async def _write_in_time(self, batch: list[_Waiting]) -> None:
        """Write the batch, or give up on it by the first of its callers' deadlines: its
        transaction is then abandoned before its commit, unless the commit was already on
        its way, and every caller hears so before giving up itself."""
        try:
            async with asyncio.timeout_at(min(waiting.deadline for waiting in batch)):
                await self._write(batch)
        except TimeoutError as error:
            _fail(batch, error)

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            # A connection, not an ORM session: the batch runs Core statements only, and the
            # session's bookkeeping around each would cost more than the statement.
            async with self._database.writes() as connection:
                batch = await _refuse_unknown_references(connection, batch)
                if not batch:
                    return
                infos = await repository.add_keys(connection, [waiting.key for waiting in batch])
        except Exception as error:
            if is_unavailable(error):
                _fail(batch, error)
                return
            if len(batch) == 1:
                # Whatever its class (a constraint, a value the driver cannot bind or the
                # column cannot hold), an error that one key meets alone is that key's.
                logger.warning("a new key was refused by the database: %s", error_name(error))
                _fail(batch, KeyRefused())
                return
            # Validation should have stopped any such key; if one got through, it alone must
            # fail, so each key is tried on its own.
            for waiting in batch:
                if not waiting.created.done():
                    await self._write([waiting])
            return
        for waiting, info in zip(batch, infos, strict=True):
            if not waiting.created.done():  # gone during the transaction: its key stays
                waiting.created.set_result(info)


async def _refuse_unknown_references(
    connection: AsyncConnection, batch: list[_Waiting]
) -> list[_Waiting]:
    """Fail the keys whose account does not exist or that name a project not of their
    account; return the others."""
    found = await repository.projects_of_accounts(
        connection,
        {waiting.key.row.account_id for waiting in batch},
        {project for waiting in batch for project in waiting.key.row.project_ids or ()},
    )
    accepted = []
    for waiting in batch:
        row = waiting.key.row
        projects = found.get(row.account_id)
        unknown = sorted((row.project_ids or frozenset()) - (projects or set()))
        if projects is None:
            _fail([waiting], UnknownAccount(row.account_id))
        elif unknown:
            _fail([waiting], UnknownProjects(unknown))
        else:
            accepted.append(waiting)
    return accepted


def _fail(batch: list[_Waiting], error: Exception) -> None:
    for waiting in batch:
        if not waiting.created.done():
            waiting.created.set_exception(error)

"""What a verified key must also meet when another service asks: a role, a project."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from apikeys.domain import ApiKeyInfo, Role
from apikeys.errors import Forbidden
from apikeys.storage import repository
from apikeys.storage.database import Database

MAX_PROJECTS = 100_000
# How long "no such project" is believed: a project created since is then found.
MISSING_PROJECT_TTL_SECONDS = 1.0


class ProjectDirectory:
    """Which account each project belongs to, looked up once and kept.

    A project never moves to another account and is never deleted, so a found answer stays
    true for the life of the process (at most MAX_PROJECTS of them, least recently used
    first out); a missing one is kept only briefly, since the project may be created next.
    """

    def __init__(
        self,
        database: Database,
        max_projects: int = MAX_PROJECTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._max_projects = max_projects
        self._clock = clock
        self._accounts: OrderedDict[int, int] = OrderedDict()
        self._missing: OrderedDict[int, float] = OrderedDict()

    async def account_of(self, project_id: int) -> int | None:
        account_id = self._accounts.get(project_id)
        if account_id is not None:
            self._accounts.move_to_end(project_id)
            return account_id
        missing_until = self._missing.get(project_id)
        if missing_until is not None and self._clock() < missing_until:
            return None
        async with self._database.reads() as connection:
            account_id = await repository.account_of_project(connection, project_id)
        if account_id is None:
            self._missing[project_id] = self._clock() + MISSING_PROJECT_TTL_SECONDS
            self._missing.move_to_end(project_id)
            _trim(self._missing, self._max_projects)
            return None
        self._missing.pop(project_id, None)
        self._accounts[project_id] = account_id
        _trim(self._accounts, self._max_projects)
        return account_id


def _trim(entries: OrderedDict[int, Any], limit: int) -> None:
    while len(entries) > limit:
        entries.popitem(last=False)


def require_role(key: ApiKeyInfo, role: Role) -> None:
    if role.outranks(key.role):
        raise Forbidden(f"The key's role {key.role} is below the required role {role}")


async def require_project(key: ApiKeyInfo, project_id: int, directory: ProjectDirectory) -> None:
    """The project must be one of the key's account, and inside the key's scope. A limited
    key's projects were checked to be its account's when it was made, so only an
    every-project key needs the directory."""
    if key.project_ids is None:
        inside = await directory.account_of(project_id) == key.account_id
    else:
        inside = project_id in key.project_ids
    if not inside:
        raise Forbidden(f"The key may not act on project {project_id}")

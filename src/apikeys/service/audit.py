"""Reading the audit trail of key creations and revocations."""

from __future__ import annotations

from apikeys.domain import ApiKeyInfo
from apikeys.errors import Forbidden
from apikeys.service.keys import ensure_can_manage
from apikeys.service.pagination import Page, decode_cursor, page_of
from apikeys.storage import repository
from apikeys.storage.database import Database
from apikeys.storage.repository import AuditRecord


async def list_events(
    database: Database, caller: ApiKeyInfo, account_id: int, *, limit: int, cursor: str | None
) -> Page[AuditRecord]:
    """Newest first. The trail spans the whole account, so it takes a key for every project."""
    ensure_can_manage(caller, account_id)
    if caller.project_ids is not None:
        raise Forbidden(
            "The audit trail covers every project of the account; this key is limited to some"
        )
    after = decode_cursor(cursor)
    async with database.reads() as connection:
        rows = await repository.list_audit_events(
            connection, account_id, after=after, limit=limit + 1
        )
    return page_of(rows, limit)

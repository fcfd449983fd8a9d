"""Opaque cursors for newest-first listings ordered by (created_at, id).

A cursor names the last row a page showed, never an offset, so rows created while a client
pages through cannot shift what the next page holds.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from apikeys.domain import MAX_ID
from apikeys.errors import FieldError, InvalidInput
from apikeys.storage.repository import Position


class Positioned(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...


Item = TypeVar("Item", bound=Positioned)

_MAX_ID_DIGITS = len(str(MAX_ID))


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    items: list[Item]
    next_cursor: str | None


def encode_cursor(position: Position) -> str:
    created_at, row_id = position
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    if cursor is None:
        return None
    position = _position(cursor)
    if position is None:
        raise InvalidInput(
            "The cursor is not one this service issued; use next_cursor from a previous page",
            [FieldError(("query", "cursor"), "not a valid cursor")],
        )
    return position


def _position(cursor: str) -> Position | None:
    """The position a cursor names, or None unless it is one the database could hold: an
    aware time whose UTC year is 1-9999 and a row id of the id columns' range."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, row_id = raw.split("|")
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            return None
        moment = moment.astimezone(UTC)
    except (binascii.Error, ValueError, OverflowError):
        return None
    if not (row_id.isascii() and row_id.isdigit() and len(row_id) <= _MAX_ID_DIGITS):
        return None
    if not 1 <= int(row_id) <= MAX_ID:
        return None
    return moment, int(row_id)


def page_of(rows: list[Item], limit: int) -> Page[Item]:
    """`rows` holds up to limit + 1 rows; the extra one only says another page exists."""
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], encode_cursor((last.created_at, last.id)))

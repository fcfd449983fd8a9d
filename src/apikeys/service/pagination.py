"""Opaque cursors for newest-first listings ordered by (created_at, id).

A cursor names the last row a page showed, never an offset, so rows created while a client
pages through cannot shift what the next page holds.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from apikeys.errors import FieldError, InvalidInput
from apikeys.storage.repository import Position


class Positioned(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...


Item = TypeVar("Item", bound=Positioned)


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
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, row_id = raw.split("|")
        position = (datetime.fromisoformat(created_at), int(row_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = None
    if position is None or position[0].tzinfo is None:
        raise InvalidInput(
            "The cursor is not one this service issued; use next_cursor from a previous page",
            [FieldError(("query", "cursor"), "not a valid cursor")],
        )
    return position


def page_of(rows: list[Item], limit: int) -> Page[Item]:
    """`rows` holds up to limit + 1 rows; the extra one only says another page exists."""
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], encode_cursor((last.created_at, last.id)))

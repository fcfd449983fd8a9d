"""Request and response bodies, and how a key is shown (the same over HTTP and the CLI)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)
from pydantic_core import PydanticCustomError, to_json

from apikeys.domain import MAX_ID, ApiKeyInfo, KeyType, Role
from apikeys.service.keys import (
    ROLL_OVERLAP_DEFAULT,
    ROLL_OVERLAP_MAX,
    IssuedKey,
    KeyChanges,
    KeyRequest,
)

MAX_PROJECTS = 1000
NAME_MAX_LENGTH = 100
# Control and format characters (bidi overrides, zero-width spaces) and lone surrogates: a
# name holding them can disguise one key as another in a listing, or fail to be stored.
_REFUSED_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def _format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[
    datetime,
    PlainSerializer(_format_timestamp, return_type=str),
    Field(json_schema_extra={"format": "date-time", "example": "2026-11-27T03:36:47Z"}),
]


def _clean_name(value: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise PydanticCustomError(
            "name_length",
            "must be 1 to {max} characters once surrounding white space is trimmed",
            {"max": NAME_MAX_LENGTH},
        )
    if any(unicodedata.category(character) in _REFUSED_NAME_CATEGORIES for character in name):
        raise PydanticCustomError(
            "name_characters",
            "must not contain control characters, format characters (such as bidi "
            "overrides or zero-width spaces) or lone surrogates",
        )
    return name


def _parse_rfc3339(value: Any) -> Any:
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise PydanticCustomError(
                "rfc3339",
                "must be an RFC 3339 date-time with an offset, e.g. 2027-01-31T12:00:00Z",
            )
        # Python's parser takes at most microseconds; finer digits carry no meaning here.
        value = re.sub(r"(\.\d{6})\d+", r"\1", value)
        try:
            # In UTC now: a time that has no UTC year in 1-9999 is refused here, not by the
            # database write.
            return datetime.fromisoformat(value.upper()).astimezone(UTC)
        except OverflowError:
            raise PydanticCustomError(
                "rfc3339", "must be a date-time between years 1 and 9999 in UTC"
            ) from None
    if value is None:
        return None
    raise PydanticCustomError(
        "rfc3339", "must be an RFC 3339 date-time string with an offset, or null"
    )


def _in_the_future(value: datetime | None) -> datetime | None:
    if value is not None and value <= datetime.now(UTC):
        raise PydanticCustomError("expires_past", "must be in the future")
    return value


def _distinct_projects(value: list[int] | None) -> list[int] | None:
    if value is None:
        return None
    distinct = sorted(set(value))
    if len(distinct) > MAX_PROJECTS:
        raise PydanticCustomError(
            "too_many_projects",
            "must list at most {max} distinct project ids",
            {"max": MAX_PROJECTS},
        )
    return distinct


ProjectId = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
ProjectIds = Annotated[list[ProjectId] | None, AfterValidator(_distinct_projects)]
Name = Annotated[str, Field(strict=True), AfterValidator(_clean_name)]
Expiry = Annotated[datetime | None, BeforeValidator(_parse_rfc3339), AfterValidator(_in_the_future)]
# Every role but owner, ranked from least to most (SPEC: browse < review < edit < publish <
# account_manager < admin < owner); owner keys come only from the command line or a roll.
GrantableRole = Literal["browse", "review", "edit", "publish", "account_manager", "admin"]


class ApiKeyCreate(BaseModel):
    """The body of POST /accounts/{account_id}/api-keys."""

    # Examples live with the operation (apikeys.api.openapi), where the docs page offers them.
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(
        description="1-100 characters after trimming; no control or format characters."
    )
    type: Literal["requestSigning", "secretKey"] = Field(
        default="requestSigning",
        description="requestSigning: HMAC-signed requests; secretKey: a Bearer secret.",
    )
    projects: ProjectIds = Field(
        default=None,
        description="Project ids the key is limited to; null, absent or [] means every "
        "project of the account, now and future.",
    )
    role: GrantableRole = Field(
        default="browse", description="What the key may do; browse is the least privilege."
    )
    expires_at: Expiry = Field(
        default=None, description="When the key stops working (RFC 3339); null: never."
    )

    def to_request(self) -> KeyRequest:
        return KeyRequest(
            name=self.name,
            type=KeyType(self.type),
            role=Role(self.role),
            project_ids=frozenset(self.projects) if self.projects else None,
            expires_at=self.expires_at,
        )


class ApiKeyPatch(BaseModel):
    """The body of PATCH /accounts/{account_id}/api-keys/{key}: a JSON merge patch; a field
    left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(
        default="", description="1-100 characters after trimming; no control or format characters."
    )
    expires_at: Expiry = Field(
        default=None,
        description="When the key stops working (RFC 3339, in the future); null: never. An "
        "expired key may be given a new expiry.",
    )

    def to_changes(self) -> KeyChanges:
        given = frozenset(self.model_fields_set)
        return KeyChanges(given=given, name=self.name, expires_at=self.expires_at)


class ApiKeyRoll(BaseModel):
    """The optional body of POST /accounts/{account_id}/api-keys/{key}/roll."""

    model_config = ConfigDict(extra="forbid")

    expires_in: Annotated[int, Field(strict=True, ge=0, le=ROLL_OVERLAP_MAX)] | None = Field(
        default=None,
        description="Seconds the old key keeps working, 0-604800 (never later than its own "
        "expiry); 0 revokes it at once; null or absent: 86400.",
    )

    @property
    def overlap(self) -> int:
        return ROLL_OVERLAP_DEFAULT if self.expires_in is None else self.expires_in


class ApiKey(BaseModel):
    """An API key's metadata. The secret is never part of it."""

    key: str = Field(description="Public identifier; the Convert-Application-ID header value.")
    name: str
    type: KeyType
    role: Role
    projects: list[int] | None = Field(description="Sorted project ids; null: every project.")
    account_id: int
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None
    secret_hint: str = Field(description="The secret's last four characters.")


class ApiKeyCreated(ApiKey):
    """A new key: its metadata and, this once, its secret."""

    secret: str = Field(description="Returned here and never again.")


class ApiKeyRolled(ApiKeyCreated):
    """The key that replaces a rolled one: its metadata, its secret this once, and the key
    it replaces."""

    rolled_from: str = Field(description="The key this one replaces.")


def key_body(info: ApiKeyInfo) -> dict[str, Any]:
    """A key's public shape (`ApiKey`) for every route and the command line, built directly:
    every authenticated `/me` pays for this, and a model instance plus its validation costs
    several times more."""
    return {
        "key": info.key,
        "name": info.name,
        "type": info.type.value,
        "role": info.role.value,
        "projects": sorted(info.project_ids) if info.project_ids is not None else None,
        "account_id": info.account_id,
        "created_at": _format_timestamp(info.created_at),
        "expires_at": _format_timestamp(info.expires_at) if info.expires_at else None,
        "last_used_at": _format_timestamp(info.last_used_at) if info.last_used_at else None,
        "revoked_at": _format_timestamp(info.revoked_at) if info.revoked_at else None,
        "secret_hint": info.secret_hint,
    }


@lru_cache(maxsize=4096)
def key_json(info: ApiKeyInfo) -> bytes:
    """`key_body` encoded. Every authenticated `/me` answers with it, and a key's metadata
    rarely changes, so equal metadata is encoded once."""
    return to_json(key_body(info))


def created_body(issued: IssuedKey) -> dict[str, Any]:
    """The 201 body, `key` and `secret` first, and for a roll `rolled_from`. The CLI prints
    exactly this too."""
    body = key_body(issued.info)
    created = {"key": body.pop("key"), "secret": issued.secret, **body}
    if issued.rolled_from is not None:
        created["rolled_from"] = issued.rolled_from
    return created


def page_body(keys: Iterable[ApiKeyInfo], next_cursor: str | None) -> dict[str, Any]:
    """`ApiKeyList`."""
    return {"data": [key_body(info) for info in keys], "next_cursor": next_cursor}


class ApiKeyList(BaseModel):
    """One page of keys, newest first."""

    data: list[ApiKey]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class AuditEventOut(BaseModel):
    """A key's creation, update, roll or revocation."""

    id: int
    account_id: int
    action: Literal["api_key.created", "api_key.updated", "api_key.rolled", "api_key.revoked"]
    actor_key: str | None = Field(description="The key that acted; null: the command line.")
    target_key: str
    related_key: str | None = Field(
        description="For a roll, the other key: on api_key.rolled the new key, on the new "
        "key's api_key.created the key it replaces."
    )
    role: Role = Field(description="The target key's role.")
    projects: list[int] | None = Field(description="The target key's projects; null: every one.")
    client_address: str | None
    request_id: str | None
    created_at: Timestamp


class AuditEventList(BaseModel):
    """One page of audit events, newest first."""

    data: list[AuditEventOut]
    next_cursor: str | None

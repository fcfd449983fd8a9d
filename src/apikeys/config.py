"""The one settings object, read from `APIKEYS_*` environment variables."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

MASTER_KEY_FILENAME = "apikeys.master.key"


class ConfigurationError(Exception):
    """The configuration cannot work; the message says what to change."""


def async_database_url(url: str) -> URL:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async driver for them."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ConfigurationError(
        f"APIKEYS_DATABASE_URL: unsupported database {backend!r}; use sqlite:/// or postgresql://"
    )


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or networks ("10.0.0.0/8", "::1"); a plain address is a
    network of one."""
    try:
        return tuple(
            ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item
        )
    except ValueError:
        raise ValueError(
            f"expected comma-separated IP addresses or networks, not {text!r}"
        ) from None


def decode_master_key(encoded: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigurationError(
            f"{source} must be the base64 encoding of 32 random bytes; "
            "make one with: python3 -c "
            "'import os, base64; print(base64.b64encode(os.urandom(32)).decode())'"
        )
    if len(set(raw)) < 8:
        raise ConfigurationError(f"{source} looks like a placeholder, not 32 random bytes")
    return raw


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APIKEYS_", extra="ignore")

    database_url: str = "sqlite:///apikeys.db"
    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    public_url: AnyHttpUrl | None = None
    # Proxies whose X-Forwarded-For is believed: comma-separated addresses or networks.
    forwarded_allow_ips: str = "127.0.0.1"
    signature_max_age: int = Field(default=900, ge=1)
    clock_skew: int = Field(default=60, ge=0)
    secret_key_prefix: str = "cvsk_"
    request_signing_prefix: str = "cvrs_"
    # Failed authentications allowed per client address in a sliding minute; 0 turns it off.
    auth_failure_limit: int = Field(default=600, ge=0)
    database_timeout: float = Field(default=5.0, gt=0)
    # How long `apikeys serve` waits for the database to answer before it gives up.
    startup_timeout: float = Field(default=30.0, ge=0)
    # Seconds in-flight requests get to finish after SIGTERM; those still running then are
    # answered 503.
    shutdown_grace: int = Field(default=20, ge=0)
    # Seconds a looked-up key is trusted before asking the database again; 0 turns it off.
    # Below 1 s, so every replica refuses a revoked key within the promised second.
    auth_cache_ttl: float = Field(default=0.5, ge=0, le=0.9)
    # Seconds a client has to send a request's headers (counted from connecting, or from the
    # first byte of a later request on the same connection), and then its body.
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=20.0, gt=0)
    # The most bytes of request line and headers one request may send.
    max_header_bytes: int = Field(default=16 * 1024, ge=4 * 1024)
    # Open connections per process; never more than the open-file limit leaves room for.
    max_connections: int = Field(default=1000, ge=1)
    # Peers that may call /verify and /metrics (comma-separated addresses or networks).
    verify_allow: str = "127.0.0.1/32,::1/128"
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # Used signatures and throttle counters live here when set, instead of in the database.
    redis_url: str | None = None
    # Prepended to every Redis key, so several deployments can share one Redis.
    redis_key_prefix: str = "apikeys:"

    @field_validator("secret_key_prefix", "request_signing_prefix")
    @classmethod
    def _prefix_is_distinct_text(cls, value: str) -> str:
        if not value or not value.isascii() or not value.replace("_", "").isalnum():
            raise ValueError("a prefix is ASCII letters, digits and underscores")
        return value

    @field_validator("verify_allow")
    @classmethod
    def _verify_allow_is_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @cached_property
    def verify_allow_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.verify_allow)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies_are_addresses_or_networks(cls, value: str) -> str:
        if value.strip() == "*":
            raise ValueError(
                "name the proxies' addresses or networks: trusting every peer would let any "
                "client choose its own address"
            )
        parse_networks(value)
        return value

    @cached_property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.forwarded_allow_ips)

    @cached_property
    def async_database_url(self) -> URL:
        return async_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.get_backend_name() == "sqlite"

    @property
    def public_base_url(self) -> str | None:
        return str(self.public_url).rstrip("/") if self.public_url else None

    def load_master_key(self) -> bytes:
        """The master key from the environment, a file, or (SQLite only) one made on first run."""
        if self.master_key is not None:
            return decode_master_key(self.master_key.get_secret_value(), "APIKEYS_MASTER_KEY")
        if self.master_key_file is not None:
            try:
                content = self.master_key_file.read_text()
            except OSError as error:
                raise ConfigurationError(
                    f"APIKEYS_MASTER_KEY_FILE: cannot read {self.master_key_file}: {error.strerror}"
                ) from None
            return decode_master_key(content, "APIKEYS_MASTER_KEY_FILE")
        if not self.is_sqlite:
            raise ConfigurationError(
                "APIKEYS_MASTER_KEY is required with a non-SQLite database: set it to the base64 "
                "of 32 random bytes (or point APIKEYS_MASTER_KEY_FILE at a file holding it)"
            )
        return self._embedded_master_key()

    def _embedded_master_key(self) -> bytes:
        database = self.async_database_url.database or ""
        directory = Path(database).resolve().parent if database not in ("", ":memory:") else Path()
        path = directory / MASTER_KEY_FILENAME
        if not path.exists():
            # Written aside then hard-linked into place: linking fails if the file exists, so
            # processes starting together all end up with whichever key landed first.
            encoded = base64.b64encode(os.urandom(32)).decode()
            draft = path.with_name(f".{MASTER_KEY_FILENAME}.{os.getpid()}")
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(encoded + "\n")
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return decode_master_key(path.read_text(), str(path))

"""What the service knows about one request: made once by the middleware, read by everyone."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import Scope

from apikeys.config import IPNetwork
from apikeys.domain import ApiKeyInfo

RawHeaders = dict[bytes, bytes]

UNKNOWN_CLIENT = "unknown"
# The longest text of an IP address ("ffff:...:255.255.255.255" with a zone is longer, and
# is no client's address); anything longer is not parsed at all.
_MAX_ADDRESS_LENGTH = 45
_MAX_REMEMBERED_PEERS = 4096


@dataclass(slots=True)
class RequestContext:
    request_id: str
    client_address: str
    # By lower-case name, the first of repeated ones winning.
    headers: RawHeaders
    # Set by the authentication step (apikeys.api.auth) before the endpoint runs.
    caller: ApiKeyInfo | None = None


def context_of(scope: Scope) -> RequestContext:
    context: RequestContext = scope["state"]["context"]
    return context


def read_headers(scope: Scope) -> RawHeaders:
    """The request's headers by name, built once: looking names up in Starlette's Headers
    scans the list each time, and raises and catches a KeyError for every absent one."""
    return dict(reversed(scope["headers"]))


def header(headers: RawHeaders, name: bytes) -> str:
    return headers.get(name, b"").decode("latin-1")


def _address(text: str) -> str | None:
    """`text` as an IP address in its normal form, or None when it is not one."""
    if len(text) > _MAX_ADDRESS_LENGTH:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class ClientAddresses:
    """The one rule for a request's client address: the TCP peer, or, when the peer is a
    trusted proxy, the rightmost X-Forwarded-For entry that is not itself a trusted proxy.

    Every proxy appends the address it received the request from, so entries right of the
    first untrusted one were written by trusted proxies and the rest by the client: an entry
    the client alone wrote is never taken, nor anything that is not an IP address."""

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self._hosts = frozenset(
            str(net.network_address) for net in trusted if net.num_addresses == 1
        )
        self._networks = tuple(net for net in trusted if net.num_addresses > 1)
        self._trusted_peers: dict[str, bool] = {}

    def of(self, scope: Scope) -> str:
        client = scope.get("client")
        peer: str = client[0] if client else UNKNOWN_CLIENT
        if not self._is_trusted(peer):
            return peer
        forwarded = b",".join(
            value for name, value in scope["headers"] if name == b"x-forwarded-for"
        )
        if not forwarded:
            return peer
        address = peer
        for entry in reversed(forwarded.decode("latin-1").split(",")):
            hop = _address(entry.strip())
            if hop is None:
                break
            address = hop
            if not self._is_trusted(hop):
                break
        return address

    def _is_trusted(self, address: str) -> bool:
        if address in self._hosts:
            return True
        if not self._networks:
            return False
        trusted = self._trusted_peers.get(address)
        if trusted is None:
            parsed = _address(address)
            trusted = parsed is not None and any(
                ipaddress.ip_address(parsed) in network for network in self._networks
            )
            if len(self._trusted_peers) >= _MAX_REMEMBERED_PEERS:
                self._trusted_peers.clear()
            self._trusted_peers[address] = trusted
        return trusted

"""The client address: the TCP peer, or behind a trusted proxy the rightmost forwarded entry
that is not itself a trusted proxy; never what the client alone wrote, never a non-address."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from apikeys.api.context import ClientAddresses
from apikeys.config import Settings


def address(forwarded: list[str], peer: str = "127.0.0.1", trusted: str = "127.0.0.1") -> str:
    rule = ClientAddresses(Settings(forwarded_allow_ips=trusted).trusted_proxies)
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return rule.of({"type": "http", "client": (peer, 4000), "headers": headers})


def test_an_untrusted_peer_is_the_address_whatever_it_forwards() -> None:
    assert address(["198.51.100.1"], peer="203.0.113.9") == "203.0.113.9"


def test_behind_a_trusted_proxy_the_entry_it_appended_counts_not_the_clients() -> None:
    assert address(["6.6.6.6, 198.51.100.1"]) == "198.51.100.1"
    assert address(["6.6.6.6", "198.51.100.1"]) == "198.51.100.1"


def test_trusted_proxies_in_the_chain_are_skipped_by_address_or_network() -> None:
    chain = ["6.6.6.6, 198.51.100.1, 10.1.2.3, 10.9.9.9"]

    assert address(chain, trusted="127.0.0.1, 10.0.0.0/8") == "198.51.100.1"
    assert address(["10.1.2.3"], trusted="127.0.0.1,10.0.0.0/8") == "10.1.2.3"


def test_an_entry_that_is_not_an_address_is_never_taken() -> None:
    assert address(["I-was-never-here"]) == "127.0.0.1"
    assert address(["198.51.100.1, I-was-never-here"]) == "127.0.0.1"
    assert address(["1" * 5000]) == "127.0.0.1"
    assert address(["2001:DB8::0001"]) == "2001:db8::1"


def test_no_forwarded_header_from_a_trusted_proxy_leaves_the_proxy() -> None:
    assert address([]) == "127.0.0.1"


@pytest.mark.parametrize("setting", ["*", "proxy.internal", "10.0.0.0/33"])
def test_a_trusted_proxy_setting_that_is_not_addresses_is_refused(setting: str) -> None:
    with pytest.raises(ValidationError, match="addresses"):
        Settings(forwarded_allow_ips=setting)

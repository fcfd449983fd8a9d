"""Secrets, checksums and encryption (apikeys.security), checked against independent code."""

from __future__ import annotations

import hmac
import os
import re
import string
import zlib
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from apikeys.security import (
    SecretKeeper,
    base62_checksum,
    generate_key,
    generate_secret,
    has_valid_checksum,
)
from apikeys.service.authentication import BearerCredentials
from apikeys.service.keys import IssuedKey
from tests.factories import key_info

DIGITS = string.digits + string.ascii_uppercase + string.ascii_lowercase
PREFIXES = ("cvsk_", "cvrs_")


def independent_checksum(text: str) -> str:
    """SPEC §2: CRC32 as big-endian base62 (0-9A-Za-z), left-padded with 0 to six digits."""
    value = zlib.crc32(text.encode("utf-8"))
    digits = ""
    for _ in range(6):
        value, remainder = divmod(value, 62)
        digits = DIGITS[remainder] + digits
    assert value == 0
    return digits


@pytest.mark.parametrize("text", ["", "cvsk_", "cvrs_" + "a" * 43, "x", "Z" * 100])
def test_checksum_is_crc32_in_big_endian_base62(text: str) -> None:
    assert base62_checksum(text) == independent_checksum(text)


def test_checksum_of_known_input_matches_a_hand_computed_value() -> None:
    # 907060870 == 61·62⁴ + 23·62³ + 57·62² + 60·62 + 2: digits z N v y 2, padded to six.
    assert zlib.crc32(b"hello") == 907060870
    assert base62_checksum("hello") == "0zNvy2"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_secret_is_prefix_43_random_base62_and_its_checksum(prefix: str) -> None:
    secret = generate_secret(prefix)

    assert re.fullmatch(re.escape(prefix) + r"[0-9A-Za-z]{49}", secret)
    assert len(secret) == len(prefix) + 43 + 6
    assert secret[-6:] == independent_checksum(secret[:-6])
    assert has_valid_checksum(secret, prefix)


def test_secrets_and_key_ids_do_not_repeat() -> None:
    assert len({generate_secret("cvsk_") for _ in range(200)}) == 200
    ids = {generate_key() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_\-]{16,64}", key_id) for key_id in ids)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_single_character_mutation_fails_the_checksum(prefix: str) -> None:
    secret = generate_secret(prefix)
    replacements = DIGITS + "_-. é"

    mutations = [
        secret[:position] + character + secret[position + 1 :]
        for position in range(len(secret))
        for character in replacements
        if character != secret[position]
    ]

    assert len(mutations) > 3000
    assert not any(has_valid_checksum(mutation, prefix) for mutation in mutations)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],
        lambda s: s + "0",
        lambda s: s[1:],
        lambda s: "",
        lambda s: s.upper(),
        lambda s: s.replace("cvsk_", "cvrs_"),
    ],
    ids=["truncated", "extended", "prefix-cut", "empty", "upper-cased", "other-prefix"],
)
def test_truncated_or_reshaped_secret_fails_the_checksum(mangle: Callable[[str], str]) -> None:
    secret = generate_secret("cvsk_")
    mangled = mangle(secret)

    assert mangled != secret
    assert has_valid_checksum(secret, "cvsk_")
    assert not has_valid_checksum(mangled, "cvsk_")


def test_secret_with_a_short_random_part_but_right_checksum_is_refused() -> None:
    body = "cvsk_" + "a" * 39
    assert not has_valid_checksum(body + independent_checksum(body), "cvsk_")


def test_keeper_encrypts_and_decrypts_with_the_key_id_as_associated_data() -> None:
    keeper = SecretKeeper(os.urandom(32))
    secret = generate_secret("cvrs_")

    ciphertext = keeper.encrypt(secret, "key-one")

    assert secret.encode() not in ciphertext
    assert keeper.decrypt(ciphertext, "key-one") == secret.encode()
    assert keeper.encrypt(secret, "key-one") != ciphertext  # a fresh nonce each time


def test_decrypting_with_other_associated_data_fails() -> None:
    keeper = SecretKeeper(os.urandom(32))
    ciphertext = keeper.encrypt(generate_secret("cvrs_"), "key-one")

    with pytest.raises(InvalidTag):
        keeper.decrypt(ciphertext, "key-two")


def test_decrypting_under_another_master_key_fails() -> None:
    ciphertext = SecretKeeper(os.urandom(32)).encrypt("x", "key-one")

    with pytest.raises(InvalidTag):
        SecretKeeper(os.urandom(32)).decrypt(ciphertext, "key-one")


def test_digest_is_keyed_by_the_master_key() -> None:
    master = os.urandom(32)
    secret = generate_secret("cvsk_")

    assert SecretKeeper(master).digest(secret) == SecretKeeper(master).digest(secret)
    assert SecretKeeper(master).digest(secret) != SecretKeeper(os.urandom(32)).digest(secret)
    assert len(SecretKeeper(master).digest(secret)) == 32


def test_digest_is_hmac_sha256_under_a_key_derived_from_the_master_key() -> None:
    master = os.urandom(32)
    keeper = SecretKeeper(master)
    digest_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"apikeys/secret-digest/v1"
    ).derive(master)

    # Every stored digest depends on this: several in a row, as one keyed state is reused.
    for secret in [generate_secret("cvsk_") for _ in range(3)]:
        assert keeper.digest(secret) == hmac.digest(digest_key, secret.encode(), "sha256")


def test_repr_of_keeper_issued_key_and_credentials_hides_secrets() -> None:
    master = os.urandom(32)
    secret = generate_secret("cvsk_")
    info = key_info(account_id=1, secret_hint="…" + secret[-4:])
    issued = IssuedKey(info, secret)
    shown = (
        repr(SecretKeeper(master)) + repr(issued) + str(issued) + repr(BearerCredentials(secret))
    )

    assert secret not in shown
    assert secret[len("cvsk_") : -6] not in shown
    assert master.hex() not in shown
    assert repr(master) not in shown

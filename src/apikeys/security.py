"""Secret generation, hashing, encryption and request-signature checks.

Pure functions and small value objects: nothing here knows about HTTP or the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

BASE62_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
# Every two-digit base62 numeral, in order: a CRC32 (< 62**6) is three of them.
_BASE62_PAIRS = tuple(high + low for high in BASE62_ALPHABET for low in BASE62_ALPHABET)

# 43 base62 characters carry 256 bits of entropy (62**43 > 2**256).
SECRET_RANDOM_LENGTH = 43
CHECKSUM_LENGTH = 6
# 24 base62 characters: 142 bits, well above the 96 the public identifier needs.
KEY_LENGTH = 24
NONCE_LENGTH = 12


def random_base62(length: int) -> str:
    """Uniform base62 from one read of the system CSPRNG (secrets.choice per character
    costs a call per character, a real share of creating a key)."""
    characters: list[str] = []
    while len(characters) < length:
        # 248 = 4 x 62: bytes below it fall evenly on the alphabet; the rest are dropped.
        randomness = secrets.token_bytes(length + length // 4)
        characters += [BASE62_ALPHABET[byte % 62] for byte in randomness if byte < 248]
    return "".join(characters[:length])


# What follows the prefix: at least 40 random base62 characters, then the 6 of the checksum.
_SECRET_BODY = re.compile(r"[0-9A-Za-z]{46,}")


def base62_checksum(text: str) -> str:
    """CRC32 of `text`, written as big-endian base62 left-padded to six characters.

    Three lookups in a table of digit pairs rather than a loop of six divisions: every Bearer
    request checks one."""
    value = zlib.crc32(text.encode())
    pairs = len(_BASE62_PAIRS)
    return (
        _BASE62_PAIRS[value // pairs**2]
        + _BASE62_PAIRS[value // pairs % pairs]
        + _BASE62_PAIRS[value % pairs]
    )


def generate_secret(prefix: str) -> str:
    body = prefix + random_base62(SECRET_RANDOM_LENGTH)
    return body + base62_checksum(body)


def has_valid_checksum(secret: str, prefix: str) -> bool:
    """True when `secret` is shaped like one this service issued with `prefix`.

    Lets a mistyped or made-up secret be refused without touching the database.
    """
    return (
        secret.startswith(prefix)
        # Only ASCII gets past this, which compare_digest needs (it raises on other text).
        and _SECRET_BODY.fullmatch(secret, len(prefix)) is not None
        and hmac.compare_digest(
            secret[-CHECKSUM_LENGTH:], base62_checksum(secret[:-CHECKSUM_LENGTH])
        )
    )


def generate_key() -> str:
    return random_base62(KEY_LENGTH)


def secret_hint(secret: str) -> str:
    return "…" + secret[-4:]


def _derive(master_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master_key)


class SecretKeeper:
    """Turns secrets into what may be stored: an HMAC digest, and for signing keys a ciphertext.

    Both keys are derived from the one master key with HKDF, so a leaked digest key
    says nothing about the encryption key and vice versa.
    """

    __slots__ = ("_aead", "_keyed_digest")

    def __init__(self, master_key: bytes) -> None:
        # Keyed once; each digest copies it, which skips deriving the HMAC pads again.
        self._keyed_digest = crypto_hmac.HMAC(
            _derive(master_key, b"apikeys/secret-digest/v1"), hashes.SHA256()
        )
        self._aead = AESGCM(_derive(master_key, b"apikeys/secret-encryption/v1"))

    def __repr__(self) -> str:
        return "SecretKeeper(<hidden>)"

    def digest(self, secret: str) -> bytes:
        mac = self._keyed_digest.copy()
        mac.update(secret.encode())
        return mac.finalize()

    def encrypt(self, secret: str, key: str) -> bytes:
        """AES-256-GCM with the key (its public identifier) as associated data.

        Binding the ciphertext to its key means a row's ciphertext copied onto
        another key fails to decrypt instead of lending that key its secret.
        """
        nonce = secrets.token_bytes(NONCE_LENGTH)
        return nonce + self._aead.encrypt(nonce, secret.encode(), key.encode())

    def decrypt(self, ciphertext: bytes, key: str) -> bytes:
        nonce, sealed = ciphertext[:NONCE_LENGTH], ciphertext[NONCE_LENGTH:]
        return self._aead.decrypt(nonce, sealed, key.encode())


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """What a requestSigning client signs: key, Expires as sent, absolute URL and raw body."""

    key: str
    expires: str
    url: str
    body: bytes

    def to_bytes(self) -> bytes:
        return b"\n".join((self.key.encode(), self.expires.encode(), self.url.encode(), self.body))


def sign(secret: bytes, message: SignedMessage) -> str:
    """Hex HMAC-SHA256 of the message, exactly as Convert's published client code computes it."""
    return hmac.new(secret, message.to_bytes(), hashlib.sha256).hexdigest()


def signature_matches(secret: bytes, message: SignedMessage, signature_hex: str) -> bool:
    return hmac.compare_digest(sign(secret, message), signature_hex.lower())

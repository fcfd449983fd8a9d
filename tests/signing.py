"""Client-side signing for the tests, written from Convert's published sample, not from
the service's code, so a shared mistake cannot make both sides agree."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time


def convert_signature(key: str, secret: str, expires: int | str, url: str, body: str) -> str:
    sign_string = key + "\n" + str(expires) + "\n" + url + "\n" + body
    message = bytes(sign_string, "utf-8")
    secret_bytes = bytes(secret, "utf-8")
    digest = hmac.new(secret_bytes, message, digestmod=hashlib.sha256).digest()
    return str(binascii.hexlify(digest), "ascii")


def signed_headers(
    key: str, secret: str, url: str, body: bytes = b"", expires: int | None = None
) -> dict[str, str]:
    expires = int(time.time()) + 30 if expires is None else expires
    signature = convert_signature(key, secret, expires, url, body.decode("utf-8"))
    return {
        "Convert-Application-ID": key,
        "Expires": str(expires),
        "Authorization": "Convert-HMAC-SHA256 Signature=" + signature,
    }


def bearer_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}

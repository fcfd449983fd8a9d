"""A client written only from what Convert publishes — its Python sample's signing (as in
tests/signing.py), the API v2 operations and field names — pointed at /api/v2 of a real
server, on each backend."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx
import pytest

from tests.live import LiveService, live_fixture  # noqa: F401  (the `live` fixture)
from tests.signing import convert_signature

pytestmark = pytest.mark.full

# Each request is signed afresh: a later Expires for every one, so no two share a signature.
_LATER = itertools.count(30)


class ConvertClient:
    """Convert's Python sample, made into a client: a signing key signs each request; a
    secret key is sent as a Bearer token."""

    def __init__(self, base_url: str, application_id: str, secret: str, auth_type: str) -> None:
        self.base_url = base_url
        self.application_id = application_id
        self.secret = secret
        self.auth_type = auth_type

    def _headers(self, url: str, body: str) -> dict[str, str]:
        if self.auth_type == "secretKey":
            return {"Authorization": "Bearer " + self.secret}
        expires = int(time.time()) + next(_LATER)
        signature = convert_signature(self.application_id, self.secret, expires, url, body)
        return {
            "Expires": str(expires),
            "Convert-Authorization": "Convert-HMAC-SHA256 Signature=" + signature,
            "Convert-Application-ID": self.application_id,
        }

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        url = self.base_url + path
        body = "" if payload is None else json.dumps(payload)
        headers = self._headers(url, body)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return httpx.request(method, url, headers=headers, content=body.encode(), timeout=30)

    def get_api_keys(self, account_id: int) -> httpx.Response:
        return self.call("GET", f"/accounts/{account_id}/api-keys")

    def create_api_key(self, account_id: int, api_key: dict[str, Any]) -> httpx.Response:
        return self.call("POST", f"/accounts/{account_id}/api-keys/add", api_key)

    def delete_api_key(self, account_id: int, key_id: str) -> httpx.Response:
        return self.call("DELETE", f"/accounts/{account_id}/api-keys/{key_id}/delete")


def client_of(live: LiveService, api_key: dict[str, Any]) -> ConvertClient:
    return ConvertClient(
        f"{live.base_url}/api/v2", api_key["key_id"], api_key["key_secret"], api_key["auth_type"]
    )


def test_a_convert_client_creates_lists_uses_and_deletes_keys_of_both_types(
    live: LiveService,
) -> None:
    account = live.account_id
    owner = ConvertClient(
        f"{live.base_url}/api/v2",
        live.signing_owner.key,
        live.signing_owner.secret,
        "requestSigning",
    )

    made = [
        owner.create_api_key(account, {"name": "Nightly Data Sync Script", "projects": [1]}),
        owner.create_api_key(
            account, {"name": "Reporting Dashboard Integration", "auth_type": "secretKey"}
        ),
    ]
    assert [response.status_code for response in made] == [201, 201], made[-1].text
    signing, secret = (response.json() for response in made)
    assert (signing["auth_type"], signing["projects"], signing["role"]) == (
        "requestSigning", [1], "admin",
    )  # fmt: skip
    assert (secret["auth_type"], secret["projects"]) == ("secretKey", None)

    listed = owner.get_api_keys(account)
    assert listed.status_code == 200, listed.text
    shown = {key["key_id"]: key for key in listed.json()["data"]}
    for made_key in (signing, secret):
        assert shown[made_key["key_id"]]["key_secret"] == "…" + made_key["key_secret"][-4:]
        assert made_key["key_secret"] not in listed.text

    for made_key in (signing, secret):
        used = client_of(live, made_key).get_api_keys(account)
        assert used.status_code == 200, used.text
        assert made_key["key_id"] in [key["key_id"] for key in used.json()["data"]]

    for made_key in (signing, secret):
        deleted = owner.delete_api_key(account, made_key["key_id"])
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["code"] == 200

    remaining = [key["key_id"] for key in owner.get_api_keys(account).json()["data"]]
    assert signing["key_id"] not in remaining and secret["key_id"] not in remaining
    for made_key in (signing, secret):
        refused = client_of(live, made_key).get_api_keys(account)
        assert refused.status_code == 401
        assert refused.json()["code"] == 401 and refused.json()["fields"] == []


def test_a_convert_client_gets_convert_s_error_shape_for_a_bad_body(live: LiveService) -> None:
    owner = ConvertClient(
        f"{live.base_url}/api/v2", live.bearer_owner.key, live.bearer_owner.secret, "secretKey"
    )

    response = owner.create_api_key(live.account_id, {"name": "x", "role": "superuser"})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json()["fields"] == ["role"]

"""Roll, update and idempotent creation over real HTTP, against a real server on each
backend, each request signed afresh."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx
import pytest

from tests.live import LiveService, live_fixture  # noqa: F401  (the `live` fixture)
from tests.signing import bearer_headers, signed_headers

pytestmark = pytest.mark.full

_LATER = itertools.count(30)


def signed(
    live: LiveService, method: str, url: str, payload: Any = None, **headers: str
) -> httpx.Response:
    body = b"" if payload is None else json.dumps(payload).encode()
    owner = live.signing_owner
    auth = signed_headers(owner.key, owner.secret, url, body, int(time.time()) + next(_LATER))
    if payload is not None:
        headers["Content-Type"] = "application/json"
    return httpx.request(method, url, content=body, headers={**headers, **auth}, timeout=30)


def test_an_idempotent_create_retried_over_http_answers_the_same_key(live: LiveService) -> None:
    body = {"name": "Nightly Data Sync Script", "type": "secretKey"}

    first = signed(live, "POST", live.keys_url, body, **{"Idempotency-Key": "nightly-1"})
    retry = signed(live, "POST", live.keys_url, body, **{"Idempotency-Key": "nightly-1"})
    other = signed(
        live, "POST", live.keys_url, {**body, "name": "x"}, **{"Idempotency-Key": "nightly-1"}
    )

    assert first.status_code == retry.status_code == 201, retry.text
    assert retry.json()["key"] == first.json()["key"]
    assert retry.json()["secret"] == first.json()["secret"]
    assert other.status_code == 422


def test_a_roll_then_a_rename_over_http(live: LiveService) -> None:
    old = signed(live, "POST", live.keys_url, {"name": "Dashboard", "type": "secretKey"}).json()

    rolled = signed(live, "POST", f"{live.keys_url}/{old['key']}/roll", {"expires_in": 3600})
    renamed = signed(live, "PATCH", f"{live.keys_url}/{old['key']}", {"name": "Dashboard (old)"})

    assert rolled.status_code == 201, rolled.text
    new = rolled.json()
    assert new["rolled_from"] == old["key"] and new["name"] == "Dashboard"
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Dashboard (old)"
    assert renamed.json()["expires_at"] is not None
    me = f"{live.base_url}/me"
    for key in (old, new):
        assert httpx.get(me, headers=bearer_headers(key["secret"])).status_code == 200

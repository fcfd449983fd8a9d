"""Every example in the OpenAPI document is one the API itself would give or take: each is
valid against its own schema, and each request body example, sent to a real server, is
answered with the operation's success status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from apikeys.api.app import create_app
from apikeys.config import Settings
from tests.conftest import random_master_key
from tests.live import LiveService, live_fixture  # noqa: F401  (the fixture)
from tests.signing import bearer_headers

DOCUMENT_URI = "urn:apikeys:openapi"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass(frozen=True)
class Example:
    where: str  # a JSON pointer into the document, for the failure message
    schema_pointer: str  # where the schema it must satisfy is
    value: Any


def document() -> dict[str, Any]:
    # Building the document needs no database: the app is made, never started.
    settings = Settings(database_url="sqlite:///unused.db", master_key=random_master_key())
    built: dict[str, Any] = create_app(settings).openapi()
    return json.loads(json.dumps(built))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(*tokens: str | int) -> str:
    return "".join(f"/{_escape(str(token))}" for token in tokens)


def _media_examples(media: dict[str, Any], at: tuple[str | int, ...]) -> Iterator[Example]:
    """A media type's or a parameter's `example` and `examples` (Example objects)."""
    schema_at = _pointer(*at, "schema")
    if "example" in media:
        yield Example(_pointer(*at, "example"), schema_at, media["example"])
    for name, example in media.get("examples", {}).items():
        yield Example(_pointer(*at, "examples", name), schema_at, example["value"])


def _schema_examples(schema: Any, at: tuple[str | int, ...]) -> Iterator[Example]:
    """`example` and `examples` (a list) of a schema and of every schema inside it."""
    if isinstance(schema, dict):
        if "example" in schema:
            yield Example(_pointer(*at, "example"), _pointer(*at), schema["example"])
        if isinstance(schema.get("examples"), list):
            for index, value in enumerate(schema["examples"]):
                yield Example(_pointer(*at, "examples", index), _pointer(*at), value)
        for key, child in schema.items():
            if key not in ("example", "examples"):
                yield from _schema_examples(child, (*at, key))
    elif isinstance(schema, list):
        for index, child in enumerate(schema):
            yield from _schema_examples(child, (*at, index))


def examples_of(doc: dict[str, Any]) -> list[Example]:
    found: list[Example] = []
    for name, schema in doc["components"]["schemas"].items():
        found += _schema_examples(schema, ("components", "schemas", name))
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            at: tuple[str | int, ...] = ("paths", path, method)
            for index, parameter in enumerate(operation.get("parameters", [])):
                found += _media_examples(parameter, (*at, "parameters", index))
                found += _schema_examples(parameter["schema"], (*at, "parameters", index, "schema"))
            body = operation.get("requestBody", {}).get("content", {})
            for media_type, media in body.items():
                found += _media_examples(media, (*at, "requestBody", "content", media_type))
            for status, response in operation["responses"].items():
                for media_type, media in response.get("content", {}).items():
                    found += _media_examples(
                        media, (*at, "responses", status, "content", media_type)
                    )
    return found


def test_every_example_in_the_document_is_valid_against_its_own_schema() -> None:
    doc = document()
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    examples = examples_of(doc)

    invalid: dict[str, list[str]] = {}
    for example in examples:
        validator = Draft202012Validator(
            {"$ref": f"{DOCUMENT_URI}#{example.schema_pointer}"},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = [error.message for error in validator.iter_errors(example.value)]
        if errors:
            invalid[example.where] = errors

    assert len(examples) >= 40  # the problem examples alone are 37
    assert invalid == {}


def test_every_success_body_has_an_example_of_its_own_so_no_page_makes_one_up() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]

    def has_example(schema: dict[str, Any]) -> bool:
        if "$ref" in schema:
            return has_example(schemas[schema["$ref"].rsplit("/", 1)[1]])
        return bool(schema.get("examples")) or "example" in schema

    without = [
        (method, path, status)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status.startswith("2")
        for media in response.get("content", {}).values()
        if media.get("schema", {}).get("$ref")
        and "example" not in media
        and "examples" not in media
        and not has_example(media["schema"])
    ]

    assert without == []


def request_body_examples(doc: dict[str, Any]) -> list[tuple[str, str, str, Any, int]]:
    """(method, path template, example name, body, the operation's success status)."""
    found = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if not operation or "requestBody" not in operation:
                continue
            success = min(int(status) for status in operation["responses"] if status[0] == "2")
            media = operation["requestBody"]["content"]["application/json"]
            named = {name: example["value"] for name, example in media.get("examples", {}).items()}
            if "example" in media:
                named["example"] = media["example"]
            found += [(method, path, name, body, success) for name, body in named.items()]
    return found


@pytest.mark.full
def test_every_request_body_example_is_accepted_by_a_real_server(live: LiveService) -> None:
    examples = request_body_examples(document())
    owner = bearer_headers(live.bearer_owner.secret)

    answers = {}
    for method, template, name, body, _ in examples:
        # In the owner key's own account, on a key made for the purpose.
        path = template.replace("{account_id}", str(live.account_id))
        if "{key}" in path:
            made = httpx.post(live.keys_url, json={"name": name}, headers=owner, timeout=30)
            path = path.replace("{key}", made.json()["key"])
        response = httpx.request(method, live.base_url + path, json=body, headers=owner, timeout=30)
        answers[(method, template, name)] = response.status_code

    assert len(examples) >= 2
    assert answers == {
        (method, template, name): success for method, template, name, _, success in examples
    }

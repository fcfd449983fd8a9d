"""The /docs page in a real headless Chromium: both key types create a key from the page.

Uses Debian's chromium (/usr/bin/chromium, installed by .ci/ensure-chromium) through
Playwright; no browser is downloaded. Every request the page makes to a host other than
127.0.0.1 is aborted and recorded, and the test fails if there is any.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Locator, Page, Request, Route, expect, sync_playwright

from apikeys.api.openapi import (
    REQUEST_SIGNING_SCHEME,
    REQUEST_SIGNING_SECRET_SCHEME,
    SECRET_KEY_SCHEME,
)
from tests.live import LiveService, live_fixture  # noqa: F401
from tests.signing import convert_signature

pytestmark = pytest.mark.full

CHROMIUM = os.environ.get("APIKEYS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LOOPBACK = "127.0.0.1"
CREATE_PATH = "/accounts/{account_id}/api-keys"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


class Traffic:
    """Everything the page asked for, and what was refused for leaving 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.refused: list[str] = []
        self.console: list[str] = []

    def route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == LOOPBACK:
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("blockedbyclient")

    def off_host(self) -> list[str]:
        return self.refused + [
            request.url
            for request in self.requests
            if urlsplit(request.url).scheme not in ("data", "blob")
            and urlsplit(request.url).hostname != LOOPBACK
        ]


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture
def page(browser: Browser, traffic: Traffic) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.route("**/*", traffic.route)
    page = context.new_page()
    page.on("request", lambda request: traffic.requests.append(request))
    page.on("console", lambda message: traffic.console.append(message.text))
    page.on("pageerror", lambda error: traffic.console.append(str(error)))
    yield page
    context.close()


def assert_stayed_on_this_host(traffic: Traffic) -> None:
    """Asserted by each test itself, so a breach fails that test rather than erroring in a
    fixture's teardown."""
    assert traffic.off_host() == []
    assert [line for line in traffic.console if "Content Security Policy" in line] == []


def authorize(page: Page, values: dict[str, str]) -> None:
    page.locator("button.btn.authorize").first.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    expect(dialog).to_be_visible()
    for scheme, value in values.items():
        # Exact names: one scheme's name is a prefix of another's.
        title = page.locator("h4", has_text=re.compile(rf"^\s*{re.escape(scheme)}\s*\("))
        box = dialog.locator(".auth-container", has=title)
        box.locator("input").first.fill(value)
        box.locator("button.modal-btn.auth.authorize").click()
        expect(box.locator("button.modal-btn.auth", has_text="Logout")).to_be_visible()
    dialog.locator("button.btn-done").first.click()
    expect(dialog).to_be_hidden()


def create_from_page(page: Page, live: LiveService, example: str) -> tuple[Locator, Request, dict]:
    """Open the create operation, pick a body example, execute; the request and the 201 body."""
    operation = page.locator(".opblock-post", has=page.locator(f"[data-path='{CREATE_PATH}']"))
    operation.locator(".opblock-summary").first.click()
    operation.locator("button.try-out__btn").click()
    operation.locator("tr[data-param-name='account_id'] input").fill(str(live.account_id))
    examples = operation.locator(".opblock-section-request-body select.examples-select-element")
    examples.select_option(label=example)
    with page.expect_response(lambda response: response.request.method == "POST") as answer:
        operation.locator("button.execute").click()
    response = answer.value
    status = operation.locator(".live-responses-table .response .response-col_status").first
    expect(status).to_have_text(re.compile(r"^\s*201\b"))
    assert response.status == 201
    return operation, response.request, response.json()


def response_panel_shows(operation: Locator, text: str) -> bool:
    body = operation.locator(".live-responses-table .response-col_description pre").first
    return text in body.inner_text()


def test_docs_page_signs_a_create_request_with_a_request_signing_key(
    page: Page, traffic: Traffic, live: LiveService, request: pytest.FixtureRequest
) -> None:
    owner = live.signing_owner
    page.goto(f"{live.base_url}/docs")
    authorize(
        page, {REQUEST_SIGNING_SCHEME: owner.key, REQUEST_SIGNING_SECRET_SCHEME: owner.secret}
    )

    operation, sent, created = create_from_page(page, live, "Nightly Data Sync Script")

    assert created["name"] == "Nightly Data Sync Script" and created["type"] == "requestSigning"
    assert response_panel_shows(operation, created["secret"])
    headers = sent.all_headers()
    assert headers["convert-application-id"] == owner.key
    body = sent.post_data or ""
    expected = convert_signature(owner.key, owner.secret, headers["expires"], sent.url, body)
    assert headers["authorization"] == f"Convert-HMAC-SHA256 Signature={expected}"
    secret_sent = any(owner.secret in value for value in [*headers.values(), sent.url, body])
    assert not secret_sent
    assert "convert-secret" not in headers
    save_screenshot(page, operation, created, f"docs-try-it-{request.node.callspec.id}.png")
    assert_stayed_on_this_host(traffic)


def test_docs_page_sends_a_secret_key_as_bearer(
    page: Page, traffic: Traffic, live: LiveService
) -> None:
    owner = live.bearer_owner
    page.goto(f"{live.base_url}/docs")
    authorize(page, {SECRET_KEY_SCHEME: owner.secret})

    operation, sent, created = create_from_page(page, live, "Reporting Dashboard Integration")

    assert created["name"] == "Reporting Dashboard Integration" and created["type"] == "secretKey"
    assert response_panel_shows(operation, created["secret"])
    bearer_sent = sent.all_headers()["authorization"] == f"Bearer {owner.secret}"
    assert bearer_sent
    assert_stayed_on_this_host(traffic)


def test_redoc_page_renders_from_this_service_alone(
    page: Page, traffic: Traffic, live: LiveService
) -> None:
    page.goto(f"{live.base_url}/redoc")

    expect(page.locator("h1", has_text="apikeys")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Nightly Data Sync Script").first).to_be_attached()
    assert_stayed_on_this_host(traffic)


def test_the_signing_secret_box_says_it_stays_in_the_page_not_which_header_sends_it(
    page: Page, live: LiveService
) -> None:
    page.goto(f"{live.base_url}/docs")
    page.locator("button.btn.authorize").first.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    title = page.locator("h4", has_text=re.compile(rf"^\s*{REQUEST_SIGNING_SECRET_SCHEME}\s*\("))
    box = dialog.locator(".auth-container", has=title)

    expect(box).to_contain_text("kept in this page")
    expect(box).to_contain_text("never sent to the server")
    assert "Convert-Secret" not in box.inner_text()
    assert box.locator("input").first.get_attribute("type") == "password"
    # The key's own box still names the header it is sent in.
    key_title = page.locator("h4", has_text=re.compile(rf"^\s*{REQUEST_SIGNING_SCHEME}\s*\("))
    expect(dialog.locator(".auth-container", has=key_title)).to_contain_text(
        "Convert-Application-ID"
    )


def test_redoc_samples_show_ids_the_api_gives_not_made_up_zeros(
    page: Page, live: LiveService
) -> None:
    page.goto(f"{live.base_url}/redoc")
    expect(page.locator("h1", has_text="apikeys")).to_be_visible(timeout=20_000)

    text = re.sub(r"\s+", " ", page.locator("body").inner_text())

    assert '"account_id": 1' in text
    assert re.search(r'"projects": \[ ?1 ?\]', text)
    assert '"account_id": 0' not in text
    assert not re.search(r'"projects": \[ ?0', text)


def save_screenshot(page: Page, operation: Locator, created: dict, name: str) -> None:
    """A picture of the signed request and its 201, the new secret cut short in it."""
    page.evaluate(
        """([secret, shown]) => {
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                if (node.nodeValue.includes(secret)) {
                    node.nodeValue = node.nodeValue.split(secret).join(shown);
                }
            }
        }""",
        [created["secret"], created["secret"][:5] + "…(redacted)…" + created["secret"][-4:]],
    )
    # From the operation's title to the server's response, leaving out the documented ones.
    top = operation.bounding_box()
    bottom = operation.locator(".live-responses-table").first.bounding_box()
    assert top is not None and bottom is not None
    scrolled = page.evaluate("window.scrollY")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(
        path=str(ARTIFACTS / name),
        full_page=True,
        clip={
            "x": top["x"],
            "y": top["y"] + scrolled,
            "width": top["width"],
            "height": bottom["y"] + bottom["height"] - top["y"],
        },
    )
    assert json.dumps(created["secret"]) not in page.content()

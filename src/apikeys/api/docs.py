"""The /docs (Swagger UI) and /redoc pages, with every asset served from this service.

The Swagger UI and ReDoc files come from the `fastapi-standalone-docs` package; its ReDoc
build loads its logo from the page's own path instead of a CDN. A page works on a machine
with no internet access, and its Content-Security-Policy lets the browser fetch nothing
from any other origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR_ASSETS = Path(str(files("fastapi_standalone_docs") / "static"))
OWN_ASSETS = Path(__file__).parent / "static"
VENDOR_PREFIX = "/static/docs"
OWN_PREFIX = "/static/apikeys"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """Only this origin; the page's own inline scripts are allowed by their hashes."""
    digests = (hashlib.sha256(script.encode()).digest() for script in _INLINE_SCRIPT.findall(html))
    hashes = " ".join(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests)
    return (
        f"default-src 'self'; script-src 'self' {hashes}; "
        # Both UIs set inline styles; Swagger UI draws icons from data: URLs; ReDoc runs a
        # search worker from a blob: URL.
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "worker-src 'self' blob:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(html)})


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets, all without authentication."""
    app.mount(VENDOR_PREFIX, StaticFiles(directory=VENDOR_ASSETS), name="docs-vendor-assets")
    app.mount(OWN_PREFIX, StaticFiles(directory=OWN_ASSETS), name="docs-own-assets")

    def url(request: Request, path: str) -> str:
        root: str = request.scope.get("root_path", "")
        return root + path

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        bundle = url(request, f"{VENDOR_PREFIX}/swagger/swagger-ui-bundle.js")
        page = get_swagger_ui_html(
            openapi_url=url(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=bundle,
            swagger_css_url=url(request, f"{VENDOR_PREFIX}/swagger/swagger-ui.css"),
            swagger_favicon_url=url(request, f"{VENDOR_PREFIX}/fastapi/favicon.png"),
            # validatorUrl: null keeps Swagger UI from sending the document to validator.swagger.io;
            # persistAuthorization: false keeps the secrets out of the browser's localStorage.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )
        html = bytes(page.body).decode()
        # The signing script must run after the bundle and before the inline call that builds
        # the UI; refuse to serve a page where that cannot be guaranteed.
        bundle_tag = f'<script src="{bundle}"></script>'
        if html.count(bundle_tag) != 1:
            raise RuntimeError("FastAPI's Swagger UI page changed; cannot add request signing")
        signing_tag = f'<script src="{url(request, OWN_PREFIX + "/request-signing.js")}"></script>'
        return _page(html.replace(bundle_tag, f"{bundle_tag}\n{signing_tag}"))

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=url(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - ReDoc",
            redoc_js_url=url(request, f"{VENDOR_PREFIX}/redoc/redoc.standalone.js"),
            redoc_favicon_url=url(request, f"{VENDOR_PREFIX}/fastapi/favicon.png"),
            with_google_fonts=False,
        )
        return _page(bytes(page.body).decode())

    # The packaged ReDoc build asks for its logo at the page's path + "/logo-mini.svg".
    @app.get("/redoc/logo-mini.svg", include_in_schema=False)
    async def redoc_logo() -> FileResponse:
        return FileResponse(VENDOR_ASSETS / "redoc" / "logo-mini.svg", media_type="image/svg+xml")

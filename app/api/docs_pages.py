"""The Swagger UI and ReDoc pages, loading pinned asset versions with Subresource
Integrity.

FastAPI's own pages load `swagger-ui-dist@5` and `redoc@2` from the CDN: whatever
release those tags point at today, unchecked, in the page where an operator pastes an
admin token into "Authorize". Here every script and stylesheet names an exact
release and carries its SHA-384, so the browser runs nothing but those bytes (a
changed file fails to load instead); no Google Fonts and no favicon from a third
party either.

To move to another release, compute the digests from the npm registry (the CDN serves
the published files as they are), e.g.:

    npm pack swagger-ui-dist@<version> && tar -xOzf swagger-ui-dist-<version>.tgz \
        package/swagger-ui-bundle.js | openssl dgst -sha384 -binary | base64
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse

__all__ = ["ASSETS", "REDOC_JS", "SWAGGER_CSS", "SWAGGER_JS", "Asset", "install_docs_pages"]

_CDN = "https://cdn.jsdelivr.net/npm"
_NO_ICON = "data:,"  # no favicon request to anyone


@dataclass(frozen=True, slots=True)
class Asset:
    url: str
    integrity: str  # "sha384-<base64>" of the file the URL serves


SWAGGER_JS = Asset(f"{_CDN}/swagger-ui-dist@5.35.0/swagger-ui-bundle.js",
                   "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9")
SWAGGER_CSS = Asset(f"{_CDN}/swagger-ui-dist@5.35.0/swagger-ui.css",
                    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I")
REDOC_JS = Asset(f"{_CDN}/redoc@2.5.4/bundles/redoc.standalone.js",
                 "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5")
ASSETS = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS)


def _with_integrity(page: HTMLResponse, *assets: Asset) -> HTMLResponse:
    """The page with `integrity` and `crossorigin` on the tag loading each asset. Each
    must appear exactly once: a FastAPI template change fails loudly (and in the tests),
    never silently drops a check."""
    html = bytes(page.body).decode()
    for asset in assets:
        for attribute in ("src", "href"):
            tag = f'{attribute}="{asset.url}"'
            if html.count(tag) == 1:
                html = html.replace(tag, f'{tag} integrity="{asset.integrity}" '
                                         'crossorigin="anonymous"')
                break
        else:
            raise RuntimeError(f"the docs page does not load {asset.url} exactly once")
    return HTMLResponse(html)


def install_docs_pages(app: FastAPI, docs_url: str, redoc_url: str) -> None:
    """GET `docs_url` (Swagger UI) and `redoc_url` (ReDoc) for the app's OpenAPI
    document (FastAPI's own pages must be off: docs_url=None, redoc_url=None)."""
    if app.openapi_url is None:
        raise ValueError("the docs pages need the app's OpenAPI document")
    openapi_url = app.openapi_url

    async def swagger_ui(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=request.scope.get("root_path", "").rstrip("/") + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=SWAGGER_JS.url, swagger_css_url=SWAGGER_CSS.url,
            swagger_favicon_url=_NO_ICON, swagger_ui_parameters=app.swagger_ui_parameters,
        )
        return _with_integrity(page, SWAGGER_JS, SWAGGER_CSS)

    async def redoc(request: Request) -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=request.scope.get("root_path", "").rstrip("/") + openapi_url,
            title=f"{app.title} - ReDoc", redoc_js_url=REDOC_JS.url,
            redoc_favicon_url=_NO_ICON, with_google_fonts=False,
        )
        return _with_integrity(page, REDOC_JS)

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)

"""The API docs pages, served with no network: ``/docs`` (Swagger UI) and ``/redoc``.

FastAPI's own pages load their scripts and styles from a CDN, so they are blank
offline. These pages are FastAPI's (``get_swagger_ui_html``, ``get_redoc_html``)
pointed at copies shipped in the package under ``static/`` (vendored by
``scripts/vendor-docs-ui``; each folder's README names the package and exact
version). The page routes and every asset are open exactly when the docs are
(``DISPATCHER_PUBLIC_API_DOCS``): see :func:`dispatcher.api.middleware.open_routes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
STATIC_URL: Final = "/docs/static"
DOCS_URL: Final = "/docs"
OAUTH2_REDIRECT_URL: Final = "/docs/oauth2-redirect"
REDOC_URL: Final = "/redoc"
_FAVICON: Final = f"{STATIC_URL}/swagger-ui/favicon-32x32.png"


def asset_paths() -> frozenset[str]:
    """The URL path of every file served under :data:`STATIC_URL`."""
    return frozenset(
        f"{STATIC_URL}/{path.relative_to(STATIC_DIR).as_posix()}"
        for path in STATIC_DIR.rglob("*")
        if path.is_file()
    )


def add_docs_pages(app: FastAPI, openapi_url: str) -> None:
    """Serve the docs pages and their assets on ``app`` (made with docs_url=redoc_url=None)."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")
    title = app.title

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=_FAVICON,
            # No badge fetched from validator.swagger.io (which would send it the document).
            swagger_ui_parameters={"validatorUrl": "none"},
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{STATIC_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=_FAVICON,
            with_google_fonts=False,
        )

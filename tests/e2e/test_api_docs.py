"""The API docs over a real daemon: /docs and /redoc load every asset from the daemon
itself (no CDN, so they work offline), open exactly when the docs are; the webhook
routes' headers, body and answers are in the OpenAPI document, as a delivery gets them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from dispatcher.api.docs_ui import STATIC_DIR, STATIC_URL, asset_paths
from tests.daemon_fixture import Daemon

SECRET = "gh-secret-for-docs-tests"
CONTENT_TYPES = {  # what each kind of asset must be served as (a browser checks)
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}
PAGES = ["/docs", "/redoc", "/docs/oauth2-redirect"]


class _Urls(HTMLParser):
    """Every URL a page makes the browser load: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def page_urls(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def public(daemon_factory: Callable[..., Daemon]) -> Iterator[httpx.Client]:
    """A client without the token, to a daemon with public docs and a GitHub secret."""
    d = daemon_factory(
        DISPATCHER_PUBLIC_API_DOCS="true", DISPATCHER_GITHUB_WEBHOOK_SECRET=SECRET
    ).start()
    with httpx.Client(base_url=d.url, timeout=30) as client:
        yield client


def test_docs_pages_load_every_asset_from_the_daemon(public: httpx.Client) -> None:
    loaded: set[str] = set()
    for page in PAGES:
        resp = public.get(page)
        assert resp.status_code == 200, (page, resp.text)
        assert resp.headers["content-type"].startswith("text/html"), page
        assert "cdn." not in resp.text and "https://" not in resp.text, (page, resp.text)
        assert "http://" not in resp.text, (page, resp.text)
        for url in page_urls(resp.text):
            assert url.startswith("/") and not url.startswith("//"), (page, url)
            loaded.add(url)
    assert {
        f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
        f"{STATIC_URL}/swagger-ui/swagger-ui.css",
        f"{STATIC_URL}/swagger-ui/favicon-32x32.png",
        f"{STATIC_URL}/redoc/redoc.standalone.js",
    } <= loaded, loaded
    for url in sorted(loaded):
        resp = public.get(url)
        assert resp.status_code == 200, (url, resp.text[:200])
        kind = resp.headers["content-type"].split(";")[0]
        assert kind in CONTENT_TYPES[Path(url).suffix], (url, kind)
        shipped = STATIC_DIR / url.removeprefix(f"{STATIC_URL}/")
        assert resp.content == shipped.read_bytes(), url
    # Swagger UI reads the document from the daemon too.
    assert "url: '/openapi.json'" in public.get("/docs").text
    assert public.get("/openapi.json").status_code == 200


def test_each_vendored_package_names_its_version_source_and_license() -> None:
    for folder, package in [("swagger-ui", "swagger-ui-dist"), ("redoc", "redoc")]:
        readme = (STATIC_DIR / folder / "README.md").read_text()
        assert f"package: `{package}`, exact version `" in readme, readme
        assert f"https://registry.npmjs.org/{package}/-/{package}-" in readme, readme
        assert "license: " in readme, readme
        assert (STATIC_DIR / folder / "LICENSE").stat().st_size > 500
    version = (STATIC_DIR / "swagger-ui" / "README.md").read_text().split("version `")[1]
    assert version.startswith("5."), "Swagger UI 4 does not render OpenAPI 3.1"


def test_docs_assets_need_the_token_when_the_docs_do(daemon: Daemon) -> None:
    assets = sorted(asset_paths())
    assert f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js" in assets
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        for path in [*PAGES, *assets]:
            resp = client.get(path)
            assert resp.status_code == 401, (path, resp.status_code)
            assert daemon.api.get(path).status_code == 200, path
        # No prefix is open: what is not a shipped file is refused before the file server.
        for path in [f"{STATIC_URL}/swagger-ui/", f"{STATIC_URL}/swagger-ui/swagger-ui.js.map"]:
            assert client.get(path).status_code == 401, path


def test_the_openapi_document_describes_the_webhooks(daemon: Daemon) -> None:
    doc = daemon.api.get("/openapi.json").json()
    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert committed["paths"]["/webhooks/github"] == doc["paths"]["/webhooks/github"]
    expected = {
        "/webhooks/github": {
            "X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery", "X-Gitea-Event",
            "X-Gitea-Signature", "X-Gitea-Delivery", "X-Forgejo-Event", "X-Forgejo-Signature",
            "X-Forgejo-Delivery",
        },
        "/webhooks/gitlab": {
            "X-Gitlab-Token", "X-Gitlab-Event", "Idempotency-Key", "X-Gitlab-Event-UUID",
        },
    }  # fmt: skip
    for path, headers in expected.items():
        op = doc["paths"][path]["post"]
        params = {p["name"]: p for p in op["parameters"]}
        assert set(params) == headers, path
        assert all(p["in"] == "header" and p["description"] for p in params.values()), path
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body["type"] == "object" and body["additionalProperties"] is True, path
        for status in ("200", "202"):
            answer = op["responses"][status]["content"]["application/json"]
            assert answer["schema"] == {"$ref": "#/components/schemas/IngestResult"}, status
        example = op["responses"]["202"]["content"]["application/json"]["example"]
        assert example["ignored"] and example["jobs"] == [], example
        assert "security" not in op, path  # the forge's signature, not the token
    gitlab = {p["name"]: p for p in doc["paths"]["/webhooks/gitlab"]["post"]["parameters"]}
    assert gitlab["X-Gitlab-Token"]["required"] is True


def test_an_ignored_delivery_answers_202_as_documented(public: httpx.Client) -> None:
    doc = public.get("/openapi.json").json()
    example = doc["paths"]["/webhooks/github"]["post"]["responses"]["202"]["content"][
        "application/json"
    ]["example"]
    fields = set(doc["components"]["schemas"]["IngestResult"]["properties"])
    body = b'{"zen": "Keep it logically awesome."}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    resp = public.post(
        "/webhooks/github",
        content=body,
        headers={"X-GitHub-Event": "star", "X-Hub-Signature-256": signature,
                 "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"},
    )  # fmt: skip
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert set(answer) == fields, answer
    assert answer == {**example, "event_id": None}, (answer, example)

"""One token check for the whole API, against the real daemon: every route of its
own OpenAPI document is refused without the exact token, and only an explicit
list of routes is open."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.api.middleware import DOCS_ROUTES, OPEN_ROUTES
from tests.daemon_fixture import Daemon

GITHUB_SECRET = "gh-secret-for-auth-tests"
GITLAB_TOKEN = "gl-token-for-auth-tests"
# The open list, exactly: liveness and the signature-checked webhooks.
EXPECTED_OPEN = {("GET", "/health"), ("POST", "/webhooks/github"), ("POST", "/webhooks/gitlab")}
DOCS = ["/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"]


def bad_credentials(token: str) -> dict[str, dict[str, Any]]:
    """Every way of (almost) giving the token that must not count: name -> request kwargs."""
    cookie = "; ".join(
        f"{name}={value}"
        for name in ("token", "access_token", "dispatcher_token", "Authorization")
        for value in (token,)
    )
    return {
        "missing": {},
        "wrong": {"headers": {"Authorization": "Bearer not-the-token"}},
        "prefix": {"headers": {"Authorization": f"Bearer {token[:-1]}"}},
        "one-char": {"headers": {"Authorization": f"Bearer {token[:1]}"}},
        "extended": {"headers": {"Authorization": f"Bearer {token}x"}},
        "padded": {"headers": {"Authorization": f"Bearer  {token}"}},
        "empty": {"headers": {"Authorization": "Bearer"}},
        "no-scheme": {"headers": {"Authorization": token}},
        "basic": {"headers": {"Authorization": f"Basic {token}"}},
        "query-token": {"params": {"token": token}},
        "query-access-token": {"params": {"access_token": token}},
        "cookie": {"headers": {"Cookie": cookie}},
        "cookie-bearer": {"headers": {"Cookie": f"Authorization=Bearer {token}"}},
    }


def signed_webhook(path: str) -> dict[str, Any]:
    """A delivery its forge's check accepts (so the webhook routes show they are open)."""
    if path == "/webhooks/github":
        body = b'{"zen": "hi"}'
        sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-GitHub-Event": "star", "X-Hub-Signature-256": sig}
        return {"content": body, "headers": headers}
    return {"content": b"{}", "headers": {"X-Gitlab-Token": GITLAB_TOKEN, "X-Gitlab-Event": "x"}}


def operations(d: Daemon) -> list[tuple[str, str]]:
    """(method, path template) of every operation the running daemon describes."""
    doc = d.api.get("/openapi.json").json()
    return sorted((m.upper(), p) for p, ops in doc["paths"].items() for m in ops)


def fill(template: str, ids: dict[str, str]) -> str:
    path = template
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no plausible value for a parameter of {template}"
    return path


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**kwargs.pop("headers", {})}
    if method in ("POST", "PUT", "PATCH") and "content" not in kwargs:
        kwargs["content"] = b"{}"
        headers["Content-Type"] = "application/json"
    return client.request(method, path, headers=headers, **kwargs)


def bare(d: Daemon) -> httpx.Client:
    """A client without the token: it sends only what each call is told to."""
    return httpx.Client(base_url=d.url, timeout=30)


def assert_refused(resp: httpx.Response, what: str) -> None:
    assert resp.status_code == 401, (what, resp.status_code, resp.text)
    assert resp.json()["error"]["code"] == "unauthorized", (what, resp.text)
    assert resp.headers.get("www-authenticate") == "Bearer", what


@pytest.fixture
def guarded(daemon_factory: Callable[..., Daemon], repo: Path) -> tuple[Daemon, dict[str, str]]:
    """A daemon with a repo, a finished job and an event: real ids for every path."""
    d = daemon_factory(
        DISPATCHER_GITHUB_WEBHOOK_SECRET=GITHUB_SECRET, DISPATCHER_GITLAB_WEBHOOK_TOKEN=GITLAB_TOKEN
    ).start()
    name = d.add_repo(repo, "r")
    job = d.wait(d.submit(name, "x", command=["true"])["id"])
    event = d.api.post("/events", json={"repo": name, "kind": "manual"}).json()
    team = d.api.post("/teams", json={"repo": name, "goal": "g", "lead_command": ["true"]})
    ids = {"job_id": str(job["id"]), "event_id": str(event["event_id"]), "name": name}
    return d, {**ids, "team_id": str(team.json()["id"]), "task_id": "1", "worker_id": "1"}


def test_every_route_needs_the_exact_bearer_token(guarded: tuple[Daemon, dict[str, str]]) -> None:
    d, ids = guarded
    client = bare(d)
    routes = operations(d)
    assert len(routes) >= 25, routes  # the whole API, not an empty document
    answered: set[tuple[str, str]] = set()
    for method, template in routes:
        path = fill(template, ids)
        for label, kwargs in bad_credentials(d.token).items():
            if (method, template) in EXPECTED_OPEN and template.startswith("/webhooks/"):
                extra = signed_webhook(template)
                kwargs = {**kwargs, "content": extra["content"],
                          "headers": {**kwargs.get("headers", {}), **extra["headers"]}}  # fmt: skip
            resp = request(client, method, path, **kwargs)
            if resp.status_code != 401:
                answered.add((method, template))
            if (method, template) not in EXPECTED_OPEN:
                assert_refused(resp, f"{method} {path} with the token {label}")
    assert answered == EXPECTED_OPEN
    # ... and nothing else is open in the code either (HEAD: the same liveness, no body).
    assert EXPECTED_OPEN | {("HEAD", "/health")} == OPEN_ROUTES
    # Each refused route is served with the right token: it was the token that failed.
    # (Unknown ids and an empty body: nothing changes.)
    unknown = {
        "job_id": "999999", "event_id": "999999", "name": "no-such-repo",
        "team_id": "999999", "task_id": "999999", "worker_id": "999999",
    }  # fmt: skip
    for method, template in sorted(set(routes) - EXPECTED_OPEN):
        resp = request(
            client, method, fill(template, unknown), headers={"Authorization": f"Bearer {d.token}"}
        )
        assert resp.status_code != 401, (method, template, resp.text)
    # Routes that are not in the document are refused as well (no 404 to probe with).
    for method, path in [("GET", "/nope"), ("POST", "/health"), ("GET", "/webhooks/github")]:
        assert_refused(request(client, method, path), f"{method} {path}")
    client.close()


def test_head_health_is_open_like_get(daemon: Daemon) -> None:
    with bare(daemon) as client:
        resp = client.head("/health")
        assert resp.status_code == 200, resp.text
        assert resp.content == b""
        assert client.head("/jobs").status_code == 401  # only /health is open to HEAD


def test_api_docs_need_the_token_unless_configured_public(
    daemon: Daemon, daemon_factory: Callable[..., Daemon]
) -> None:
    assert {path for _, path in DOCS_ROUTES} == set(DOCS)
    with bare(daemon) as client:
        for path in DOCS:
            assert_refused(request(client, "GET", path), f"GET {path}")
            assert daemon.api.get(path).status_code == 200, path
    public = daemon_factory(DISPATCHER_PUBLIC_API_DOCS="true").start()
    with bare(public) as client:
        for path in DOCS:
            resp = request(client, "GET", path)
            assert resp.status_code == 200, (path, resp.text)
        doc = json.loads(request(client, "GET", "/openapi.json").text)
        assert doc["paths"]["/jobs"]["get"]["security"] == [{"HTTPBearer": []}]
        assert "security" not in doc["paths"]["/health"]["get"]
        assert_refused(request(client, "GET", "/jobs"), "GET /jobs with public docs")

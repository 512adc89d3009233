"""A small forge on 127.0.0.1 for tests: the parts of the GitHub, GitLab and Gitea REST
APIs the daemon uses, and git's smart HTTP (``git http-backend``) for its bare repos.

The one external service that cannot run here. Paths, auth headers and JSON shapes
follow each forge's documentation: GitHub under ``/gh`` (``Authorization: Bearer``),
GitLab under ``/api/v4`` (``PRIVATE-TOKEN``), Gitea under ``/api/v1``
(``Authorization: token``); anything else is a git request for a bare repo under
``root`` (HTTP Basic, the token as password). It records every request (``seen``) and
answers like the forge: 401 for a wrong token, 404 for an unknown repo, 422 (GitHub)
or 409 (GitLab, Gitea) "already exists", and rate-limit answers when ``rate_limited``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Pull:
    number: int
    head: str
    base: str
    title: str
    body: str
    draft: bool
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    head_repo: str = ""  # a fork's ``owner/name`` the head branch is in; "": the repo itself


class FakeForge:
    def __init__(self, root: Path, token: str) -> None:
        self.root = root  # bare repos: root/<owner>/<name>.git
        self.token = token
        self.repos: set[str] = set()  # owner/name the API knows
        self.pulls: dict[tuple[str, str], list[Pull]] = {}  # (kind, repo) -> pulls
        self.seen: list[Seen] = []
        self.git_auth: list[str] = []  # the Authorization headers of git requests
        self.rate_limited = False
        self.refuse_labels = False  # label requests answered 403 (GitHub, Gitea)
        self.project_ids: dict[str, int] = {}  # GitLab's numeric project ids, by owner/name
        # GitHub review comments: (repo, pull number, review id) -> the API's comment objects
        self.review_comments: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeForge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def bare(self, repo: str) -> Path:
        """A bare repo the git endpoint serves and the API knows, at root/<repo>.git."""
        path = self.root / f"{repo}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
        subprocess.run(["git", "config", "http.receivepack", "true"], cwd=path, check=True)
        self.repos.add(repo)
        self.project_id(repo)
        return path

    def project_id(self, repo: str) -> int:
        """GitLab's numeric id of ``repo`` (given on first use)."""
        return self.project_ids.setdefault(repo, len(self.project_ids) + 1)

    def fork_head(self, repo: str, head: str) -> tuple[str, str] | None:
        """A fork's ``owner:branch`` head of a pull request on ``repo`` as (fork, branch)
        (GitHub and Gitea name a fork's branch so; the fork keeps the repo's name), or None
        for a branch of the repo itself."""
        if ":" not in head:
            return None
        owner, branch = head.split(":", 1)
        fork = f"{owner}/{repo.rsplit('/', 1)[1]}"
        return (fork, branch) if fork != repo else None

    def has_branch(self, repo: str, branch: str) -> bool:
        """Whether the bare repo ``repo`` holds ``branch`` (what a fork's PR needs)."""
        path = self.root / f"{repo}.git"
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=path, capture_output=True, check=False,
        ) if path.is_dir() else None  # fmt: skip
        return found is not None and found.returncode == 0

    def requests(self, kind: str) -> list[Seen]:
        prefix = {"github": "/gh/", "gitlab": "/api/v4/", "gitea": "/api/v1/"}[kind]
        with self._lock:
            return [s for s in self.seen if s.path.startswith(prefix)]

    # ------------------------------------------------------------------ the handler

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(
                self, status: int, data: Any, headers: dict[str, str] | None = None
            ) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def _api(self, method: str) -> None:
                raw = self._body()
                parts = urlsplit(self.path)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with fake._lock:
                    fake.seen.append(Seen(method, self.path, dict(self.headers.items()), body))
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path.startswith("/gh/"):
                    status, data, headers = fake._github(
                        method, parts.path[3:], self.headers, body, query
                    )
                elif parts.path.startswith("/api/v4/"):
                    status, data, headers = fake._gitlab(
                        method, parts.path[7:], self.headers, body, query
                    )
                else:
                    status, data, headers = fake._gitea(
                        method, parts.path[7:], self.headers, body, query
                    )
                self._answer(status, data, headers)

            def _git(self, method: str) -> None:
                auth = self.headers.get("Authorization") or ""
                with fake._lock:
                    fake.git_auth.append(auth)
                expected = (
                    "Basic " + base64.b64encode(f"x-access-token:{fake.token}".encode()).decode()
                )
                if auth != expected:
                    self._body()
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="fake forge"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                parts = urlsplit(self.path)
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(fake.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": method,
                    "PATH_INFO": unquote(parts.path),
                    "QUERY_STRING": parts.query,
                    "CONTENT_TYPE": self.headers.get("Content-Type") or "",
                    "REMOTE_USER": "x-access-token",
                    "REMOTE_ADDR": "127.0.0.1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "HOME": str(fake.root),
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                body = self._body()
                env["CONTENT_LENGTH"] = str(len(body))
                out = subprocess.run(
                    ["git", "http-backend"],
                    input=body,
                    env=env,
                    capture_output=True,
                    timeout=60,
                    check=False,
                ).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = out.partition(b"\n\n")
                status = 200
                headers: list[tuple[str, str]] = []
                for line in head.decode(errors="replace").splitlines():
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _route(self, method: str) -> None:
                if self.path.startswith(("/gh/", "/api/v4/", "/api/v1/")):
                    self._api(method)
                else:
                    self._git(method)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

        return Handler

    # ------------------------------------------------------------------ GitHub

    def _github(
        self, method: str, path: str, headers: Any, body: Any, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        if self.rate_limited:
            reset = str(int(time.time()) + 600)
            return (
                403,
                {
                    "message": "API rate limit exceeded for user ID 1.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                },
                {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
            )
        if headers.get("Authorization") != f"Bearer {self.token}":
            return (
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
                {},
            )
        segs = path.strip("/").split("/")  # repos/o/r/pulls | repos/o/r/issues/N/labels
        repo = f"{segs[1]}/{segs[2]}" if len(segs) >= 4 else ""
        if segs[0] != "repos" or repo not in self.repos:
            return (
                404,
                {
                    "message": "Not Found",
                    "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                },
                {},
            )
        pulls = self.pulls.setdefault(("github", repo), [])
        host = f"https://github.test/{repo}"
        if segs[3] == "pulls" and method == "POST":
            fork = self.fork_head(repo, body["head"])
            if fork is not None and not self.has_branch(*fork):
                return (
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}],
                        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                    },
                    {},
                )
            if fork is not None:
                body = {**body, "head": fork[1]}
            if any(
                p.head == body["head"] and p.state == "open" and p.head_repo == (fork or ("",))[0]
                for p in pulls
            ):
                return (
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {
                                "resource": "PullRequest",
                                "code": "custom",
                                "message": f"A pull request already exists for {segs[1]}:{body['head']}.",
                            }
                        ],
                        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                    },
                    {},
                )
            pull = Pull(
                len(pulls) + 1,
                body["head"],
                body["base"],
                body["title"],
                body.get("body") or "",
                bool(body.get("draft")),
                head_repo=fork[0] if fork is not None else "",
            )
            pulls.append(pull)
            return 201, _gh_pull(pull, host, repo), {}
        if segs[3] == "pulls" and method == "GET" and len(segs) == 8 and segs[5] == "reviews":
            # GET /repos/{o}/{r}/pulls/{n}/reviews/{review_id}/comments
            found = self.review_comments.get((repo, int(segs[4]), int(segs[6])), [])
            return 200, found, {}
        if segs[3] == "pulls" and method == "GET":
            head = query.get("head", "")
            found = [
                p
                for p in pulls
                if p.state == query.get("state", "open")
                and (not head or f"{(p.head_repo or repo).split('/')[0]}:{p.head}" == head)
            ]
            return 200, [_gh_pull(p, host, repo) for p in found], {}
        if segs[3] == "issues" and segs[5] == "labels" and method == "POST":
            if self.refuse_labels:
                return 403, {"message": "Must have admin rights to Repository."}, {}
            pull = pulls[int(segs[4]) - 1]
            pull.labels += body["labels"]
            return 200, [{"id": i, "name": name} for i, name in enumerate(pull.labels)], {}
        return 404, {"message": "Not Found"}, {}

    # ------------------------------------------------------------------ GitLab

    def _gitlab(
        self, method: str, path: str, headers: Any, body: Any, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        if self.rate_limited:
            return (
                429,
                {"message": "429 Too Many Requests"},
                {"Retry-After": "60", "RateLimit-Reset": str(int(time.time()) + 60)},
            )
        if headers.get("PRIVATE-TOKEN") != self.token:
            return 401, {"message": "401 Unauthorized"}, {}
        segs = path.strip("/").split("/")  # projects/<o%2Fr>/merge_requests
        repo = unquote(segs[1]) if len(segs) >= 2 else ""
        if segs[0] != "projects" or repo not in self.repos or "%2F" not in segs[1]:
            return 404, {"message": "404 Project Not Found"}, {}
        if len(segs) == 2 and method == "GET":  # a project, by its path
            return 200, {"id": self.project_id(repo), "path_with_namespace": repo}, {}
        if len(segs) < 3:
            return 404, {"message": "404 Not Found"}, {}
        source_repo = ""  # a fork's merge request: made on the fork, for its target
        if segs[2] == "merge_requests" and method == "POST" and body.get("target_project_id"):
            by_id = {v: k for k, v in self.project_ids.items()}
            target = by_id.get(int(body["target_project_id"]))
            if target is None:
                return 404, {"message": "404 Project Not Found"}, {}
            if target != repo:
                if not self.has_branch(repo, body["source_branch"]):
                    return 400, {"message": ["Source branch does not exist"]}, {}
                source_repo, repo = repo, target
        pulls = self.pulls.setdefault(("gitlab", repo), [])
        host = f"https://gitlab.test/{repo}"
        if segs[2] == "merge_requests" and method == "POST":
            open_one = next(
                (
                    p
                    for p in pulls
                    if p.head == body["source_branch"]
                    and p.state == "open"
                    and p.head_repo == source_repo
                ),
                None,
            )
            if open_one is not None:
                return (
                    409,
                    {
                        "message": [
                            f"Another open merge request already exists for this source branch: !{open_one.number}"
                        ]
                    },
                    {},
                )
            title = body["title"]
            pull = Pull(
                len(pulls) + 1,
                body["source_branch"],
                body["target_branch"],
                title,
                body.get("description") or "",
                title.startswith("Draft:"),
                [x for x in (body.get("labels") or "").split(",") if x],
                head_repo=source_repo,
            )
            pulls.append(pull)
            return 201, _gl_mr(pull, host, repo, self), {}
        if segs[2] == "merge_requests" and method == "GET":
            state = {"opened": "open"}.get(query.get("state", ""), query.get("state", ""))
            found = [
                p
                for p in pulls
                if p.state == state and p.head == query.get("source_branch", p.head)
            ]
            return 200, [_gl_mr(p, host, repo, self) for p in found], {}
        if segs[2] == "merge_requests" and method == "PUT" and len(segs) == 4:
            pull = pulls[int(segs[3]) - 1]
            added = [x for x in (body.get("add_labels") or "").split(",") if x]
            pull.labels += [x for x in added if x not in pull.labels]  # GitLab's: a set
            return 200, _gl_mr(pull, host, repo, self), {}
        return 404, {"message": "404 Not Found"}, {}

    # ------------------------------------------------------------------ Gitea

    def _gitea(
        self, method: str, path: str, headers: Any, body: Any, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        if self.rate_limited:
            return 429, {"message": "rate limit exceeded"}, {"Retry-After": "30"}
        if headers.get("Authorization") != f"token {self.token}":
            return (
                401,
                {
                    "message": "user does not exist [uid: 0, name: ]",
                    "url": "https://gitea.test/api/swagger",
                },
                {},
            )
        segs = path.strip("/").split("/")
        repo = f"{segs[1]}/{segs[2]}" if len(segs) >= 4 else ""
        if segs[0] != "repos" or repo not in self.repos:
            return (
                404,
                {
                    "message": "The target couldn't be found.",
                    "url": "https://gitea.test/api/swagger",
                    "errors": [],
                },
                {},
            )
        pulls = self.pulls.setdefault(("gitea", repo), [])
        host = f"https://gitea.test/{repo}"
        if segs[3] == "pulls" and method == "POST":
            fork = self.fork_head(repo, body["head"])
            if fork is not None and not self.has_branch(*fork):
                return 404, {"message": "The target couldn't be found.", "errors": []}, {}
            head_repo = fork[0] if fork is not None else ""
            if fork is not None:
                body = {**body, "head": fork[1]}
            open_one = next(
                (
                    p
                    for p in pulls
                    if p.head == body["head"]
                    and p.base == body["base"]
                    and p.state == "open"
                    and p.head_repo == head_repo
                ),
                None,
            )
            if open_one is not None:
                return (
                    409,
                    {
                        "message": f"pull request already exists for these targets [id: {open_one.number}, issue_id: {open_one.number}, head_repo_id: 1, base_repo_id: 1, head_branch: {open_one.head}, base_branch: {open_one.base}]",
                        "url": "https://gitea.test/api/swagger",
                    },
                    {},
                )
            pull = Pull(
                len(pulls) + 1,
                body["head"],
                body["base"],
                body["title"],
                body.get("body") or "",
                body["title"].startswith("WIP:"),
                head_repo=head_repo,
            )
            pulls.append(pull)
            return 201, _gitea_pull(pull, host, repo), {}
        if segs[3] == "pulls" and method == "GET":
            found = [p for p in pulls if p.state == query.get("state", "open")]
            return 200, [_gitea_pull(p, host, repo) for p in found], {}
        if segs[3] == "issues" and segs[5] == "labels" and method == "POST":
            if self.refuse_labels:
                return 403, {"message": "Must have admin rights to Repository."}, {}
            pull = pulls[int(segs[4]) - 1]
            pull.labels += [str(x) for x in body["labels"]]
            return 200, [{"id": i, "name": name} for i, name in enumerate(pull.labels)], {}
        return 404, {"message": "The target couldn't be found."}, {}


def _gh_pull(p: Pull, host: str, repo: str) -> dict[str, Any]:
    return {
        "id": 1000 + p.number,
        "number": p.number,
        "state": p.state,
        "title": p.title,
        "body": p.body,
        "draft": p.draft,
        "html_url": f"{host}/pull/{p.number}",
        "merged_at": None,
        "head": {
            "ref": p.head,
            "label": f"{(p.head_repo or repo).split('/')[0]}:{p.head}",
            "repo": {"full_name": p.head_repo or repo},
        },
        "base": {"ref": p.base},
        "labels": [{"name": n} for n in p.labels],
    }


def _gl_mr(p: Pull, host: str, repo: str, fake: FakeForge) -> dict[str, Any]:
    return {
        "id": 2000 + p.number,
        "iid": p.number,
        "state": "opened" if p.state == "open" else p.state,
        "title": p.title,
        "description": p.body,
        "draft": p.draft,
        "work_in_progress": p.draft,
        "web_url": f"{host}/-/merge_requests/{p.number}",
        "source_branch": p.head,
        "target_branch": p.base,
        "source_project_id": fake.project_id(p.head_repo or repo),
        "target_project_id": fake.project_id(repo),
        "labels": p.labels,
    }


def _gitea_pull(p: Pull, host: str, repo: str) -> dict[str, Any]:
    return {
        "id": 3000 + p.number,
        "number": p.number,
        "state": p.state,
        "title": p.title,
        "body": p.body,
        "draft": p.draft,
        "html_url": f"{host}/pulls/{p.number}",
        "merged": False,
        "head": {"ref": p.head, "label": p.head, "repo": {"full_name": p.head_repo or repo}},
        "base": {"ref": p.base},
        "labels": [{"name": n} for n in p.labels],
    }

"""Bad input at scale: fuzz the real daemon from its own OpenAPI document.

Schemathesis reads the live ``/openapi.json`` and generates requests, valid and
invalid, for every operation of a real daemon subprocess that has one real
repository and three finished jobs (ids 1-3), so names and ids sometimes hit.
Every answer must come within ``REQUEST_TIMEOUT`` seconds, never be a 5xx,
match the documented status codes, content types and schemas, and every error
must be the documented JSON body. The daemon must log no traceback meanwhile.

The second half sends what the generator will not: invalid UTF-8, JSON nested
10,000 deep, 5 MB fields, wrong content types, absurd ids and traversal in path
segments, sent as raw bytes so nothing is normalized on the way. Each must be a
JSON 4xx, and the daemon must still answer ``/health`` afterwards.

Generated input cannot run anything real: every agent profile is ``true`` and
the daemon's PATH holds only ``git`` and ``true``.

Bugs this file found (ids and offsets beyond int64, JSON nested too deep for
the webhooks, over-long paths, 405 without Allow, undecodable bodies) are fixed;
the cases that found them stay below as regression tests.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation, Case, GenerationMode

from tests.daemon_fixture import TERMINAL, Daemon, base_env, free_port
from tests.gitutil import init_repo

REQUEST_TIMEOUT = 10  # seconds; a slower answer is a hang
MAX_EXAMPLES = 25  # per operation and generation mode
SEED = 4  # schemathesis' seed; hypothesis itself is derandomized
PROFILES = ("claude", "codex", "aider", "gemini", "goose")
REPO = "app"
Headers = tuple[tuple[bytes, bytes], ...]

# Error statuses and codes docs/api.md promises for every route (its error table).
# The OpenAPI document lists none of them but 422 (a docs gap, reported).
API_MD_ERRORS = {
    401: {"unauthorized"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"already_exists", "invalid_state", "merge_conflict", "dirty_checkout", "ref_moved"},
    413: {"payload_too_large"},
    422: {"invalid_input", "idempotency_key_reused"},
}


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A private daemon with one real repo ``app`` and three finished jobs (ids 1-3)."""
    root = tmp_path_factory.mktemp("fuzz")
    home = root / "home"
    home.mkdir()
    bindir = root / "bin"
    bindir.mkdir()
    for program in ("git", "true"):
        found = shutil.which(program)
        assert found is not None, f"{program} not on PATH"
        (bindir / program).symlink_to(found)
    env = {
        **base_env(home),
        "PATH": str(bindir),
        "DISPATCHER_AGENTS": json.dumps({name: ["true"] for name in PROFILES}),
        "DISPATCHER_KILL_GRACE_SECONDS": "1",
        "DISPATCHER_MAX_PARALLEL": "4",
        "DISPATCHER_MAX_PARALLEL_PER_REPO": "4",
    }
    daemon = Daemon(
        state_dir=root / "state", port=free_port(), env=env, log_path=root / "daemon.log"
    ).start()
    try:
        repo = init_repo(root / "app", files={"README.md": "hello\n"})
        daemon.add_repo(repo, REPO)
        init_repo(root / "spare")  # a real repo never registered
        # An absolute path needs no PATH lookup, and its shebang is absolute too.
        writer = root / "write-notes"
        writer.write_text('#!/bin/sh\necho "fuzz $DISPATCHER_JOB_ID" > NOTES.md\n')
        writer.chmod(0o755)
        ids = [
            daemon.submit(REPO, "no change", command=["true"])["id"],
            daemon.submit(REPO, "write notes", command=[str(writer)])["id"],
            daemon.submit(REPO, "more notes", command=[str(writer)])["id"],
        ]
        assert ids == [1, 2, 3]
        for job_id in ids:
            assert daemon.wait(job_id)["state"] == "succeeded"
        yield daemon
    finally:
        try:
            daemon.cancel_active()
        finally:
            daemon.stop()


def log_since(daemon: Daemon, offset: int) -> str:
    with open(daemon.log_path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", errors="replace")


def assert_json_error(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    """A 4xx with the daemon's error body ``{"error": {"code", "message", ...}}``."""
    assert 400 <= status < 500, f"expected a 4xx, got {status}: {body[:500]!r}"
    assert content_type.startswith("application/json"), (content_type, body[:500])
    error = json.loads(body)["error"]
    assert isinstance(error["code"], str), body[:500]
    assert error["code"], body[:500]
    assert isinstance(error["message"], str), body[:500]
    if status in API_MD_ERRORS:
        assert error["code"] in API_MD_ERRORS[status], body[:500]
    return dict(error)


def assert_healthy(daemon: Daemon) -> None:
    assert httpx.get(f"{daemon.url}/health", timeout=REQUEST_TIMEOUT).status_code == 200


# ------------------------------------------------------------------ generated from the OpenAPI


def _breakable(op: dict[str, Any]) -> bool:
    """Whether some input of the operation can be schema-invalid (a path segment that
    may be any string cannot)."""
    if op.get("requestBody"):
        return True
    return any(
        p["in"] != "path" or p.get("schema", {}).get("type") != "string"
        for p in op.get("parameters", [])
    )


def _operations(document: Path) -> dict[str, bool]:
    """The committed document's ``METHOD /path`` labels (test ids are needed at
    collection, before any daemon runs), each with whether negative input exists."""
    paths = json.loads(document.read_text())["paths"]
    return {
        f"{method.upper()} {path}": _breakable(op)
        for path, item in paths.items()
        for method, op in item.items()
    }


OPERATIONS = _operations(Path(__file__).parents[2] / "docs" / "openapi.json")
FUZZ_RUNS = [
    pytest.param(mode, label, id=f"{mode.value}-{label}")
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for label, breakable in OPERATIONS.items()
    if mode is GenerationMode.POSITIVE or breakable
]
# Schema-valid is not valid: a repo path must hold a git repository, a base must
# exist. A 422 for schema-valid input is no failure (a 5xx still is).
SEMANTIC_CHECKS = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_daemon: Daemon) -> schemathesis.BaseSchema:
    """The daemon's live OpenAPI document, with the bearer token for every call."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": REQUEST_TIMEOUT,
            # The token is on every call; test_bad_credentials_get_a_json_401 breaks it.
            "generation": {"with-security-parameters": False},
            "checks": {"max_response_time": REQUEST_TIMEOUT},
            "auth": {"openapi": {"HTTPBearer": {"bearer": fuzz_daemon.token}}},
        }
    )
    return schemathesis.openapi.from_url(
        f"{fuzz_daemon.url}/openapi.json", config=config, timeout=REQUEST_TIMEOUT,
        headers={"Authorization": f"Bearer {fuzz_daemon.token}"},
    )  # fmt: skip


def _no_follow(case: Case) -> None:
    """The SSE follow mode streams until the job ends: keep it out of generated calls
    (``test_sse_follow_of_a_finished_job_ends`` covers it)."""
    if case.operation.path == "/jobs/{job_id}/log":
        if isinstance(case.query, dict):
            case.query.pop("follow", None)
        if isinstance(case.headers, dict):
            for key in [k for k in case.headers if k.lower() == "accept"]:
                del case.headers[key]


def _content_type(response: schemathesis.Response) -> str:
    values = response.headers.get("content-type") or [""]
    return values[0]


def test_every_live_operation_is_fuzzed(fuzz_schema: schemathesis.BaseSchema) -> None:
    live = {op.ok().label for op in fuzz_schema.get_all_operations()}
    assert live == set(OPERATIONS)


@pytest.mark.parametrize(("mode", "label"), FUZZ_RUNS)
def test_generated_requests_get_documented_answers(
    mode: GenerationMode, label: str, fuzz_daemon: Daemon, fuzz_schema: schemathesis.BaseSchema
) -> None:
    operation: APIOperation | None = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live OpenAPI document"
    documented = {int(c) for c in operation.definition.raw["responses"] if c.isdigit()}
    auth = {"Authorization": f"Bearer {fuzz_daemon.token}"}  # public routes too: harmless

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure stays bounded
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Case) -> None:
        _no_follow(case)
        offset = fuzz_daemon.log_path.stat().st_size
        try:
            # A hang fails here: the request times out after REQUEST_TIMEOUT.
            response = case.call(headers=auth, timeout=REQUEST_TIMEOUT)
            sent = response.request.headers.get("Authorization")
            assert sent == auth["Authorization"], f"sent without the token: {sent!r}"
            status = response.status_code
            excluded = list(SEMANTIC_CHECKS)
            if status not in documented:
                # Not in the OpenAPI document: hold it to docs/api.md's error table.
                excluded.append(schemathesis.checks.status_code_conformance)
            if status == 413:  # a rejection too, though not one schemathesis expects
                excluded.append(schemathesis.checks.negative_data_rejection)
            case.validate_response(response, excluded_checks=excluded)
            if status >= 400:
                assert_json_error(status, _content_type(response), response.content)
                assert status in documented or status in API_MD_ERRORS, (
                    f"{status} is documented nowhere: {response.text[:500]}"
                )
            logged = log_since(fuzz_daemon, offset)
            assert "Traceback" not in logged, f"the daemon logged a traceback:\n{logged}"
        except BaseException as exc:
            exc.add_note(f"request: {case.as_curl_command()}")
            exc.add_note(f"body: {case.body!r}"[:2000])
            exc.add_note(f"daemon log during the request:\n{log_since(fuzz_daemon, offset)}")
            raise

    fuzz()
    assert_healthy(fuzz_daemon)


# ------------------------------------------------------------------ what the generator will not send


def raw_request(
    daemon: Daemon,
    method: str,
    target: bytes,
    *,
    body: bytes = b"",
    headers: Headers = (),
    auth: bool = True,
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send exactly these bytes (no URL normalization, no encoding): status, headers, body.

    Fails when the whole answer takes over ``REQUEST_TIMEOUT`` seconds.
    """
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines.append(b"Connection: close")
    if auth:
        lines.append(b"Authorization: Bearer " + daemon.token.encode())
    lines += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    deadline = time.monotonic() + REQUEST_TIMEOUT
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=REQUEST_TIMEOUT) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):  # answered before reading it all
            sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        chunks = []
        with suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                assert time.monotonic() < deadline, "the answer did not end in time"
    head, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    assert head, f"{method} {target[:200]!r}: the connection closed without an answer"
    status_line, *header_lines = head.split(b"\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        answer_headers[name.strip().lower()] = value.strip()
    return int(status_line.split(b" ")[1]), answer_headers, content


def finished_jobs(daemon: Daemon) -> dict[int, str]:
    """Every job id, with its state once terminal (jobs the fuzz left may still run)."""
    items = daemon.api.get("/jobs", params={"limit": 500}).json()["items"]
    return {job["id"]: job["state"] if job["state"] in TERMINAL else "active" for job in items}


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


JSON = ((b"Content-Type", b"application/json"),)
FIVE_MB = "x" * (5 * 1024 * 1024)


def _body(
    name: str, method: str, target: str, body: bytes, headers: Headers = JSON, marks: Any = ()
) -> Any:
    """One hand-made request, as a pytest param."""
    return pytest.param(method, target.encode(), body, headers, id=name, marks=marks)


MALFORMED = [
    _body("invalid-utf8", "POST", "/jobs", b'{"repo": "app", "prompt": "\xff\xfe"}'),
    _body("lone-surrogate-prompt", "POST", "/jobs", b'{"repo": "app", "prompt": "\\udc80"}'),
    _body("lone-surrogate-title", "POST", "/repos/app/issues", b'{"title": "\\ud800"}'),
    _body("array-nested-10000", "POST", "/jobs",
          f'{{"repo": "app", "prompt": "x", "command": {"[" * 10000}{"]" * 10000}}}'.encode()),
    _body("object-nested-10000", "POST", "/events",
          f'{{"repo": "app", "kind": "manual", "payload": {nested(10000)}}}'.encode()),
    _body("github-webhook-nested-10000", "POST", "/webhooks/github", nested(10000).encode(),
          (*JSON, (b"X-GitHub-Event", b"issues"))),
    _body("gitlab-webhook-nested-10000", "POST", "/webhooks/gitlab", nested(10000).encode(),
          (*JSON, (b"X-Gitlab-Event", b"Issue Hook"))),
    _body("5mb-prompt", "POST", "/jobs", json.dumps({"repo": "app", "prompt": FIVE_MB}).encode()),
    _body("5mb-issue-title", "POST", "/repos/app/issues", json.dumps({"title": FIVE_MB}).encode()),
    _body("5mb-repo-path", "POST", "/repos", json.dumps({"path": "/" + FIVE_MB}).encode()),
    _body("256-byte-path-component", "POST", "/repos",
          json.dumps({"path": "/tmp/" + "a" * 256}).encode()),
    _body("11mb-body", "POST", "/jobs", b"x" * (11 * 1024 * 1024)),
    _body("nan", "POST", "/jobs", b'{"repo": "app", "prompt": "x", "timeout_minutes": NaN}'),
    _body("infinity", "POST", "/jobs", b'{"repo": "app", "prompt": "x", "timeout_minutes": -Infinity}'),
    _body("float-overflow", "POST", "/jobs", b'{"repo": "app", "prompt": "x", "timeout_minutes": 1e400}'),
    _body("huge-int-field", "POST", "/repos", b'{"path": "/nowhere", "max_parallel": 99999999999999999999999}'),
    _body("array-body", "POST", "/jobs", b'[{"repo": "app", "prompt": "x"}]'),
    _body("truncated-json", "POST", "/jobs", b'{"repo": "app", "prompt": "x"'),
    _body("text-plain", "POST", "/jobs", b'{"repo": "app", "prompt": "x"}',
          ((b"Content-Type", b"text/plain"),)),
    _body("form-urlencoded", "POST", "/jobs", b"repo=app&prompt=x",
          ((b"Content-Type", b"application/x-www-form-urlencoded"),)),
    _body("multipart", "POST", "/jobs",
          b"--b\r\nContent-Disposition: form-data; name=repo\r\n\r\napp\r\n--b--\r\n",
          ((b"Content-Type", b"multipart/form-data; boundary=b"),)),
    _body("latin-1-json", "POST", "/jobs", '{"repo": "app", "prompt": "é"}'.encode("latin-1"),
          ((b"Content-Type", b"application/json; charset=latin-1"),)),
    _body("garbage-content-type", "POST", "/jobs", b'{"repo": "app", "prompt": "x"}',
          ((b"Content-Type", b";;;\xff"),)),
    _body("idempotency-key-bytes", "POST", "/jobs", b"{}", (*JSON, (b"Idempotency-Key", b"\xff\xfe"))),
    _body("idempotency-key-long", "POST", "/jobs", b"{}", (*JSON, (b"Idempotency-Key", b"k" * 300))),
]  # fmt: skip

ID_ROUTES = [
    ("GET", "/jobs/{}"),
    ("GET", "/jobs/{}/log"),
    ("GET", "/jobs/{}/diff"),
    ("POST", "/jobs/{}/merge"),
    ("POST", "/jobs/{}/discard"),
    ("POST", "/jobs/{}/cancel"),
    ("POST", "/jobs/{}/retry"),
    ("GET", "/events/{}"),
]
BAD_IDS = {
    "-1": (),
    "0": (),
    "9223372036854775807": (),  # SQLite's largest integer: fits, no such job
    "9223372036854775808": (),
    "99999999999999999999": (),
    "1e3": (),
    "0x1": (),
}
for _method, _route in ID_ROUTES:
    for _id, _marks in BAD_IDS.items():
        _target = _route.format(_id)
        MALFORMED.append(_body(f"{_method} {_target}", _method, _target, b"", (), _marks))
for _target, _marks in {
    "/jobs?before=99999999999999999999": (),
    "/jobs?before=9223372036854775808": (),
    "/events?before=99999999999999999999": (),
    "/jobs?limit=-1": (),
    "/jobs?state=%00": (),
    "/jobs/1/log?offset=-1": (),
    "/jobs/1/log?offset=99999999999999999999": (),
}.items():
    MALFORMED.append(_body(f"GET {_target}", "GET", _target, b"", (), _marks))

HOSTILE_NAMES = [
    "..",
    "%2e%2e",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "..%2F..%2F..",
    "%00",
    "a%00b",
    "%ff%fe",
    "%ED%B2%80",  # an encoded lone surrogate
    "--upload-pack=touch%20pwned",
    "-",
    ".",
    "a" * 5000,
]
for _name in HOSTILE_NAMES:
    for _method, _suffix, _payload in [
        ("GET", "", b""),
        ("DELETE", "", b""),
        ("GET", "/issues", b""),
        ("POST", "/issues", b'{"title": "t"}'),
    ]:
        _target = f"/repos/{_name}{_suffix}"
        _id = f"{_method} /repos/{_name[:20]}{_suffix}"
        MALFORMED.append(_body(_id, _method, _target, _payload, JSON if _payload else ()))


def assert_refused(
    daemon: Daemon, method: str, target: bytes, *, body: bytes = b"", headers: Headers = ()
) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    """Send it raw; it must be a JSON 4xx that changed nothing, with no traceback logged,
    and the daemon must answer ``/health`` afterwards. Status, headers and the error."""
    jobs_before = finished_jobs(daemon)
    offset = daemon.log_path.stat().st_size
    status, answer_headers, content = raw_request(
        daemon, method, target, body=body, headers=headers
    )
    logged = log_since(daemon, offset)
    try:
        error = assert_json_error(
            status, answer_headers.get(b"content-type", b"").decode(), content
        )
        assert "Traceback" not in logged
    except AssertionError as exc:
        exc.add_note(f"request: {method} {target[:200]!r} body {body[:200]!r}")
        exc.add_note(f"daemon log during the request:\n{logged[-5000:]}")
        raise
    finally:
        assert_healthy(daemon)
    # Refused means nothing changed: no job made, merged, discarded or retried.
    assert finished_jobs(daemon) == jobs_before
    return status, answer_headers, error


@pytest.mark.parametrize(("method", "target", "body", "headers"), MALFORMED)
def test_malformed_input_gets_a_json_4xx(
    fuzz_daemon: Daemon, method: str, target: bytes, body: bytes, headers: Headers
) -> None:
    assert_refused(fuzz_daemon, method, target, body=body, headers=headers)


@pytest.mark.parametrize(
    "header",
    [b"Bearer \xff\xfe", b"Bearer", b"Basic dXNlcjpwYXNz", b"bearer  " + b"x" * 10000, b"\x01"],
    ids=["bytes", "empty", "basic", "10k", "control"],
)
def test_bad_credentials_get_a_json_401(fuzz_daemon: Daemon, header: bytes) -> None:
    status, headers, content = raw_request(
        fuzz_daemon, "GET", b"/jobs", headers=((b"Authorization", header),), auth=False
    )
    assert status == 401, content
    error = assert_json_error(status, headers.get(b"content-type", b"").decode(), content)
    assert error["code"] == "unauthorized"


def test_raw_nul_dots_and_slashes_in_the_request_line(fuzz_daemon: Daemon) -> None:
    """Unescaped NUL is refused by the HTTP layer; raw ``..`` and an encoded ``/`` reach
    no repo (``/repos/%2F`` is redirected to ``/repos``, the listing)."""
    for target in (b"/repos/a\x00b", b"/repos/../../etc/passwd", b"/repos/./app/../app"):
        status, _, content = raw_request(fuzz_daemon, "GET", target)
        assert 400 <= status < 500, (target, status, content)
    for method in ("GET", "DELETE"):
        status, headers, content = raw_request(fuzz_daemon, method, b"/repos/%2F")
        assert status == 307, (method, status, content)
        assert headers[b"location"].endswith(b"/repos"), headers
    assert_healthy(fuzz_daemon)


def test_huge_integer_field_for_a_real_repo_is_refused(fuzz_daemon: Daemon) -> None:
    """Past path checks, up to the insert: an int64 overflow there must be a 422."""
    spare = fuzz_daemon.state_dir.parent / "spare"
    body = json.dumps({"path": str(spare), "name": "spare", "max_parallel": 10**22}).encode()
    assert_refused(fuzz_daemon, "POST", b"/repos", body=body, headers=JSON)
    assert fuzz_daemon.api.get("/repos/spare").status_code == 404


def test_wrong_method_is_405_with_allow(fuzz_daemon: Daemon) -> None:
    status, headers, _ = assert_refused(fuzz_daemon, "PUT", b"/jobs", body=b"{}")
    assert status == 405
    assert set(headers.get(b"allow", b"").decode().replace(" ", "").split(",")) == {"GET", "POST"}


def test_undecodable_json_is_invalid_input_as_documented(fuzz_daemon: Daemon) -> None:
    body = b'{"repo": "app", "prompt": "\xff"}'
    status, _, error = assert_refused(fuzz_daemon, "POST", b"/jobs", body=body, headers=JSON)
    assert (status, error["code"]) == (422, "invalid_input")


@pytest.mark.parametrize(
    "offset",
    [
        "0",
        "5",
        "1099511627776",  # past the end: nothing to send, then the end
        "9223372036854775807",  # the largest offset there can be
    ],
)
def test_sse_follow_of_a_finished_job_ends(fuzz_daemon: Daemon, offset: str) -> None:
    """The follow mode kept out of the fuzz: on a terminal job it sends the log and ends."""
    assert fuzz_daemon.job(2)["state"] in TERMINAL
    started = time.monotonic()
    params = {"follow": "true", "offset": offset}
    try:
        with fuzz_daemon.api.stream(
            "GET", "/jobs/2/log", params=params, timeout=REQUEST_TIMEOUT
        ) as resp:
            assert resp.status_code == 200
            text = "".join(resp.iter_text())
    except httpx.TransportError as exc:
        raise AssertionError(f"the stream broke: {exc!r}") from exc
    assert "event: end" in text
    assert time.monotonic() - started < REQUEST_TIMEOUT


def test_log_offset_beyond_int64_is_refused(fuzz_daemon: Daemon) -> None:
    for follow in ("false", "true"):
        resp = fuzz_daemon.api.get(
            "/jobs/2/log", params={"follow": follow, "offset": "99999999999999999999"}
        )
        assert resp.status_code == 422
        assert resp.json()["error"]["code"] == "invalid_input"

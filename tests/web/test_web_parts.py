"""The dashboard's pure parts: session cookies and CSRF tokens, the /ui half of the auth
check, the diff as files and lines, review comments as one prompt, and log lines read as
messages and tool calls. The whole dashboard in a browser: tests/e2e/test_dashboard.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dispatcher.agents.view import view_line
from dispatcher.git import refs
from dispatcher.web.render import Comment, parse_diff, review_prompt
from dispatcher.web.session import COOKIE, Refusal, Sessions, UiGuard, cookie_of
from tests.gitutil import git, init_repo


def scope(method: str, path: str, cookie: str | None = None, **headers: str) -> dict[str, Any]:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if cookie is not None:
        raw.append((b"cookie", f"other=1; {COOKIE}={cookie}".encode()))
    return {"type": "http", "method": method, "path": path, "headers": raw}


def test_a_session_cookie_is_valid_only_unchanged_unexpired_and_for_its_token() -> None:
    sessions = Sessions("the-token")
    cookie = sessions.new()
    assert "the-token" not in cookie
    nonce = sessions.nonce(cookie)
    assert nonce is not None
    expiry, n, signature = cookie.split(".")
    assert sessions.nonce(f"{expiry}.{n}.{'0' * len(signature)}") is None  # forged
    assert sessions.nonce(f"{int(expiry) + 9999}.{n}.{signature}") is None  # lengthened
    assert sessions.nonce(f"{expiry}.other.{signature}") is None
    assert Sessions("another-token").nonce(cookie) is None  # a new token ends it
    assert Sessions("the-token", hours=-1).nonce(Sessions("the-token", hours=-1).new()) is None
    assert Sessions("").nonce(Sessions("").new()) is None  # no token: no session at all
    assert not Sessions("").token_matches("")
    assert sessions.token_matches("the-token\n") and not sessions.token_matches("the-toke")
    assert sessions.csrf(nonce) != sessions.csrf(nonce + "x")


def test_the_session_cookie_is_found_beside_other_apps_odd_cookies() -> None:
    """Another app on 127.0.0.1 shares the cookie jar (cookies ignore ports): its JSON,
    spaces or quotes do not hide the session cookie after them."""
    for other in ('x={"a": 1}', "a=b c", 'q="unclosed', "bare"):
        raw = [(b"cookie", f"{other}; {COOKIE}=the-session".encode())]
        assert cookie_of({"type": "http", "headers": raw}) == "the-session", other
    assert cookie_of({"type": "http", "headers": [(b"cookie", b"a=1")]}) is None


@pytest.mark.parametrize(
    ("method", "path", "logged_in", "headers", "want"),
    [
        ("GET", "/ui/login", False, {}, None),
        ("POST", "/ui/login", False, {}, None),
        ("GET", "/ui/static/ui.css", False, {}, None),
        ("POST", "/ui/static/ui.css", False, {}, 401),
        ("GET", "/ui/", False, {}, 303),
        ("GET", "/ui/board", False, {"hx_request": "true"}, 401),
        ("GET", "/ui/jobs/1", True, {}, None),
        ("POST", "/ui/jobs/1/merge", True, {}, 403),
        ("POST", "/ui/jobs/1/merge", True, {"x_csrf_token": "0" * 64}, 403),
        ("POST", "/ui/jobs/1/merge", True, {"x_csrf_token": "GOOD"}, None),
        ("POST", "/ui/logout", False, {"x_csrf_token": "GOOD"}, 401),
    ],
)
def test_the_ui_guard(
    method: str, path: str, logged_in: bool, headers: dict[str, str], want: int | None
) -> None:
    sessions = Sessions("t")
    cookie = sessions.new()
    nonce = sessions.nonce(cookie)
    assert nonce is not None
    headers = {k: sessions.csrf(nonce) if v == "GOOD" else v for k, v in headers.items()}
    refused = UiGuard(sessions).refusal(
        scope(method, path, cookie if logged_in else None, **headers)
    )
    assert (refused.status if isinstance(refused, Refusal) else None) == want


PATCH = """\
diff --git a/src/app.py b/src/app.py
index 1111111..2222222 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,3 @@
 import os
-print("<script>old</script>")
+print("<script>new</script>")
 x = 1
\\ No newline at end of file
diff --git a/new.txt b/new.txt
new file mode 100644
index 0000000..3333333
--- /dev/null
+++ b/new.txt
@@ -0,0 +1,2 @@
+one
+<img onerror=x>
diff --git a/old.md b/renamed.md
similarity index 90%
rename from old.md
rename to renamed.md
diff --git a/pic.png b/pic.png
Binary files a/pic.png and b/pic.png differ
"""


def test_a_diff_reads_as_files_with_numbered_escaped_lines() -> None:
    diff = parse_diff(PATCH)
    assert [(f.path, f.status, f.added, f.removed) for f in diff.files] == [
        ("src/app.py", "modified", 1, 1),
        ("new.txt", "added", 2, 0),
        ("renamed.md", "renamed", 0, 0),
        ("pic.png", "binary", 0, 0),
    ]
    assert diff.files[2].old_path == "old.md"
    lines = diff.files[0].hunks[0].lines
    assert [(line.kind, line.old, line.new) for line in lines] == [
        ("ctx", 1, 1), ("del", 2, None), ("add", None, 2), ("ctx", 3, 3), ("meta", None, None),
    ]  # fmt: skip
    html = "".join(str(line.html) for line in lines)
    assert "<script>" not in html and "&lt;" in html  # escaped, with colour spans
    assert 'class="tok-' in html
    plain = "".join(str(line.html) for line in diff.files[1].hunks[0].lines)
    assert plain == "one&lt;img onerror=x&gt;"


def test_a_real_diff_names_odd_paths_exactly_whatever_the_users_diff_settings(
    tmp_path: Path,
) -> None:
    """Names with " b/", spaces, UTF-8 and quotes, a deletion and a rename, from a real
    ``git diff`` in a repo whose config asks for no prefixes and mnemonic ones."""
    repo = init_repo(tmp_path / "r", files={"gone.txt": "x\n", "old name.md": "same\n"})
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "config", "diff.noprefix", "true")
    git(repo, "config", "diff.mnemonicPrefix", "true")
    names = ["docs b/x.py", "é b.py", 'q"uote.txt', "tab\there.txt"]
    for name in names:
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text("print(1)\n")
    (repo / "gone.txt").unlink()
    git(repo, "mv", "old name.md", "new name.md")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd names")
    diff = parse_diff(refs.diff(repo, base, "HEAD"))
    seen = {f.path: f.status for f in diff.files}
    assert seen == {
        **{name: "added" for name in names}, "gone.txt": "deleted", "new name.md": "renamed",
    }, seen  # fmt: skip
    assert next(f.old_path for f in diff.files if f.status == "renamed") == "old name.md"


def test_side_by_side_pairs_removed_lines_with_the_added_ones_after_them() -> None:
    hunk = (
        parse_diff(
            "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,4 +1,4 @@\n a\n-b\n-c\n+B\n d\n+e\n-f\n"
        )
        .files[0]
        .hunks[0]
    )
    rows = [
        (r.left and (r.left.kind, str(r.left.html)), r.right and (r.right.kind, str(r.right.html)))
        for r in hunk.split()
    ]
    assert rows == [
        (("ctx", "a"), ("ctx", "a")),
        (("del", "b"), ("add", "B")),
        (("del", "c"), None),
        (("ctx", "d"), ("ctx", "d")),
        (None, ("add", "e")),
        (("del", "f"), None),
    ]


def test_review_comments_become_one_prompt() -> None:
    prompt = review_prompt(
        [Comment("a.py", "3", "rename this"), Comment("b.py", "-7", "keep this line")],
        "Thanks!",
    )
    assert "Thanks!" in prompt
    assert "- a.py line 3: rename this" in prompt
    assert "- b.py line 7 (a removed line): keep this line" in prompt


def line(event: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(v.kind, v.text, v.label, v.detail) for v in view_line(json.dumps(event))]


def test_log_lines_read_as_messages_tool_calls_results_and_errors() -> None:
    claude = {"type": "assistant", "message": {"content": [
        {"type": "text", "text": "Writing it."},
        {"type": "tool_use", "name": "Write", "input": {"file_path": "a.md"}},
    ]}}  # fmt: skip
    assert line(claude) == [
        ("message", "Writing it.", "", ""),
        ("tool", "Write", "tool", '{\n "file_path": "a.md"\n}'),
    ]
    failed = {"type": "user", "message": {"content": [
        {"type": "tool_result", "content": "no such file", "is_error": True},
    ]}}  # fmt: skip
    assert line(failed) == [("error", "no such file", "", "")]
    result = {"type": "result", "subtype": "success", "result": "Done.", "total_cost_usd": 0.5}
    assert line(result) == [("final", "Done.", "cost $0.5000", "")]
    codex = {"type": "item.completed", "item": {"type": "agent_message", "text": "Fixed."}}
    assert line(codex) == [("message", "Fixed.", "", "")]
    command = {"type": "item.started", "item": {"type": "command_execution", "command": "ls"}}
    assert line(command) == [("tool", "ls", "command", "")]
    gemini = {"type": "tool_use", "tool_name": "read_file", "parameters": {"path": "x"}}
    assert line(gemini)[0][:3] == ("tool", "read_file", "tool")
    assert line({"type": "error", "message": "rate limited"}) == [("error", "rate limited", "", "")]
    assert line({"type": "fake.unknown", "n": 1})[0][:1] == ("event",)
    assert [(v.kind, v.text) for v in view_line("[dispatcher] job 1 succeeded")] == [
        ("note", "job 1 succeeded")
    ]
    assert [(v.kind, v.text) for v in view_line('{"type": "result", "cut o')] == [
        ("text", '{"type": "result", "cut o')
    ]
    assert view_line("   ") == []

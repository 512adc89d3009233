"""Each real CLI, run with exactly what dispatcher/agents/mcp.py gives it, accepts it and
reaches the daemon's MCP server with the run's token (docs/mcp-agents.md).

The server here is a recorder on 127.0.0.1: it answers every request 401 and keeps the
path and ``Authorization`` header of each. The CLIs have no credentials (an empty HOME),
so they stop at auth; those that connect to their MCP servers before that (or have an
``mcp list`` that connects) show the recorder ``Bearer <token>`` on ``/mcp``, which
proves the URL, the transport and the token indirection (``${VAR}``, ``{env:VAR}``,
``bearer_token_env_var``) are the CLI's own. Copilot stops at auth first: it is shown to
read and validate our file (a broken copy of it is refused by its schema).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.agents import mcp
from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.profiles import build_argv
from tests.conformance.conftest import BIN, BOUND_S, agent_bin, without_credentials
from tests.gitutil import init_repo

TOKEN = "dj1.7.Zm9yLXRoZS1jb25mb3JtYW5jZS10ZXN0cy1vbmx5"
FLAG_ERRORS = ("unknown option", "unexpected argument", "Unknown argument", "error: option")


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]

    def _any(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append((self.path, self.headers.get("authorization")))
        body = b'{"error":"unauthorized"}'
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _any

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Recorder:
    seen: list[tuple[str, str | None]]
    url: str

    def bearer(self) -> bool:
        return ("/mcp", f"Bearer {TOKEN}") in self.seen


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Recorder(seen, f"http://127.0.0.1:{server.server_address[1]}/mcp")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Ran:
    output: str
    wired: mcp.Wiring
    files: list[Path]


def _wire(name: str, state: Path, recorder: Recorder, home: Path) -> tuple[mcp.Wiring, list[Path]]:
    ctx = mcp.Context(url=recorder.url, token=TOKEN, state=state, environ={}, home=home)
    wired = mcp.wiring(BUILTIN_PROFILES[name].mcp, ctx)
    assert wired.given, wired.skipped
    return wired, mcp.write_files(wired, state)


def run(
    name: str,
    tmp_path: Path,
    recorder: Recorder,
    *,
    state: Path | None = None,
    args: tuple[str, ...] | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    until_bearer: bool = False,
) -> Ran:
    """Run the real ``name`` with the built-in argv (or ``args``, the CLI's own subcommand)
    plus what the wiring gives, in a git repo, with no credentials; until it exits or
    (``until_bearer``) the recorder saw the token, within the conformance bound."""
    agent_bin(name)
    profile = BUILTIN_PROFILES[name]
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    state = state or tmp_path / "state" / "jobs" / "7"
    state.mkdir(parents=True, exist_ok=True)
    wired, files = _wire(name, state, recorder, home)
    work = init_repo(tmp_path / "work", files={"README.md": "hello\n"})
    prompt = state / "prompt.md"
    prompt.write_text("Add a line to README.md.\n")
    base = list(args) if args is not None else build_argv(profile, prompt_file=prompt, workdir=work)
    argv = [*base, *extra, *wired.argv]
    full_env = {
        **without_credentials(dict(os.environ)),
        "HOME": str(home),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        mcp.URL_VAR: recorder.url,
        mcp.TOKEN_VAR: TOKEN,
        **dict(profile.env),
        **dict(wired.env),
        **(env or {}),
    }
    log = tmp_path / f"{name}.out"
    with open(log, "wb") as out, open(prompt, "rb") as stdin:
        proc = subprocess.Popen(
            argv, cwd=work, env=full_env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + BOUND_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if until_bearer and recorder.bearer():
                break
            time.sleep(0.1)
    finally:
        # The CLI, and what it left in its process group (MCP or helper children).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    output = log.read_text(errors="replace")
    assert TOKEN not in " ".join(argv)
    for text in FLAG_ERRORS:
        assert text not in output, output
    return Ran(output, wired, files)


def test_claude_connects_to_the_server_from_mcp_config_with_the_token(
    tmp_path: Path, recorder: Recorder
) -> None:
    ran = run("claude", tmp_path, recorder, env={"IS_SANDBOX": "1"})
    assert '"mcp_servers":[{"name":"dispatcher","status":"failed","source":"dynamic"}]' in (
        ran.output
    )
    assert recorder.bearer(), recorder.seen
    assert "Not logged in" in ran.output


def test_codex_lists_the_server_and_connects_with_bearer_token_env_var(
    tmp_path: Path, recorder: Recorder
) -> None:
    listed = run("codex", tmp_path, recorder, args=("codex", "mcp", "list", "--json"))
    assert '"url": "' + recorder.url + '"' in listed.output
    assert '"bearer_token_env_var": "DISPATCHER_JOB_TOKEN"' in listed.output
    assert '"auth_status": "bearer_token"' in listed.output
    run("codex", tmp_path, recorder, until_bearer=True)
    assert recorder.bearer(), recorder.seen


def test_codex_beside_the_users_own_stdio_server_of_that_name_gets_ours_too(
    tmp_path: Path, recorder: Recorder
) -> None:
    """A user's stdio ``[mcp_servers.dispatcher]`` is kept, ours is added as
    ``dispatcher_job``, and Codex starts with both (no "url is not supported for stdio")."""
    codex_home = tmp_path / "home" / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(
        '[mcp_servers.dispatcher]\ncommand = "dispatcher"\nargs = ["mcp"]\n'
    )
    listed = run("codex", tmp_path, recorder, args=("codex", "mcp", "list", "--json"))
    servers = {s["name"]: s for s in json.loads(listed.output[listed.output.index("[") :])}
    assert set(servers) >= {"dispatcher", "dispatcher_job"}, listed.output
    assert recorder.url in json.dumps(servers["dispatcher_job"])
    assert recorder.url not in json.dumps(servers["dispatcher"])
    run("codex", tmp_path, recorder, until_bearer=True)
    assert recorder.bearer(), recorder.seen


def test_gemini_reads_its_system_settings_and_connects_with_the_token(
    tmp_path: Path, recorder: Recorder
) -> None:
    if os.geteuid() != 0:
        assert mcp.insecure_for_gemini(tmp_path / "x") is not None
        return  # the daemon does not give it to Gemini as a normal user: no file to check
    # A root-only job directory, as the daemon's state dir is when it runs as root.
    secure = Path(pwd.getpwuid(0).pw_dir) / f".dispatcher-conformance-{os.getpid()}"
    secure.mkdir(mode=0o700)
    try:
        assert mcp.insecure_for_gemini(secure / "gemini-settings.json") is None
        listed = run("gemini", tmp_path, recorder, state=secure, args=("gemini", "mcp", "list"))
        assert "Security Warning" not in listed.output, listed.output
        assert f"dispatcher: {recorder.url} (http)" in listed.output
        # With no auth method it stops before its MCP servers: a key that cannot work (no
        # network here) takes it one step further, to the connection.
        key = {"GEMINI_API_KEY": "none"}
        run("gemini", tmp_path, recorder, state=secure, env=key, until_bearer=True)
        assert recorder.bearer(), recorder.seen
    finally:
        shutil.rmtree(secure)


def test_qwen_connects_to_the_server_from_mcp_config(tmp_path: Path, recorder: Recorder) -> None:
    ran = run("qwen", tmp_path, recorder)
    assert "MCP server(s) failed to start: dispatcher" in ran.output
    assert recorder.bearer(), recorder.seen
    assert "No auth type is selected" in ran.output


def test_opencode_lists_the_server_and_expands_the_token(
    tmp_path: Path, recorder: Recorder
) -> None:
    ran = run("opencode", tmp_path, recorder, args=("opencode", "mcp", "list"))
    assert "dispatcher" in ran.output and recorder.url in ran.output
    assert recorder.bearer(), recorder.seen


def test_cline_reads_the_settings_file_and_connects_with_the_token(
    tmp_path: Path, recorder: Recorder
) -> None:
    # Without a provider cline stops before it starts its MCP servers: a key that cannot
    # work (no network here) takes it one step further, to the connection.
    ran = run("cline", tmp_path, recorder, extra=("--provider", "anthropic", "--key", "sk-none"))
    assert recorder.bearer(), (recorder.seen, ran.output)


def test_copilot_reads_and_validates_the_additional_mcp_config(
    tmp_path: Path, recorder: Recorder
) -> None:
    ran = run("copilot", tmp_path, recorder)
    assert "To authenticate" in ran.output, ran.output  # past the flags and our file
    (path,) = ran.files
    path.write_text(path.read_text().replace('"type": "http"', '"type": "bogus"'))
    broken = subprocess.run(
        [*build_argv(BUILTIN_PROFILES["copilot"], prompt_file=path, workdir=tmp_path),
         *ran.wired.argv],
        env={**without_credentials(dict(os.environ)), "HOME": str(tmp_path / "home"),
             "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BOUND_S, check=False,
    )  # fmt: skip
    assert "mcpServers.dispatcher.type: Invalid literal value" in broken.stdout + broken.stderr

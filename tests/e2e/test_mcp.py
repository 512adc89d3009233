"""The MCP server against the real daemon: the SDK's own client over streamable HTTP and
over stdio (``dispatcher mcp`` as a subprocess), a fake agent using its own job token
from inside a job the real runner started, and the job token's scope (docs/mcp.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from dispatcher.jobs.tokens import JobTokens
from tests.daemon_fixture import Daemon, dispatcher_argv
from tests.e2e.test_auth import EXPECTED_OPEN, fill, operations, request
from tests.gitutil import git, init_repo

FAKE_AGENT = Path(__file__).parents[1] / "fakeagents" / "mcp_agent.py"
TOOLS = {
    "list_repos", "create_job", "list_jobs", "show_job", "job_log", "job_diff", "followup_job",
    "merge_job", "discard_job", "cancel_job", "retry_job", "review_inbox", "file_issue",
    "post_event", "check_trigger_file", "push_job", "open_pull_request", "rebase_job",
}  # fmt: skip
TEAM_TOOLS = {
    "show_team", "add_task", "set_blockers", "send_message", "read_messages", "signal",
    "submit_plan", "decide_plan", "retry_task", "create_team", "list_teams", "shutdown_team",
    "merge_team",
}  # fmt: skip
ACTIVE = ("queued", "preparing", "running")


@contextlib.asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    """The SDK's client on the daemon's /mcp with ``token``."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
    )
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def connect_refused(url: str, token: str) -> str:
    """The message the server refuses ``token`` with (the client fails to connect)."""
    with pytest.raises(BaseException) as info:  # the SDK wraps the MCPError in groups
        async with connect(url, token):
            pass
    found: BaseException | None = info.value
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    assert isinstance(found, MCPError), info.value
    return str(found)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured answer; fails the test with the tool's error text."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, (tool, arguments, result.content)
    assert result.structured_content is not None, (tool, result.content)
    return dict(result.structured_content)


async def refusal(client: Client, tool: str, **arguments: Any) -> str:
    """The one-line error text of a tool call that must fail."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, (tool, arguments, result.structured_content)
    text = str(getattr(result.content[0], "text", ""))
    assert text and "\n" not in text, text
    return text


async def wait_done(client: Client, job_id: int, timeout: float = 60) -> dict[str, Any]:
    """Poll show_job until the job is no longer active (fails after ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await call(client, "show_job", job_id=job_id)
        if job["state"] not in ACTIVE:
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} stuck in {job}"
        await asyncio.sleep(0.05)


async def create_read_merge(client: Client, repo_name: str, repo: Path) -> None:
    """The round trip every face must allow: list tools, create a job, read its log and
    diff (tools and resources), merge it."""
    names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == TOOLS | TEAM_TOOLS
    repos = await call(client, "list_repos")
    assert repo_name in [r["name"] for r in repos["result"]]
    made = await call(
        client, "create_job", repo=repo_name, prompt="add a file",
        command=["sh", "-c", "echo made-by-mcp; echo hi > mcp.txt"],
    )  # fmt: skip
    assert made["state"] == "queued" and made["parent_id"] is None
    job = await wait_done(client, made["id"])
    assert job["state"] == "succeeded", job
    log = await call(client, "job_log", job_id=job["id"])
    assert "made-by-mcp" in log["text"]
    diff = await call(client, "job_diff", job_id=job["id"])
    assert "mcp.txt" in diff["stat"] and diff["patch"] is None
    assert "+hi" in (await call(client, "job_diff", job_id=job["id"], full=True))["patch"]
    read = await client.read_resource(f"dispatcher://jobs/{job['id']}/log")
    assert "made-by-mcp" in getattr(read.contents[0], "text", "")
    read = await client.read_resource(f"dispatcher://jobs/{job['id']}/diff")
    assert "+hi" in getattr(read.contents[0], "text", "")
    inbox = await call(client, "review_inbox")
    assert job["id"] in [j["id"] for j in inbox["result"]]
    merged = await call(client, "merge_job", job_id=job["id"])
    assert merged["changed"] and merged["job"]["state"] == "merged"
    assert git(repo, "show", "main:mcp.txt") == "hi"


def test_http_client_lists_tools_creates_a_job_reads_its_log_and_merges_it(
    daemon: Daemon, repo: Path
) -> None:
    name = daemon.add_repo(repo)

    async def scenario() -> None:
        async with connect(daemon.url + "/mcp", daemon.token) as client:
            await create_read_merge(client, name, repo)
            issue = await call(client, "file_issue", repo=name, title="flaky", labels=["bug"])
            assert (issue["number"], issue["labels"]) == (1, ["bug"])
            event = await call(client, "post_event", event={"repo": name, "kind": "manual"})
            assert event["event_id"] is not None and event["jobs"] == []  # no triggers
            listed = await call(client, "list_jobs", repo=name, limit=1)
            assert [j["repo"] for j in listed["items"]] == [name] and listed["next_before"] is None

    asyncio.run(scenario())
    issues = daemon.api.get(f"/repos/{name}/issues").json()  # the REST face sees the same
    assert [i["title"] for i in issues] == ["flaky"]


def test_the_stdio_command_serves_the_same_tools(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)
    argv = dispatcher_argv()
    server = StdioServerParameters(command=argv[0], args=[*argv[1:], "mcp"], env=daemon.cli_env)

    async def scenario() -> None:
        async with Client(server) as client:
            await create_read_merge(client, name, repo)

    asyncio.run(scenario())


def test_the_stdio_relay_outlives_a_daemon_restart(daemon: Daemon, repo: Path) -> None:
    """While the daemon is down a call fails with one line saying so; the relay goes on,
    and once the daemon is back the same session's calls work again."""
    name = daemon.add_repo(repo)
    argv = dispatcher_argv()
    server = StdioServerParameters(command=argv[0], args=[*argv[1:], "mcp"], env=daemon.cli_env)

    async def scenario() -> None:
        async with Client(server) as client:
            assert name in [r["name"] for r in (await call(client, "list_repos"))["result"]]
            assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
            with pytest.raises(MCPError) as down:
                await client.call_tool("list_repos", {})
            assert str(down.value).startswith(f"cannot reach the daemon at {daemon.url}/mcp: ")
            assert "\n" not in str(down.value)
            daemon.start()
            assert name in [r["name"] for r in (await call(client, "list_repos"))["result"]]

    asyncio.run(scenario())


def test_the_stdio_command_without_a_daemon_says_so_in_one_line(daemon: Daemon) -> None:
    gone = {**daemon.cli_env, "DISPATCHER_URL": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [*dispatcher_argv(), "mcp"], env=gone, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("dispatcher: cannot reach the daemon at http://127.0.0.1:9")
    assert proc.stderr.count("\n") == 1


def test_bad_input_gets_one_line_errors(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)

    async def scenario() -> None:
        async with connect(daemon.url + "/mcp", daemon.token) as client:
            assert await refusal(client, "show_job", job_id=987654) == "no job with id 987654"
            assert await refusal(client, "merge_job", job_id=987654) == "no job with id 987654"
            assert await refusal(client, "show_job", job_id="abc") == (
                "invalid arguments: job_id: Input should be a valid integer, unable to parse "
                "string as an integer"
            )
            assert (await refusal(client, "show_job", job_id=0)).startswith(
                "invalid arguments: job_id: Input should be greater than or equal to 1"
            )
            assert (await refusal(client, "show_job")).startswith("invalid arguments: job_id:")
            assert (await refusal(client, "merge_job", job_id=1, strategy="yolo")).startswith(
                "invalid arguments: strategy: Input should be 'merge', 'squash'"
            )
            assert (await refusal(client, "create_job", repo="no-such", prompt="x")).startswith(
                "no repo named 'no-such'"
            )
            assert (await refusal(client, "create_job", repo=name, prompt="")).startswith(
                "invalid arguments: prompt:"
            )
            assert await refusal(client, "no_such_tool") == "Unknown tool: no_such_tool"
            with pytest.raises(MCPError, match=r"^no job with id 987654$"):
                await client.read_resource("dispatcher://jobs/987654/log")
            checked = await call(client, "check_trigger_file", text="version: 1\ntriggers: [1]\n")
            assert not checked["ok"] and checked["problems"][0].startswith(
                ".dispatcher/triggers.yml:2:"
            )
        for token in ("wrong", daemon.token + "x", "dj1.1.bm90LWEtbWFj"):
            assert await connect_refused(daemon.url + "/mcp", token) == "wrong bearer token"
        # No token at all: 401, with a JSON-RPC error an MCP client can show.
        resp = httpx.post(daemon.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["message"] == (
            "missing bearer token (Authorization: Bearer <token>)"
        )

    asyncio.run(scenario())


def spawn_nonce(d: Daemon, job_id: int) -> str:
    """The job's current spawn nonce, read from the daemon's database file."""
    with contextlib.closing(sqlite3.connect(d.state_dir / "dispatcher.db")) as db:
        (nonce,) = db.execute("SELECT spawn_nonce FROM job WHERE id = ?", (job_id,)).fetchone()
    assert isinstance(nonce, str)
    return nonce


def running_job_token(
    daemon_factory: Callable[..., Daemon], repo: Path
) -> tuple[Daemon, str, dict[str, Any], str]:
    """A daemon with a repo and a running job (a long sleep), and that run's job token."""
    d = daemon_factory().start()
    name = d.add_repo(repo)
    job = d.submit(name, "wait", command=["sleep", "120"])
    d.wait(job["id"], {"running"})
    return d, name, job, JobTokens(d.token).mint(job["id"], spawn_nonce(d, job["id"]))


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_an_agent_uses_its_job_token_within_its_scope(
    daemon_factory: Callable[..., Daemon], repo: Path, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_ACCESS_LOG="true").start()
    name = d.add_repo(repo)
    other = d.add_repo(init_repo(tmp_path / "other"))
    unrelated = d.wait(d.submit(name, "unrelated", command=["true"])["id"])
    parent = d.submit(
        name, "the parent", command=[sys.executable, str(FAKE_AGENT), str(unrelated["id"]), other]
    )
    parent = d.wait(parent["id"], timeout=120)
    log = d.api.get(f"/jobs/{parent['id']}/log").text
    lines = [line for line in log.splitlines() if line.startswith("MCP-RESULT ")]
    assert lines, log
    seen = json.loads(lines[0].removeprefix("MCP-RESULT "))

    assert set(seen["tools"]) == TOOLS | TEAM_TOOLS
    assert seen["repos"] == [name]  # its own repo only
    child = seen["child"]
    parent_branch = parent["branch"]
    assert child["parent_id"] == parent["id"]
    assert child["base_ref"] == child["target_branch"] == parent_branch  # starts from its branch
    assert seen["child_state"] == "succeeded" and seen["child_log_has_output"]
    assert seen["listed"] == [child["id"]]
    assert seen["merge_default"] == [
        True,
        f"the job token of job {parent['id']} may not merge into 'main', the repo's default "
        f"branch: merge into its own branch {parent_branch!r} (`into`), and a person merges that",
    ]
    assert seen["merge_own_branch"] == [False, "merged"]
    assert git(repo, "show", f"{parent_branch}:child.txt") == "child"
    assert git(repo, "rev-parse", "main") == unrelated["base"]  # main did not move
    assert seen["show_unrelated"] == [
        True,
        f"job {unrelated['id']} is outside the scope of the job token of job {parent['id']}: "
        "it reaches itself, the jobs it created and its team's jobs",
    ]
    assert seen["create_elsewhere"] == [
        True, f"the job token of job {parent['id']} may create jobs in its own repo {name!r} only"
    ]  # fmt: skip
    for key, there in (("list_elsewhere", "other"), ("list_unknown", "no-such-repo")):
        assert seen[key] == [
            True, f"the job token of job {parent['id']} reaches its own repo {name!r} only"
        ], (key, there)  # fmt: skip
    assert seen["post_event"] == [
        True, f"the job token of job {parent['id']} may not post events: that takes the daemon token"
    ]  # fmt: skip
    assert seen["rest"] == [401, "a job token is accepted at /mcp (MCP) only, not by the REST API"]
    assert d.job(child["id"])["parent_id"] == parent["id"]

    # The job has ended: its token is refused, saying why.
    token = JobTokens(d.token).mint(parent["id"], spawn_nonce(d, parent["id"]))

    assert asyncio.run(connect_refused(d.url + "/mcp", token)) == (
        f"the job token of job {parent['id']} is no longer valid: the job is succeeded (a job "
        "token is valid only while its job runs)"
    )
    # Never written down: not in the daemon's log (access lines included), the job's
    # files (log, prompt) or its worktree.
    daemon_log = d.log_path.read_text()
    assert '"POST /mcp HTTP/1.1" 200' in daemon_log  # the access log is on and saw the calls
    places = [d.log_path, *files_under(d.state_dir / "jobs" / str(parent["id"]))]
    places += files_under(Path(parent["worktree"]))
    assert places
    for path in places:
        assert token.encode() not in path.read_bytes(), path
    assert "dj1." not in daemon_log


def test_a_job_token_reaches_only_mcp_never_a_rest_route(
    daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    d, name, job, token = running_job_token(daemon_factory, repo)
    ids = {"job_id": str(job["id"]), "event_id": "1", "name": name, "team_id": "1", "task_id": "1",
           "worker_id": "1"}  # fmt: skip
    with httpx.Client(base_url=d.url, timeout=30) as client:
        routes = [r for r in operations(d) if r not in EXPECTED_OPEN]
        assert len(routes) >= 25, routes
        for method, template in routes:
            resp = request(
                client, method, fill(template, ids), headers={"Authorization": f"Bearer {token}"}
            )
            assert resp.status_code == 401, (method, template, resp.text)
            assert resp.json()["error"]["message"] == (
                "a job token is accepted at /mcp (MCP) only, not by the REST API"
            )

    async def on_mcp() -> None:
        async with connect(d.url + "/mcp", token) as client:
            shown = await call(client, "show_job", job_id=job["id"])
            assert shown["state"] == "running"
            assert (await refusal(client, "cancel_job", job_id=job["id"])) == (
                f"the job token of job {job['id']} may read job {job['id']} but not act on it: "
                "only on the jobs it created"
            )
            assert (await refusal(client, "file_issue", repo=name, title="t")) == (
                f"the job token of job {job['id']} may not file issues: that takes the daemon token"
            )

    asyncio.run(on_mcp())
    # Through `dispatcher mcp`, as an agent's own stdio server: the same scope.
    argv = dispatcher_argv()
    env = {**d.cli_env, "DISPATCHER_MCP_URL": d.url + "/mcp", "DISPATCHER_JOB_TOKEN": token}
    server = StdioServerParameters(command=argv[0], args=[*argv[1:], "mcp"], env=env)

    async def over_stdio() -> None:
        async with Client(server) as client:
            assert (await call(client, "list_jobs"))["items"] == []  # its children: none
            assert (await refusal(client, "show_job", job_id=987654)) == "no job with id 987654"
            refused = await refusal(client, "post_event", event={"repo": name, "kind": "manual"})
            assert refused == (
                f"the job token of job {job['id']} may not post events: that takes the daemon token"
            )

    asyncio.run(over_stdio())
    assert d.api.post(f"/jobs/{job['id']}/cancel").status_code == 200
    d.wait(job["id"])


def test_a_job_token_outlives_a_daemon_kill_9_with_its_job_and_dies_with_it(
    daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    d, _, job, token = running_job_token(daemon_factory, repo)

    async def shows_itself() -> str:
        async with connect(d.url + "/mcp", token) as client:
            return str((await call(client, "show_job", job_id=job["id"]))["state"])

    assert asyncio.run(shows_itself()) == "running"
    d.stop(signal.SIGKILL)
    d.start()  # the agent was re-adopted: the same run, the same token
    assert d.job(job["id"])["state"] == "running"
    assert asyncio.run(shows_itself()) == "running"
    assert d.api.post(f"/jobs/{job['id']}/cancel").status_code == 200
    d.wait(job["id"])
    assert asyncio.run(connect_refused(d.url + "/mcp", token)) == (
        f"the job token of job {job['id']} is no longer valid: the job is canceled (a job "
        "token is valid only while its job runs)"
    )


def test_idempotency_keys_never_replay_an_mcp_answer(daemon: Daemon, tmp_path: Path) -> None:
    """An MCP answer belongs to its own request and principal: an ``Idempotency-Key`` on
    it is ignored, so a stored answer (another token's, an older state's) is never
    replayed."""
    call = {
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "list_repos", "arguments": {}},
    }  # fmt: skip
    headers = {
        "Authorization": f"Bearer {daemon.token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
        "Idempotency-Key": "mcp-once",
    }

    def repos() -> list[str]:
        resp = httpx.post(daemon.url + "/mcp", json=call, headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text
        assert "idempotent-replayed" not in resp.headers
        listed = resp.json()["result"]["structuredContent"]
        return sorted(r["name"] for r in listed.get("items", listed.get("result", [])))

    before = repos()
    added = daemon.add_repo(init_repo(tmp_path / "later"), "later")
    assert repos() == sorted([*before, added])  # the second call really ran


def test_the_stdio_command_inside_a_job_never_falls_back_to_the_daemon_token(
    daemon: Daemon,
) -> None:
    """An agent's MCP client that drops DISPATCHER_JOB_TOKEN from the server's env gets a
    one-line refusal, not the person's token (which the CLI would otherwise read)."""
    inside = {**daemon.cli_env, "DISPATCHER_JOB_ID": "42"}
    inside.pop("DISPATCHER_JOB_TOKEN", None)
    proc = subprocess.run(
        [*dispatcher_argv(), "mcp"], env=inside, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == (
        "dispatcher: inside job 42 with no DISPATCHER_JOB_TOKEN (the MCP client did not pass "
        "it on, or MCP is off for agents): refusing to use the daemon token\n"
    )

"""What each profile is given to see the daemon's MCP server (dispatcher/agents/mcp.py), and
the runner's side of it (dispatcher/jobs/invocation.py): real files in temp dirs."""

from __future__ import annotations

import json
import os
import pwd
import stat
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from dispatcher.agents import mcp
from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.profiles import resolve_profile
from dispatcher.agents.spec import MCP_WAYS, AgentProfile
from dispatcher.config import Settings
from dispatcher.jobs import invocation
from dispatcher.jobs.files import job_files

URL = "http://127.0.0.1:8765/mcp"
TOKEN = "dj1.42.c2VjcmV0LW1hYy1vZi10aGlzLXJ1bg"
WITH_MCP = sorted(n for n, p in BUILTIN_PROFILES.items() if p.mcp is not None)


def context(tmp_path: Path, **environ: str) -> mcp.Context:
    state = tmp_path / "state" / "jobs" / "42"
    state.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return mcp.Context(url=URL, token=TOKEN, state=state, environ=environ, home=home)


def test_every_way_is_a_profile_value_and_the_builtins_use_them() -> None:
    assert set(mcp.WAYS) == MCP_WAYS
    assert {n: p.mcp for n, p in BUILTIN_PROFILES.items()} == {
        "claude": "claude", "codex": "codex", "gemini": "gemini", "qwen": "qwen",
        "opencode": "opencode", "cline": "cline", "copilot": "copilot",
        "aider": None, "goose": None,
    }  # fmt: skip


def test_an_unknown_way_is_refused_and_an_override_keeps_the_builtins() -> None:
    with pytest.raises(ValidationError, match="mcp must be one of"):
        AgentProfile(name="x", argv=("x",), stdin_prompt=True, mcp="telepathy")
    assert resolve_profile("codex", {"codex": ["codex", "exec", "-"]}).mcp == "codex"
    assert resolve_profile("mine", {"mine": ["my-agent"]}).mcp is None


@pytest.mark.parametrize("name", WITH_MCP)
def test_the_token_is_never_in_argv_nor_env_and_files_are_the_cli_s_format(
    tmp_path: Path, name: str
) -> None:
    ctx = context(tmp_path)
    wired = mcp.wiring(BUILTIN_PROFILES[name].mcp, ctx)
    insecure = mcp.insecure_for_gemini(ctx.state / "gemini-settings.json")
    if name == "gemini" and insecure is not None:  # /tmp, or not root: Gemini would skip it
        assert wired.skipped == (
            f"Gemini CLI reads system settings only from a root-owned path: {insecure}"
        )
        return
    assert wired.given, wired.skipped
    assert all(TOKEN not in arg for arg in wired.argv)
    assert all(TOKEN not in value for _, value in wired.env)
    paths = mcp.write_files(wired, ctx.state)
    for item, path in zip(wired.files, paths, strict=True):
        assert path.parent == ctx.state
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        document = json.loads(path.read_text())
        assert mcp.SERVER in document["mcpServers"]
        assert (TOKEN in path.read_text()) == item.holds_token
        assert any(path.name in arg for arg in (*wired.argv, *(v for _, v in wired.env)))


def test_claude_gets_an_http_server_whose_header_names_the_variable(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    wired = mcp.wiring("claude", ctx)
    assert wired.argv == ("--mcp-config", str(ctx.state / "mcp-claude.json"))
    server = json.loads(wired.files[0].text)["mcpServers"]["dispatcher"]
    assert server == {
        "type": "http",
        "url": URL,
        "headers": {"Authorization": "Bearer ${DISPATCHER_JOB_TOKEN}"},
    }


def test_codex_gets_toml_overrides_with_bearer_token_env_var(tmp_path: Path) -> None:
    wired = mcp.wiring("codex", context(tmp_path))
    assert wired.argv[0::2] == ("-c", "-c")
    values = tomllib.loads("\n".join(a.replace(".", "_", 2) for a in wired.argv[1::2]))
    assert values == {
        "mcp_servers_dispatcher_url": URL,
        "mcp_servers_dispatcher_bearer_token_env_var": "DISPATCHER_JOB_TOKEN",
    }
    assert not wired.files and not wired.env


def test_codex_keeps_the_users_own_server_of_that_name_and_adds_ours_beside_it(
    tmp_path: Path,
) -> None:
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    config = codex_home / "config.toml"
    config.write_text('[mcp_servers.dispatcher]\ncommand = "dispatcher"\nargs = ["mcp"]\n')
    wired = mcp.wiring("codex", context(tmp_path, CODEX_HOME=str(codex_home)))
    assert wired.argv == (
        "-c", f"mcp_servers.dispatcher_job.url={json.dumps(URL)}",
        "-c", 'mcp_servers.dispatcher_job.bearer_token_env_var="DISPATCHER_JOB_TOKEN"',
    )  # fmt: skip
    assert config.read_text().startswith("[mcp_servers.dispatcher]")  # untouched
    with config.open("a") as fh:
        fh.write('[mcp_servers.dispatcher_job]\nurl = "http://x/mcp"\n')
    wired = mcp.wiring("codex", context(tmp_path, CODEX_HOME=str(codex_home)))
    assert not wired.given and str(config) in (wired.skipped or "")
    config.write_text('[mcp_servers.other]\nurl = "http://x/mcp"\n')
    assert (
        "mcp_servers.dispatcher.url"
        in mcp.wiring("codex", context(tmp_path, CODEX_HOME=str(codex_home))).argv[1]
    )


def test_gemini_refuses_a_path_it_would_skip_and_never_replaces_a_system_file(
    tmp_path: Path,
) -> None:
    reason = mcp.insecure_for_gemini(tmp_path / "settings.json")
    assert reason is not None and ("root" in reason or "writable by group" in reason)
    wired = mcp.wiring("gemini", context(tmp_path, GEMINI_CLI_SYSTEM_SETTINGS_PATH="/etc/x.json"))
    assert wired.skipped == "a Gemini CLI system settings file is set (/etc/x.json): not replaced"


@pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned path needs root")
def test_gemini_as_root_in_a_root_only_dir_gets_its_system_settings(tmp_path: Path) -> None:
    home = Path(pwd.getpwuid(0).pw_dir)  # root's own home, not the tests' HOME
    secure = home / f".dispatcher-test-{os.getpid()}"
    secure.mkdir(mode=0o700)
    try:
        if mcp.insecure_for_gemini(secure / "x") is not None:
            pytest.skip(f"{home} is not a root-only path here")
        ctx = mcp.Context(url=URL, token=TOKEN, state=secure, environ={})
        wired = mcp.wiring("gemini", ctx)
        assert wired.env == (
            ("GEMINI_CLI_SYSTEM_SETTINGS_PATH", str(secure / "gemini-settings.json")),
        )
        server = json.loads(wired.files[0].text)["mcpServers"]["dispatcher"]
        assert server == {
            "httpUrl": URL,
            "headers": {"Authorization": "Bearer ${DISPATCHER_JOB_TOKEN}"},
        }
    finally:
        for child in secure.iterdir():
            child.unlink()
        secure.rmdir()


def test_opencode_merges_into_the_users_own_config_content(tmp_path: Path) -> None:
    mine = json.dumps({"model": "x/y", "mcp": {"other": {"type": "remote", "url": "http://o"}}})
    wired = mcp.wiring("opencode", context(tmp_path, OPENCODE_CONFIG_CONTENT=mine))
    ((name, value),) = wired.env
    content = json.loads(value)
    assert name == "OPENCODE_CONFIG_CONTENT" and content["model"] == "x/y"
    assert set(content["mcp"]) == {"other", "dispatcher"}
    assert content["mcp"]["dispatcher"]["headers"] == {
        "Authorization": "Bearer {env:DISPATCHER_JOB_TOKEN}"
    }
    bad = mcp.wiring("opencode", context(tmp_path, OPENCODE_CONFIG_CONTENT="{not json"))
    assert not bad.given and "not JSON" in (bad.skipped or "")


def test_cline_copies_the_users_servers_and_replaces_a_same_named_one(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    user = ctx.home / ".cline" / "data" / "settings" / "cline_mcp_settings.json"
    user.parent.mkdir(parents=True)
    before = {"mcpServers": {"mine": {"command": "x"}, "dispatcher": {"command": "old"}}}
    user.write_text(json.dumps(before))
    wired = mcp.wiring("cline", ctx)
    servers = json.loads(wired.files[0].text)["mcpServers"]
    assert servers["mine"] == {"command": "x"}
    assert servers["dispatcher"]["type"] == "streamableHttp"
    assert servers["dispatcher"]["headers"] == {"Authorization": f"Bearer {TOKEN}"}
    assert json.loads(user.read_text()) == before  # untouched


def test_write_files_replaces_an_earlier_runs_file_and_never_follows_a_link(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (ctx.state / "mcp-qwen.json").symlink_to(target)
    mcp.write_files(mcp.wiring("qwen", ctx), ctx.state)
    assert target.read_text() == "keep"
    assert not (ctx.state / "mcp-qwen.json").is_symlink()


def _settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", **fields)  # type: ignore[arg-type]


def test_give_mcp_writes_the_files_and_says_so_in_the_job_log(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files = job_files(settings, 42)
    files.root.mkdir(parents=True)
    env = {mcp.URL_VAR: URL, mcp.TOKEN_VAR: TOKEN, "HOME": str(tmp_path)}
    wired = invocation.give_mcp(settings, 42, BUILTIN_PROFILES["claude"], env, files)
    assert wired.given and (files.root / "mcp-claude.json").exists()
    log = files.log.read_text()
    assert f"mcp: the dispatcher server at {URL}, by --mcp-config" in log
    assert TOKEN not in log


@pytest.mark.parametrize(
    ("fields", "env", "why"),
    [
        ({"mcp_for_agents": False}, True, "turned off (DISPATCHER_MCP_FOR_AGENTS=false)"),
        ({"mcp_skip_agents": ["claude"]}, True, "claude is in DISPATCHER_MCP_SKIP_AGENTS"),
        ({}, False, "no MCP server for this run"),
    ],
)
def test_give_mcp_turned_off_gives_nothing(
    tmp_path: Path, fields: dict[str, object], env: bool, why: str
) -> None:
    settings = _settings(tmp_path, **fields)
    files = job_files(settings, 42)
    files.root.mkdir(parents=True)
    given = {mcp.URL_VAR: URL, mcp.TOKEN_VAR: TOKEN} if env else {}
    wired = invocation.give_mcp(settings, 42, BUILTIN_PROFILES["claude"], given, files)
    assert wired.skipped == why and not wired.argv and not wired.env
    assert not (files.root / "mcp-claude.json").exists()
    assert f"mcp: not given ({why}); its messages come in its prompt" in files.log.read_text()

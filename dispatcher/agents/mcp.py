"""How each agent is given the daemon's MCP server, in its own way (docs/mcp-agents.md).

The runner puts the server's URL and the run's own job token in the agent's environment
(:data:`URL_VAR`, :data:`TOKEN_VAR`). A profile's ``mcp`` names one of the :data:`WAYS`
below; :func:`wiring` turns it into what that agent gets on top of its argv and
environment: arguments appended to its argv, variables, and files of ours in the job's
own directory (outside the worktree, written 0600 by :func:`write_files`). The token is
never in an argv: where the CLI expands a variable in its MCP configuration the files and
arguments name :data:`TOKEN_VAR`; only where it expands none (Qwen Code's
``--mcp-config``, Cline's MCP settings, Copilot's ``--additional-mcp-config``) does a
0600 file of ours hold the token itself. The user's own configuration files are read at
most, never written.

Each way was checked against the real CLI at the version pinned in
``tests/conformance/clis`` (see docs/mcp-agents.md). A profile with no way (``mcp``
None: aider, goose) is not given the server and gets its messages in its prompt instead.

Standard library only; reads (never writes) the user's agent configuration to avoid a
clash with a server of the same name, and writes only :func:`write_files`' files.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

SERVER: Final = "dispatcher"
"""The name the agents know the daemon's MCP server by."""

URL_VAR: Final = "DISPATCHER_MCP_URL"
TOKEN_VAR: Final = "DISPATCHER_JOB_TOKEN"  # noqa: S105 (the name of the variable)


@dataclass(frozen=True)
class McpFile:
    """A file of ours the agent reads: ``name`` inside the job's directory."""

    name: str
    text: str
    holds_token: bool = False


@dataclass(frozen=True)
class Wiring:
    """What an agent gets so that it sees the server: arguments appended to its argv,
    variables added to its environment and files to write in its job's directory (the
    arguments and variables name them by absolute path). ``skipped``: why it gets none."""

    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[McpFile, ...] = ()
    skipped: str | None = None
    how: str = ""  # for the job log: what was given

    @property
    def given(self) -> bool:
        return self.skipped is None


@dataclass(frozen=True)
class Context:
    """What a way may look at: the server, the job's directory, the agent's environment
    and the user's home (for reading, never writing, the user's own configuration)."""

    url: str
    token: str
    state: Path
    environ: Mapping[str, str] = field(default_factory=dict)
    home: Path = field(default_factory=Path.home)

    def path(self, name: str) -> str:
        return os.fspath(self.state / name)


def _json(document: object) -> str:
    return json.dumps(document, indent=2) + "\n"


BEARER_SHELL: Final = f"Bearer ${{{TOKEN_VAR}}}"
"""The header value for CLIs that expand ``${VAR}`` (Claude Code, Gemini CLI)."""


def _claude(ctx: Context) -> Wiring:
    # Claude Code expands ${VAR} in --mcp-config files; "dynamic" servers win over the
    # user's and project's of the same name for this run.
    server = {"type": "http", "url": ctx.url, "headers": {"Authorization": BEARER_SHELL}}
    name = "mcp-claude.json"
    return Wiring(
        argv=("--mcp-config", ctx.path(name)),
        files=(McpFile(name, _json({"mcpServers": {SERVER: server}})),),
        how=f"--mcp-config {ctx.path(name)}",
    )


def _codex_home(ctx: Context) -> Path:
    home = ctx.environ.get("CODEX_HOME")
    return Path(home) if home else ctx.home / ".codex"


def _codex(ctx: Context) -> Wiring:
    # -c overrides merge into the user's config key by key: a user's own
    # [mcp_servers.dispatcher] (say a stdio `dispatcher mcp`) plus our url is an error
    # ("url is not supported for stdio") and Codex would not start. Theirs is kept, and
    # ours goes in under CODEX_FALLBACK, so the job still has its own scoped server.
    config = _codex_home(ctx) / "config.toml"
    try:
        servers = tomllib.loads(config.read_text(encoding="utf-8")).get("mcp_servers", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        servers = {}
    if not isinstance(servers, dict):
        servers = {}
    name = next((n for n in (SERVER, CODEX_FALLBACK) if n not in servers), None)
    if name is None:
        return Wiring(
            skipped=f"{config} already has [mcp_servers.{SERVER}] and "
            f"[mcp_servers.{CODEX_FALLBACK}]: the user's are kept"
        )
    prefix = f"mcp_servers.{name}"
    argv = (
        "-c", f"{prefix}.url={json.dumps(ctx.url)}",
        "-c", f"{prefix}.bearer_token_env_var={json.dumps(TOKEN_VAR)}",
    )  # fmt: skip
    return Wiring(argv=argv, how=f"-c {prefix}.url, -c {prefix}.bearer_token_env_var")


CODEX_FALLBACK: Final = "dispatcher_job"
"""Our server's name for Codex when the user's config already has one named SERVER."""


GEMINI_SYSTEM_SETTINGS: Final = Path("/etc/gemini-cli/settings.json")


def insecure_for_gemini(path: Path) -> str | None:
    """Why Gemini CLI would skip a system settings file at ``path`` (its
    ``isFileAndDirectorySecureSync``: the file and every directory above it owned by root
    and not writable by group or others); None: it reads it. ``path`` itself may not
    exist yet: the daemon makes it, with its own uid."""
    for item in (path, *path.parents):
        try:
            st = item.stat()
        except FileNotFoundError:
            if item == path and os.geteuid() == 0:
                continue  # ours to make: root's, 0600
            return f"{item} does not exist"
        if st.st_uid != 0:
            return f"{item} is not owned by root"
        if st.st_mode & 0o022:
            return f"{item} is writable by group or others"
    return None


def _gemini(ctx: Context) -> Wiring:
    # The system settings file overrides the user's and the project's (mcpServers merge
    # by server name: ours replaces a same-named one) and expands $VAR; there is no flag.
    name = "gemini-settings.json"
    existing = ctx.environ.get("GEMINI_CLI_SYSTEM_SETTINGS_PATH")
    if existing or GEMINI_SYSTEM_SETTINGS.exists():
        where = existing or GEMINI_SYSTEM_SETTINGS
        return Wiring(skipped=f"a Gemini CLI system settings file is set ({where}): not replaced")
    reason = insecure_for_gemini(ctx.state / name)
    if reason is not None:
        return Wiring(
            skipped=f"Gemini CLI reads system settings only from a root-owned path: {reason}"
        )
    server = {"httpUrl": ctx.url, "headers": {"Authorization": BEARER_SHELL}}
    return Wiring(
        env=(("GEMINI_CLI_SYSTEM_SETTINGS_PATH", ctx.path(name)),),
        files=(McpFile(name, _json({"mcpServers": {SERVER: server}})),),
        how=f"GEMINI_CLI_SYSTEM_SETTINGS_PATH={ctx.path(name)}",
    )


def _qwen(ctx: Context) -> Wiring:
    # --mcp-config (a file or JSON) is its top tier, over every settings file; it
    # expands no variable (checked: the header went out as "Bearer ${...}").
    name = "mcp-qwen.json"
    server = {"httpUrl": ctx.url, "headers": {"Authorization": f"Bearer {ctx.token}"}}
    return Wiring(
        argv=("--mcp-config", ctx.path(name)),
        files=(McpFile(name, _json({"mcpServers": {SERVER: server}}), holds_token=True),),
        how=f"--mcp-config {ctx.path(name)} (0600, holds the token)",
    )


def _opencode(ctx: Context) -> Wiring:
    # OPENCODE_CONFIG_CONTENT is merged over every config file and expands {env:VAR}.
    var = "OPENCODE_CONFIG_CONTENT"
    content: object = {}
    if ctx.environ.get(var):
        try:
            content = json.loads(ctx.environ[var])
        except ValueError:
            return Wiring(skipped=f"{var} in the daemon's environment is not JSON: not replaced")
    if not isinstance(content, dict) or not isinstance(content.get("mcp", {}), dict):
        return Wiring(skipped=f"{var} in the daemon's environment is not a config object")
    server = {
        "type": "remote",
        "url": ctx.url,
        "oauth": False,
        "headers": {"Authorization": f"Bearer {{env:{TOKEN_VAR}}}"},
    }
    merged = {**content, "mcp": {**content.get("mcp", {}), SERVER: server}}
    return Wiring(env=((var, json.dumps(merged)),), how=f"{var} (mcp.{SERVER})")


def _cline_user_settings(ctx: Context) -> Path:
    env = ctx.environ
    data = env.get("CLINE_DATA_DIR", "").strip()
    if not data:
        data = os.fspath(Path(env.get("CLINE_DIR", "").strip() or ctx.home / ".cline") / "data")
    return Path(data) / "settings" / "cline_mcp_settings.json"


def _cline(ctx: Context) -> Wiring:
    # CLINE_MCP_SETTINGS_PATH replaces the user's MCP settings file: the user's servers
    # are copied in (ours replaces a same-named one). Cline expands no variable there.
    var = "CLINE_MCP_SETTINGS_PATH"
    user = Path(ctx.environ[var]) if ctx.environ.get(var) else _cline_user_settings(ctx)
    servers: dict[str, object] = {}
    try:
        found = json.loads(user.read_text(encoding="utf-8")).get("mcpServers", {})
        servers = dict(found) if isinstance(found, dict) else {}
    except (OSError, ValueError, AttributeError):
        pass
    name = "mcp-cline.json"
    servers[SERVER] = {
        "type": "streamableHttp",
        "url": ctx.url,
        "headers": {"Authorization": f"Bearer {ctx.token}"},
    }
    return Wiring(
        env=((var, ctx.path(name)),),
        files=(McpFile(name, _json({"mcpServers": servers}), holds_token=True),),
        how=f"{var}={ctx.path(name)} (0600, holds the token)",
    )


def _copilot(ctx: Context) -> Wiring:
    # --additional-mcp-config @FILE augments ~/.copilot/mcp-config.json for this session.
    name = "mcp-copilot.json"
    server = {
        "type": "http",
        "url": ctx.url,
        "headers": {"Authorization": f"Bearer {ctx.token}"},
        "tools": ["*"],
    }
    return Wiring(
        argv=("--additional-mcp-config", f"@{ctx.path(name)}"),
        files=(McpFile(name, _json({"mcpServers": {SERVER: server}}), holds_token=True),),
        how=f"--additional-mcp-config @{ctx.path(name)} (0600, holds the token)",
    )


WAYS: Final[Mapping[str, Callable[[Context], Wiring]]] = {
    "claude": _claude,
    "codex": _codex,
    "gemini": _gemini,
    "qwen": _qwen,
    "opencode": _opencode,
    "cline": _cline,
    "copilot": _copilot,
}
"""Each way an agent can be given the server (a profile's ``mcp``)."""


def wiring(way: str | None, ctx: Context) -> Wiring:
    """What an agent of profile ``mcp`` ``way`` gets (see the module docstring)."""
    if way is None:
        return Wiring(skipped="its profile has no MCP support")
    return WAYS[way](ctx)


def write_files(wired: Wiring, state: Path) -> list[Path]:
    """Write the wiring's files into ``state`` (the job's directory), each 0600 from its
    creation (an earlier run's is replaced); their paths."""
    paths = []
    for item in wired.files:
        path = state / item.name
        path.unlink(missing_ok=True)  # O_EXCL below: never through a planted link
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(item.text)
        paths.append(path)
    return paths

"""Settings: one pydantic-settings object, built at the entry point and passed down.

Every field reads from a ``DISPATCHER_``-prefixed environment variable
(``DISPATCHER_STATE_DIR``, ``DISPATCHER_MAX_PARALLEL`` ...). Nothing here
touches the disk; :meth:`Settings.ensure_dirs` does, when the daemon starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8765


MCP_PATH = "/mcp"  # the MCP server's endpoint on the daemon's own app


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/dispatcher``, falling back to ``~/.local/state/dispatcher``."""
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "dispatcher"


def normalize_database_url(url: str) -> str:
    """``url`` as the store opens it: ``postgresql://`` and ``postgres://`` mean psycopg 3
    (the one PostgreSQL driver installed); ValueError, in one line without the URL (it may
    hold a password), for anything but a SQLite file or a PostgreSQL database."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme:
        raise ValueError("not a database URL: sqlite:///PATH or postgresql://...")
    dialect, _, driver = scheme.lower().partition("+")
    if dialect in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise ValueError(f"PostgreSQL is reached through psycopg, not {driver!r}")
        return f"postgresql+psycopg://{rest}"
    if dialect == "sqlite":
        if driver not in ("", "pysqlite") or not rest.startswith("/") or rest in ("/", "/:memory:"):
            raise ValueError("a SQLite URL names a file: sqlite:///PATH")
        return url.strip()
    raise ValueError(
        f"{dialect!r} is not a database the store runs on (sqlite:///PATH or postgresql://...)"
    )


class ForgeHost(BaseModel):
    """A self-hosted forge (``DISPATCHER_FORGES``): its kind and, if not the usual place
    on the host (``https://HOST/api/v3``, ``/api/v4``, ``/api/v1``), its API's base URL."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["github", "gitlab", "gitea", "forgejo"]
    api: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")


class Settings(BaseSettings):
    # An error names the setting and why, never the value: some hold secrets (forge
    # tokens, a password in DISPATCHER_DATABASE_URL).
    model_config = SettingsConfigDict(
        env_prefix="DISPATCHER_", extra="ignore", hide_input_in_errors=True
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    url: str | None = (
        None  # where the CLI finds the daemon (DISPATCHER_URL); default from host/port
    )
    # sqlite:///PATH (the default: dispatcher.db in the state dir) or postgresql://... (psycopg
    # 3; docs/configuration.md "PostgreSQL"). May hold a password: kept out of repr.
    database_url: str | None = Field(default=None, repr=False)
    token: str | None = None  # default: generated into <state_dir>/token on first start
    public_api_docs: bool = False  # serve /docs, /redoc and /openapi.json without the token

    # This daemon as a worker (docs/cluster.md): its name in GET /workers (default: the
    # host name) and, on PostgreSQL, its queue worker's heartbeat and when a silent one is
    # taken for dead.
    worker_name: str | None = Field(default=None, min_length=1, max_length=200)
    worker_heartbeat_seconds: float = Field(default=10, gt=0, le=3600)
    worker_timeout_seconds: float = Field(default=30, gt=0, le=86400)
    # A node that stopped cleanly left its agents running for its next start to re-adopt:
    # its busy jobs are taken over by another node only this long after it stopped.
    worker_stopped_grace_seconds: float = Field(default=600, ge=0, le=7 * 86400)
    # Where the other nodes reach this daemon's API (a job this node holds is operated
    # through it: docs/cluster.md); default its own address (api_url).
    advertise_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$")

    max_parallel: int = Field(default=4, ge=1, description="agents running at once, all repos")
    max_parallel_per_repo: int = Field(default=2, ge=1)
    default_agent: str = "claude"
    default_timeout_minutes: float = Field(default=45, gt=0)
    kill_grace_seconds: float = Field(default=5, ge=0)
    # Profile overrides: {"claude": ["claude", "-p", "--model", "opus"]} (JSON in the env var).
    agents: dict[str, list[str] | str] = Field(default_factory=dict)

    # Triggers. Webhook secrets come from here (the environment), never from a repo's file.
    github_webhook_secret: str | None = None  # X-Hub-Signature-256 (GitHub, Gitea, Forgejo)
    gitlab_webhook_token: str | None = None  # X-Gitlab-Token
    webhook_secrets: dict[str, str] = Field(default_factory=dict)  # per repo name, overrides
    max_webhook_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    watch_files: bool = True  # watchdog on working copies for file_change triggers
    ref_poll_seconds: float = Field(default=30, gt=0)  # full ref rescan even without a hint
    check_workers: int = Field(default=2, ge=1)  # trigger checks running at once
    # A schedule's fire time missed by more than this (machine asleep, daemon stopped or
    # busy) is dropped, not caught up; None: caught up however late. Missed ones coalesce.
    schedule_grace_seconds: float | None = Field(default=None, gt=0)

    # Speed: idle worktrees kept checked out per repo, so agents start without a checkout.
    pool_size: int = Field(default=2, ge=0, le=64)  # 0 disables the pool

    # Reliability.
    max_attempts: int = Field(default=3, ge=1)  # runs of a job whose agent is lost in a crash
    retry_backoff_seconds: float = Field(default=30, ge=0)  # doubled for each further attempt
    worktree_retention_hours: float = Field(default=72, ge=0)  # finished worktrees; 0: keep
    sweep_interval_minutes: float = Field(default=10, gt=0)  # worktree consistency sweeps
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)  # API request bodies
    idempotency_hours: float = Field(default=24, gt=0)  # how long Idempotency-Key answers last
    # Agent resource limits (None: unlimited) and log capping.
    # Address space, not memory in use: Node agents (Claude Code, Codex) reserve
    # ~1 GiB at start, so use 4096 or more for them.
    agent_memory_mb: int | None = Field(default=None, ge=256)
    agent_cpu_seconds: int | None = Field(default=None, ge=1)
    max_log_bytes: int = Field(default=50 * 1024 * 1024, ge=4096)
    log_keep: int = Field(default=1, ge=0)  # rotated copies kept beside agent.log
    # Agent sandbox (dispatcher/process/sandbox.py, docs/agents.md "What an agent can see"):
    # auto: bubblewrap when it works here, else unsandboxed with a line in each job log;
    # bwrap: required (a job fails without it); off: never.
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    sandbox_bwrap: str = "bwrap"  # the bubblewrap program: a name on PATH, or a path
    # Each agent's process tree in a cgroup (v2) of its own, killed whole when the job
    # ends ("off": only its process group, which a process leaves with setsid).
    cgroups: Literal["auto", "off"] = "auto"
    # Where job cgroups are made (default: dispatcher-<hash> in the daemon's own cgroup).
    cgroup_parent: Path | None = None

    # Agent environments. Each running job gets DISPATCHER_PORT (and PORT): the first
    # of job_ports free ports from [job_port_base, job_port_base + job_port_count).
    job_port_base: int = Field(default=20000, ge=1024, le=65535)
    job_port_count: int = Field(default=2000, ge=1, le=40000)
    job_ports: int = Field(default=10, ge=1, le=1000)  # a block per job
    # Budgets and notifications.
    daily_cost_usd: float | None = Field(default=None, gt=0)  # per repo; a repo's own wins
    notify: list[dict[str, object]] = Field(default_factory=list)  # like a trigger file's
    notify_attempts: int = Field(default=5, ge=1, le=20)

    # Leftovers: files an agent left uncommitted larger than this (MiB) are not
    # committed for it; the job fails naming them. 0: no limit.
    max_leftover_file_mb: float = Field(default=50, ge=0)

    commit_author_name: str = "worktree-dispatcher"
    commit_author_email: str = "dispatcher@localhost"

    log_level: str = "INFO"
    log_json: bool = False  # the old name of log_format=json, still read (see log_format)

    # Tests only: where crash tests hold the daemon at named fault points
    # (dispatcher/faults.py). Unset in every real deployment.
    fault_dir: Path | None = None

    # Observability (docs/observability.md). GET /metrics without the token: refused at
    # start unless the daemon listens on loopback only.
    metrics_open: bool = False
    # The daemon's log on stderr: text lines, or one JSON object per line (with job_id,
    # repo, event_id where they apply). DISPATCHER_LOG_JSON=true means json unless
    # DISPATCHER_LOG_FORMAT says otherwise.
    log_format: Literal["text", "json"] = "text"
    # uvicorn's access log, a line per request (in the log format above).
    access_log: bool = False
    # The warm pool grows past a repo's pool size with demand (issue 18, docs/design.md
    # "The warm pool's size"): its target is the number of jobs that took (or wanted) a
    # pool tree in the last pool_window_seconds, at least the pool size and at most
    # pool_max (never below the pool size: pool_max <= pool_size turns growth off). After
    # a window without jobs the target is the pool size again and extra trees go.
    pool_max: int = Field(default=10, ge=0, le=64)
    pool_window_seconds: float = Field(default=600, gt=0)
    # Background pool work (checkouts, cleaning released trees) running at once.
    pool_workers: int = Field(default=2, ge=1, le=16)

    # GET /repos' worktree bytes: measured in the background (dispatcher/jobs/diskuse.py),
    # a full pass this often, and each tree again when a job ends or its tree goes.
    disk_use_refresh_minutes: float = Field(default=5, gt=0)

    # Issue 13: every agent started is given the daemon's MCP server its own way
    # (docs/mcp-agents.md); false: none is, and their messages come in their prompts.
    mcp_for_agents: bool = True
    # Agents (profile names) not given it even so: '["codex"]' (JSON in the env var).
    mcp_skip_agents: list[str] = Field(default_factory=list)
    # How many jobs one job (with its follow-ups and retries) may create through MCP.
    mcp_max_children: int = Field(default=50, ge=0)
    # How long a read of a team's messages holds what it handed out: unacknowledged by
    # then (its caller went away), they are handed out again (docs/teams.md).
    team_message_lease_seconds: float = Field(default=60, gt=0, le=86_400)
    # How many tasks one team may hold (conflict-fix tasks the daemon adds are not capped).
    team_max_tasks: int = Field(default=100, ge=1)
    # How many REST message reads with `wait` may wait at once (each holds a thread of
    # their own pool, not the one every other route shares); the next is refused (503).
    team_read_waits: int = Field(default=32, ge=1)

    # Issue 14, docs/forge.md: pushes and pull requests. Self-hosted forges by host
    # ('{"git.example.com": {"kind": "gitea"}}'), and a token per forge host
    # ('{"github.com": "ghp_..."}'): used for https pushes (through a credential helper
    # reading the git process's environment) and the forge's REST API; never logged,
    # never in argv, never given to agents (every DISPATCHER_* variable is kept from them).
    forges: dict[str, ForgeHost] = Field(default_factory=dict)
    forge_tokens: dict[str, SecretStr] = Field(default_factory=dict, repr=False)

    @field_validator("forge_tokens")
    @classmethod
    def _plain_tokens(cls, tokens: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Tokens trimmed (a file read with a CRLF), and refused (naming the host, never
        the token) if anything else in them is not printable: a header with such a byte
        fails in the HTTP library, whose message would hold the token escaped."""
        clean: dict[str, SecretStr] = {}
        for host, token in tokens.items():
            value = token.get_secret_value().strip()
            if not value.isprintable() or not value.isascii() or " " in value:
                raise ValueError(f"the forge token for {host!r} holds spaces or control characters")
            clean[host] = SecretStr(value)
        return clean

    forge_timeout_seconds: float = Field(default=20, gt=0, le=300)  # one API request
    push_timeout_seconds: float = Field(default=300, gt=0)  # one git push
    # A hub repo's (docs/cluster.md): a running job's work in progress pushed this often
    # to refs/dispatcher/attempts/<id>/<attempt> (0: never); a job branch's push tried
    # this many times before its failure is recorded.
    attempt_push_seconds: float = Field(default=60, ge=0)
    hub_push_tries: int = Field(default=3, ge=1, le=20)
    fetch_timeout_seconds: float = Field(default=60, gt=0, le=3600)  # one `fetch: true` fetch
    # Jobs of a `fetch: true` repo submitted within this many seconds of its last fetch
    # share it (docs/forge.md).
    fetch_coalesce_seconds: float = Field(default=5, ge=0, le=3600)

    # Fix loops (docs/forge.md, "Fix loops"): a job's pull request whose CI fails, or
    # whose reviewer asks for changes, gets a follow-up on its branch, then a push; at
    # most max_fix_attempts per chain (a trigger file's max-fix-attempts first; 0: no
    # fix loop), then the PR gets fix_gave_up_label and a person is notified. Reviews
    # and comments count only from fix_authors (forge logins, every repo; a trigger
    # file's fix-authors adds its repo's) or, on GitHub, authors whose association
    # with the repo is one of fix_author_associations. A comment asks for a fix by
    # starting with fix_command.
    max_fix_attempts: int = Field(default=3, ge=0, le=100)
    fix_command: str = Field(default="/dispatcher fix", min_length=1, max_length=100)
    fix_authors: list[str] = Field(default_factory=list)
    fix_author_associations: list[str] = Field(
        default_factory=lambda: ["OWNER", "MEMBER", "COLLABORATOR"]
    )
    fix_gave_up_label: str = Field(
        default="dispatcher-gave-up", min_length=1, max_length=100, pattern=r"^[^,\x00-\x1f]+$"
    )

    @model_validator(mode="after")
    def _log_json_alias(self) -> Settings:
        if self.log_json and "log_format" not in self.model_fields_set:
            self.log_format = "json"
        return self

    @model_validator(mode="after")
    def _ports_fit(self) -> Settings:
        if self.job_port_base + self.job_port_count > 65536:
            raise ValueError("job_port_base + job_port_count must not pass port 65535")
        if self.job_ports > self.job_port_count:
            raise ValueError("job_ports (a block per job) must not exceed job_port_count")
        return self

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> Settings:
        if self.worker_heartbeat_seconds >= self.worker_timeout_seconds:
            raise ValueError(
                "worker_heartbeat_seconds must be less than worker_timeout_seconds (a worker "
                "would be taken for dead between two heartbeats)"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        """``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; anything
        but SQLite and PostgreSQL is refused (the message never repeats the URL: it may
        hold a password)."""
        return None if url is None else normalize_database_url(url)

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def worktrees_dir(self) -> Path:
        return self.state_dir / "worktrees"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def merges_dir(self) -> Path:
        """Journals of merges under way (dispatcher/git/journal.py)."""
        return self.state_dir / "merges"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "token"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "daemon.lock"

    @property
    def node_id_file(self) -> Path:
        """This state dir's node id (dispatcher/cluster/node.py)."""
        return self.state_dir / "node-id"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'dispatcher.db'}"

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, when the database is one (it may be outside the state dir)."""
        url = self.db_url
        return (
            Path(url.split(":///", 1)[1].split("?", 1)[0]) if url.startswith("sqlite:///") else None
        )

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def mcp_url(self) -> str:
        """The daemon's own MCP endpoint (docs/mcp.md), given to every agent it starts."""
        return self.api_url + MCP_PATH

    def ensure_dirs(self) -> None:
        for path in (self.state_dir, self.worktrees_dir, self.jobs_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

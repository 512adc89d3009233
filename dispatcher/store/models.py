"""SQLModel tables and the API's request/response schemas.

``XBase`` holds shared fields, ``X(table=True)`` the row, ``XCreate`` what a
client sends and ``XPublic`` what it gets back (full-stack-fastapi-template).
Times are stored as naive UTC and always returned timezone-aware (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, field_validator
from pydantic import Field as PydanticField
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from dispatcher.durations import parse_duration
from dispatcher.lifecycle import JobState, MergeStrategy
from dispatcher.paths import repo_subpath


def utcnow() -> datetime:
    return datetime.now(UTC)


def start_of_day(now: datetime | None = None) -> datetime:
    """00:00 UTC of the day of ``now``: where daily budgets start."""
    return (now or utcnow()).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Store naive UTC, hand back aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""A number that may pass 2**31 (a process's start time in clock ticks since boot, after
248 days up; token counts): PostgreSQL's INTEGER is 32 bits, SQLite's every integer 64."""


# ---------------------------------------------------------------- workers


class Worker(SQLModel, table=True):
    """A daemon that runs jobs from this database (docs/cluster.md): one row per start.

    ``queue_worker_id`` is its procrastinate worker's id (PostgreSQL only): that row's
    ``last_heartbeat`` says whether it is alive. On SQLite there is one daemon, and its
    row is alive while it runs (``stopped_at`` None).
    """

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)  # DISPATCHER_WORKER_NAME, by default the host name
    # The state dir it ran from (dispatcher/cluster/node.py): the same for every start of it
    node: str | None = Field(default=None, index=True)
    host: str
    pid: int
    state_dir: str
    api_url: str
    slots: int  # DISPATCHER_MAX_PARALLEL
    queue_worker_id: int | None = Field(default=None, sa_type=BigInt)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WorkerPublic(BaseModel):
    """A worker as ``GET /workers`` shows it."""

    id: int
    name: str
    node: str | None = PydanticField(
        default=None, description="Its node: the state dir it runs from, the same for every start"
    )
    host: str
    pid: int
    state_dir: str
    api_url: str
    slots: int
    started_at: datetime
    stopped_at: datetime | None = None
    heartbeat_at: datetime | None = PydanticField(
        default=None, description="Its last heartbeat (PostgreSQL: procrastinate's)"
    )
    alive: bool = PydanticField(description="Running, by its heartbeat or its own row")
    this: bool = PydanticField(description="The daemon that answered")
    running: int = PydanticField(default=0, description="Its jobs preparing or running")


# ---------------------------------------------------------------- repos


class Repo(SQLModel, table=True):
    """A repository, one row for the cluster (docs/cluster.md, "Clones per node"); each
    node's checkout of it is a :class:`Clone`.

    ``path`` as the store hands a repo out is *this node's* clone's path (the store sets
    it from the node's :class:`Clone` row); the column keeps the path the repo was first
    registered with, for nothing but old readers of the table. ``remote_key`` is the
    normalised remote URL (:func:`dispatcher.forge.remotes.clone_key`) that another
    node's clone is matched by; None: a repo of its node alone."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str
    remote_key: str | None = Field(default=None, index=True)
    default_branch: str
    max_parallel: int | None = None  # per-repo override of settings.max_parallel_per_repo
    pool_size: int | None = None  # per-repo override of settings.pool_size
    forge_name: str | None = Field(default=None, index=True)  # "owner/name" for webhooks
    daily_cost_usd: float | None = None  # cap on agents' reported cost per UTC day
    # Fetch this remote (None: origin) before a job's base is resolved (docs/forge.md).
    fetch: bool | None = None
    fetch_remote: str | None = None
    # The shared remote results leave the machine to (docs/cluster.md, step 6): job
    # branches, work in progress and merges are pushed there. None: no hub.
    hub: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The trigger file: the last good text is what is active; a broken newer one
    # only sets triggers_error (with file:line) until it is fixed.
    triggers_text: str | None = None
    triggers_blob: str | None = None  # blob id of the file last read (good or bad)
    triggers_error: str | None = None
    triggers_loaded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    triggers_max_parallel: int | None = None  # the active file's max-parallel


class Clone(SQLModel, table=True):
    """One node's checkout of a repo (docs/cluster.md, "Clones per node"): a node has at
    most one clone of a repo, and a path is one repo's clone on its node. ``node`` None:
    a clone from before migration 0022 (or of a store given no node), which the first
    daemon start after it takes as its own
    (:meth:`~dispatcher.store.database.Store.adopt_clones`)."""

    __table_args__ = (
        sa.UniqueConstraint("repo_id", "node", name="uq_clone_repo_node"),
        sa.UniqueConstraint("node", "path", name="uq_clone_node_path"),
    )

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repo.id")
    node: str | None = None
    path: str
    # The last seen tip of each local branch of this clone (ref -> sha), so that its ref
    # changes are caught up after downtime (dispatcher/events/sources.py): each clone's
    # own, as each node's branches are.
    refs: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ClusterSecret(SQLModel, table=True):
    """A secret the nodes of one database share (docs/cluster.md): ``peer``, the token a
    node asks another node's API with (made by the first node that needs it). Whoever
    reads the database can already queue any command, so it adds no power."""

    __tablename__ = "cluster_secret"

    name: str = Field(primary_key=True)
    value: str


class ClonePublic(BaseModel):
    """A node's clone of a repo, as ``GET /repos`` shows it."""

    model_config = ConfigDict(from_attributes=True)
    node: str | None = PydanticField(
        description="The node (its state dir's id: GET /workers) whose clone this is; null: "
        "a clone from before clones were recorded, not yet taken by a daemon start"
    )
    path: str


class IdempotentRequest(SQLModel, table=True):
    """A request made with an ``Idempotency-Key``: what it made, and its answer.

    A request that creates something writes this row in the same transaction as
    the row it creates (``resource_kind``, ``resource_id``), with no answer yet
    (``status`` None: pending); the answer is stored on it once sent. A retry
    replays a stored answer; one that finds the row pending (the daemon stopped
    in between) answers with the resource as it is now. Requests that create
    nothing get the row with their answer.
    """

    key: str = Field(primary_key=True)
    method: str = Field(primary_key=True)
    path: str = Field(primary_key=True)
    request_hash: str
    status: int | None = None
    body: bytes | None = None
    content_type: str | None = None
    resource_kind: str | None = None  # "job", "repo", "issue", "event"
    resource_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


@dataclass(frozen=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` request, handed by the API to the use-case it runs, which
    records it with what it creates (in the same transaction). Rows created before
    ``not_before`` have expired."""

    key: str
    method: str
    path: str
    request_hash: str
    not_before: datetime


class Event(SQLModel, table=True):
    """Something that happened, normalized; the dedup key makes a redelivery a no-op."""

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repo.id", index=True)
    kind: str
    action: str | None = None
    source: str
    dedup_key: str = Field(unique=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    facts: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    matched: list[str] = Field(default_factory=list, sa_type=sa.JSON)  # trigger names
    notes: list[str] = Field(default_factory=list, sa_type=sa.JSON)  # why no job, checks
    # Matched triggers whose outcome (a job, why no job, a passing check) is not recorded
    # yet; the next daemon takes them up again if this one stops before.
    pending_triggers: list[str] = Field(
        default_factory=list, sa_type=sa.JSON, sa_column_kwargs={"server_default": "[]"}
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Issue(SQLModel, table=True):
    """An issue filed in the local inbox (``dispatcher issue``), numbered per repo."""

    __table_args__ = (sa.UniqueConstraint("repo_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repo.id", index=True)
    number: int
    title: str
    body: str = ""
    labels: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    event_id: int | None = Field(default=None, foreign_key="event.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RepoSettings(BaseModel):
    """A repo's settings: what ``POST /repos`` takes besides its path and name, and all
    that ``PATCH /repos/{name}`` changes. None: the default (the daemon's setting; for
    ``forge_name``, what the origin remote names)."""

    model_config = ConfigDict(extra="forbid")
    max_parallel: int | None = Field(default=None, ge=1, le=10_000)
    pool_size: int | None = Field(default=None, ge=0, le=64)
    forge_name: str | None = PydanticField(default=None, pattern=r"^[\w.-]+(/[\w.-]+)+$")
    daily_cost_usd: float | None = PydanticField(default=None, gt=0, le=1_000_000)
    fetch: bool | None = PydanticField(
        default=None,
        description="Fetch the remote before a job's base is resolved, and before a rebase "
        "(docs/forge.md); default false",
    )
    fetch_remote: str | None = PydanticField(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$",
        description="The remote fetched (default origin)",
    )
    hub: str | None = PydanticField(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$",
        description="The repo's shared remote (a git remote of its clone): job branches, "
        "work in progress and merges are pushed there (docs/cluster.md); default none",
    )


class RepoCreate(RepoSettings):
    path: str
    name: str | None = None


class RepoUpdate(RepoSettings):
    """``PATCH /repos/{name}``: only the fields sent change; ``null`` puts one back to its
    default. The path and the name cannot change (unregister and register again)."""


class RepoPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    path: str
    default_branch: str
    max_parallel: int | None
    pool_size: int | None
    created_at: datetime
    forge_name: str | None
    daily_cost_usd: float | None = None
    fetch: bool | None = None
    fetch_remote: str | None = None
    hub: str | None = None
    cost_today_usd: float = 0.0  # agents' reported cost of jobs finished since 00:00 UTC
    exists: bool = True  # False when the path vanished since registration
    remote_key: str | None = None  # the normalised remote URL other nodes' clones match
    # Every node's clone of the repo (this node's path is ``path``), oldest first.
    clones: list[ClonePublic] = Field(default_factory=list)
    jobs: dict[str, int] = Field(default_factory=dict)  # job counts by state
    triggers: list[str] = Field(default_factory=list)  # names of the active triggers
    triggers_error: str | None = None  # the newest trigger file's problems, one a line
    triggers_loaded_at: datetime | None = None
    triggers_max_parallel: int | None = None  # applies when max_parallel is not set
    # Disk used by the repo's job worktrees, measured in the background at
    # worktrees_measured_at (or before: the oldest part of the sum); both None until the
    # daemon's first measurement after its start.
    worktrees_bytes: int | None = None
    worktrees_measured_at: datetime | None = None


# ---------------------------------------------------------------- agents


class AgentPublic(BaseModel):
    """One agent profile as the daemon would run it (``GET /agents``)."""

    name: str
    source: str  # builtin; settings or repo (configured); "builtin, argv from settings|repo"
    description: str
    argv: list[str]  # the profile's argv, placeholders unfilled
    output: str  # stream-json, json or text
    structured: bool  # its output is parsed (summary, cost, tokens, session, error)
    can_resume: bool  # a follow-up continues the agent's session
    reports_cost: bool  # its output carries the cost in USD (budgets see it)
    system_prompt: bool  # the repo's conventions go by a flag, not in the prompt file
    budget_flag: bool  # the job's max-cost-usd is passed to the agent itself
    path: str | None  # where the daemon finds its program; None: not found
    version: str | None  # what its version command printed (first line)
    problem: str | None  # why it cannot be run or asked
    blocked: str | None  # why a job with it would fail at start now (e.g. as root)


# ---------------------------------------------------------------- jobs


class Job(SQLModel, table=True):
    __table_args__ = (
        sa.Index("ix_job_state_id", "state", "id"),
        sa.Index("ix_job_state_repo_id_id", "state", "repo_id", "id"),  # claiming
        sa.Index("ix_job_repo_id_id", "repo_id", "id"),
        sa.Index("ux_job_event_trigger", "event_id", "trigger", unique=True),
        sa.Index("ix_job_repo_group", "repo_id", "concurrency_group"),
        sa.Index("ix_job_notice_pending", "notice_pending"),
    )

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repo.id")
    state: JobState = Field(
        default=JobState.QUEUED,
        sa_type=sa.Enum(
            JobState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
            validate_strings=True,
        ),
    )
    # What was asked
    prompt: str
    agent: str  # profile name; "command" when argv is given
    command: list[str] | None = Field(default=None, sa_type=sa.JSON)
    base_ref: str  # as the user gave it ("main", a sha, "HEAD~2")
    base_sha: str  # resolved when the job was created
    target_branch: str  # where `merge` lands it by default
    timeout_s: float
    trigger: str | None = None
    retry_of: int | None = Field(default=None, foreign_key="job.id", index=True)
    attempt: int = 1
    max_attempts: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # lost runs
    not_before: datetime | None = Field(default=None, sa_type=UTCDateTime)  # retry backoff
    event_id: int | None = Field(default=None, foreign_key="event.id")
    concurrency_group: str | None = None
    profile: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)  # resolved agent
    sparse: list[str] | None = Field(default=None, sa_type=sa.JSON)  # sparse checkout dirs
    # setup/cleanup/copy/link/skills, resolved from the repo's trigger file at submit time
    workspace: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    max_cost_usd: float | None = None
    followup_of: int | None = Field(default=None, foreign_key="job.id", index=True)
    followed_by: int | None = None  # the follow-up job that took over worktree and branch
    # The team (docs/teams.md) the job works for, and its task (None: the team's lead).
    team_id: int | None = Field(default=None, index=True)
    task_id: int | None = Field(default=None, index=True)
    # The job whose agent created this one through the MCP server (its job token); its
    # retries and follow-ups keep it. None: made by a person, a script or a trigger.
    parent_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    # Where it runs: the worker (daemon start) that holds its current attempt: claimed it,
    # re-adopted its agent (a later start of its node) or took it over (docs/cluster.md)
    worker_id: int | None = Field(default=None, foreign_key="worker.id", index=True)
    # The node it must run on (None: any node with a clone of its repo): a follow-up runs
    # in its parent's worktree, on the node that has it (docs/cluster.md). A job a
    # take-over ended names the dead node: its branch is in that node's clone.
    node: str | None = None
    branch: str = ""
    worktree: str | None = None
    pid: int | None = None
    pid_start: int | None = Field(default=None, sa_type=BigInt)
    # Names this run's claim file (jobs/<id>/spawn-<nonce>) and cgroup; recorded before
    # the agent is spawned, so that a restarted daemon can tell whether it started.
    spawn_nonce: str | None = None
    port: int | None = None  # first of the job's DISPATCHER_PORT range while it runs
    # How its worktree was made (see WorktreeSource) and how long the job waited for it.
    worktree_source: str | None = None
    worktree_wait_s: float | None = None
    cancel_requested: bool = False
    # How it went
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    head_sha: str | None = None
    commits_ahead: int | None = None
    files_changed: int | None = None
    insertions: int | None = None
    deletions: int | None = None
    merged_sha: str | None = None
    merged_into: str | None = None
    merge_strategy: str | None = None
    # What the agent reported (parsed from its output; see dispatcher/agents/output.py)
    summary: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = Field(default=None, sa_type=BigInt)
    output_tokens: int | None = Field(default=None, sa_type=BigInt)
    turns: int | None = None
    session_id: str | None = None
    # The forge (docs/forge.md): what `on-success:` of the job's trigger asked for
    # ({"push": true} or {"pr": {...}}), where its branch was last pushed, its pull
    # request, and the last push or pull request error (None once one works).
    on_success: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    pushed_remote: str | None = None
    pushed_sha: str | None = None
    pushed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    pr_url: str | None = None
    pr_number: int | None = None
    pr_state: str | None = None
    forge_error: str | None = None
    # The repo's hub (docs/cluster.md): the commit its branch is at there after the
    # last push, or the one line on why that push failed (None once one works).
    hub_sha: str | None = None
    hub_error: str | None = None
    # `dispatcher rebase` (docs/forge.md): the target tip the branch was last rebased onto
    # (then also its base_sha), and when.
    rebased_onto: str | None = None
    rebased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The state whose notifications are still owed (not every delivery has a final
    # outcome yet): the next daemon sends what is missing. None: nothing owed.
    notice_pending: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PrAction(SQLModel, table=True):
    """What a forge delivery asks of a job's pull request (docs/forge.md, "Fix loops"):
    close the job (``merged``, ``closed``) or a fix (``ci_failed``, ``changes_requested``,
    ``comment``) run as a follow-up of the chain's newest job. Recorded before it is acted
    on, keyed by the delivery (one delivery, one action), and acted on one at a time
    per chain; the next daemon goes on with what one left queued or half-done."""

    __table_args__ = (sa.Index("ix_pr_action_root_state", "root_id", "state"),)
    __tablename__ = "pr_action"

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repo.id", index=True)
    root_id: int = Field(foreign_key="job.id")  # the first job of the follow-up chain
    dedup_key: str = Field(unique=True)  # the delivery's, per repo
    kind: str  # merged | closed | ci_failed | changes_requested | comment
    # queued -> started (its follow-up being made) -> running (made: job_id) -> done;
    # or done at once (merged, closed), dropped (nothing to do), gave_up (past the bound)
    state: str = "queued"
    name: str | None = None  # the failing check, the reviewer
    prompt: str | None = None  # the follow-up's prompt (built when recorded)
    author: str | None = None
    head_sha: str | None = None  # the commit the delivery is about
    job_id: int | None = Field(default=None, foreign_key="job.id")  # the follow-up made
    note: str | None = None  # what became of it
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PrActionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    state: str
    name: str | None
    author: str | None
    job_id: int | None
    note: str | None
    created_at: datetime


SparseDir = Annotated[
    str, StringConstraints(min_length=1, max_length=1024), AfterValidator(repo_subpath)
]
"""A directory of a sparse checkout: relative, inside the repo."""


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str
    prompt: str = Field(min_length=1, max_length=1_000_000)
    agent: str | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    base: str | None = None
    timeout_minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)
    trigger: str | None = None
    sparse: list[SparseDir] | None = PydanticField(
        default=None,
        min_length=1,
        max_length=200,
        description="Check out only these directories, plus the files at the top level "
        "(git's cone-mode sparse checkout). The job does not use the warm pool.",
    )
    skills: list[str] | None = PydanticField(
        default=None,
        max_length=100,
        description="Names of the repo's .dispatcher/skills/*.md given in full to the agent.",
    )
    max_cost_usd: float | None = PydanticField(
        default=None, gt=0, le=1_000_000, description="Budget for this job's agent, in USD."
    )

    @field_validator("command")
    @classmethod
    def _no_empty_program(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value[0].strip():
            raise ValueError("command's program must not be empty")
        return value


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    repo: str
    state: JobState
    prompt: str
    agent: str
    command: list[str] | None
    base: str
    base_ref: str
    target_branch: str
    branch: str
    worktree: str | None
    trigger: str | None
    event_id: int | None
    concurrency_group: str | None
    sparse: list[str] | None
    workspace: dict[str, Any] | None
    retry_of: int | None
    followup_of: int | None
    followed_by: int | None
    team_id: int | None = None
    task_id: int | None = None
    parent_id: int | None = PydanticField(
        default=None,
        description="The job whose agent created this one through the MCP server (docs/mcp.md)",
    )
    attempt: int
    max_attempts: int
    not_before: datetime | None
    pid: int | None
    exit_code: int | None
    signal: int | None
    error: str | None
    head: str | None
    commits_ahead: int | None
    files_changed: int | None
    insertions: int | None
    deletions: int | None
    duration_s: float | None
    merged_sha: str | None
    merged_into: str | None
    merge_strategy: str | None
    port: int | None
    worker_id: int | None = PydanticField(
        default=None, description="The worker that claimed its current attempt (GET /workers)"
    )
    worktree_source: str | None = PydanticField(
        default=None,
        description="How the job's worktree was made: pool (a warm tree recycled), cold "
        "(the warm pool had none idle: a full checkout the job waited for), fresh (a "
        "checkout, the job not using the pool: sparse, or pool size 0); none for a "
        "follow-up (its parent's tree) or a job not started",
    )
    worktree_wait_s: float | None = PydanticField(
        default=None, description="Seconds the job waited for its worktree (pool or checkout)"
    )
    summary: str | None
    cost_usd: float | None
    max_cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    turns: int | None
    session_id: str | None
    timeout_s: float
    on_success: dict[str, Any] | None = PydanticField(
        default=None,
        description="What its trigger's on-success asked for when it succeeds with commits "
        '({"push": true, "remote": ...} and "pr" options); none for a job made by hand',
    )
    pushed_remote: str | None = PydanticField(
        default=None, description="The remote the job's branch was last pushed to"
    )
    pushed_sha: str | None = PydanticField(
        default=None, description="The commit the branch was at on that remote after the push"
    )
    pushed_at: datetime | None = None
    pr_url: str | None = PydanticField(
        default=None, description="The job's pull (merge) request on its forge (docs/forge.md)"
    )
    pr_number: int | None = None
    pr_state: str | None = PydanticField(
        default=None, description="open, draft, closed or merged, as last seen"
    )
    forge_error: str | None = PydanticField(
        default=None, description="Why the last push or pull request failed (None: it worked)"
    )
    hub_sha: str | None = PydanticField(
        default=None,
        description="The commit the job's branch is at on its repo's hub after the last push "
        "there (docs/cluster.md)",
    )
    hub_error: str | None = PydanticField(
        default=None, description="Why the last push of the branch to the hub failed"
    )
    rebased_onto: str | None = PydanticField(
        default=None,
        description="The target's tip the branch was last rebased onto (`dispatcher rebase`); "
        "its base is then that commit",
    )
    rebased_at: datetime | None = None
    fix_attempts: int | None = PydanticField(
        default=None,
        description="Fix follow-ups its chain ran for its pull request (CI failures, "
        'reviews, comments: docs/forge.md, "Fix loops"); none for a job without any',
    )
    fixes_queued: int | None = PydanticField(
        default=None, description="Forge deliveries waiting for the chain's running follow-up"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    closed_at: datetime | None
    log_url: str

    @classmethod
    def of(cls, job: Job, repo_name: str) -> JobPublic:
        assert job.id is not None
        duration = None
        if job.started_at and job.finished_at:
            duration = round((job.finished_at - job.started_at).total_seconds(), 3)
        data: dict[str, Any] = job.model_dump()
        data.update(
            repo=repo_name,
            base=job.base_sha,
            head=job.head_sha,
            duration_s=duration,
            log_url=f"/jobs/{job.id}/log",
        )
        return cls.model_validate(data)


RemoteName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")]
BranchName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^,\x00-\x1f]+$")]


class PushRequest(BaseModel):
    """``POST /jobs/{id}/push``."""

    model_config = ConfigDict(extra="forbid")
    remote: RemoteName = PydanticField(default="origin", description="The repo's remote")
    force_with_lease: bool = PydanticField(
        default=False,
        description="Overwrite the remote branch, but only if it is where this job last "
        "pushed it (or absent)",
    )


class PullRequestCreate(BaseModel):
    """``POST /jobs/{id}/pr``."""

    model_config = ConfigDict(extra="forbid")
    remote: RemoteName = "origin"
    draft: bool = False
    base: BranchName | None = PydanticField(
        default=None, description="The branch it asks to merge into (default: the job's target)"
    )
    labels: list[Label] = PydanticField(default_factory=list, max_length=20)


class FollowupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=1_000_000)
    timeout_minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)


class Delivery(SQLModel, table=True):
    """The outcome of one notification (after its retries)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    target: str  # ntfy | slack | webhook
    url: str  # redacted: no userinfo, no query
    state: str  # the job state that was announced
    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    message_id: str | None = None  # the webhook-id: how a restart knows what was done


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    target: str
    url: str
    state: str
    ok: bool
    attempts: int
    status_code: int | None
    error: str | None
    at: datetime


class NoticeDelivery(DeliveryPublic):
    """A delivery with the job it was about (the dashboard's notifications page)."""

    id: int
    job_id: int


class JobPage(BaseModel):
    items: list[JobPublic]
    next_before: int | None  # pass as ?before= for the next (older) page


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: MergeStrategy = MergeStrategy.MERGE
    into: str | None = None
    delete_branch: bool = False


class ActionResult(BaseModel):
    """Answer of merge/discard/cancel/retry: the job, and whether this call changed anything."""

    job: JobPublic
    changed: bool
    message: str


def _duration(text: str) -> str:
    parse_duration(text)  # its ValueError names the grammar
    return text


class PruneRequest(BaseModel):
    """``POST /jobs/prune``: which finished jobs to discard and whose leftovers to tidy."""

    model_config = ConfigDict(extra="forbid")
    states: list[JobState] | None = PydanticField(
        default=None,
        min_length=1,
        description="Only jobs in these states, with or without commits. Default: failed, "
        "canceled and timed_out jobs without commits ahead, and the branches and worktrees "
        "left by merged and discarded jobs. Queued, preparing and running are refused.",
    )
    older_than: Annotated[str, AfterValidator(_duration)] | None = PydanticField(
        default=None,
        description="Only jobs that finished (merged or discarded: closed) at least this "
        "long ago: a number and a unit, s, m, h, d or w (90m, 12h, 7d, 1d12h).",
    )
    repo: str | None = PydanticField(default=None, description="Only this repo's jobs.")
    dry_run: bool = PydanticField(
        default=False, description="Only list what would be pruned; change nothing."
    )


class PrunedJob(BaseModel):
    """One job a prune picked: what it did (or would do) to it, or why it kept it."""

    id: int
    repo: str
    state: JobState  # when picked, before the prune
    age_s: float  # since it finished (merged or discarded: since it was closed)
    commits: int | None  # on its branch, not in its base; None: unknown (repo path gone)
    branch: str
    action: Literal["discard", "delete_branch", "keep"]
    done: bool  # the action happened (False: a dry run, or it failed: see message)
    message: str


class PruneResult(BaseModel):
    dry_run: bool
    jobs: list[PrunedJob]  # pruned (or, in a dry run, to be pruned), then kept
    orphans: list[str]  # worktree directories no job claims: removed (or to be)
    summary: str


class DiffPublic(BaseModel):
    job: int
    base: str
    head: str
    stat: str
    patch: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    jobs_active: int


DoctorStatus = Literal["ok", "warning", "problem"]


class DoctorCheck(BaseModel):
    """One line of ``dispatcher doctor`` (``GET /doctor``); docs/configuration.md
    "dispatcher doctor" says which check is a problem and which a warning."""

    check: str  # what was checked: "git", "state dir", "agent claude", "repo app" ...
    status: DoctorStatus  # problem: jobs would fail or never be made; warning: works, but mind it
    detail: str  # what was found
    fix: str | None = None  # how to fix it (None when there is nothing to do)


# ---------------------------------------------------------------- events and issues


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    repo: str
    kind: str
    action: str | None
    source: str
    dedup_key: str
    matched: list[str]
    notes: list[str]
    pending_triggers: list[str] = Field(default_factory=list)  # outcome not recorded yet
    jobs: list[int] = Field(default_factory=list)
    created_at: datetime
    payload: dict[str, Any]


class IngestResult(BaseModel):
    """What became of an event: stored (or a duplicate), and the jobs it made."""

    # None: nothing was stored (ignored). A default only so that the OpenAPI document,
    # which drops nulls, can show that answer's example (docs/openapi.json).
    event_id: int | None = None
    duplicate: bool = False
    ignored: str | None = None  # why nothing was stored (unknown repo, unhandled kind)
    matched: list[str] = Field(default_factory=list)
    jobs: list[int] = Field(default_factory=list)
    pending_checks: list[str] = Field(default_factory=list)  # triggers whose check runs now
    notes: list[str] = Field(default_factory=list)


class IssueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=1000)
    body: str = Field(default="", max_length=200_000)
    labels: list[str] = Field(default_factory=list, max_length=50)


class IssuePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    number: int
    repo: str
    title: str
    body: str
    labels: list[str]
    event_id: int | None
    jobs: list[int] = Field(default_factory=list)
    created_at: datetime


class EventCreate(BaseModel):
    """``POST /events``: anything else (a CI system, a chat bot) reporting an event."""

    model_config = ConfigDict(extra="forbid")
    repo: str
    kind: Literal[
        "issues", "issue_comment", "pull_request", "push", "workflow_run", "check_run",
        "schedule", "file_change", "manual",
    ]  # fmt: skip
    action: str | None = None
    dedup_key: str | None = Field(default=None, min_length=1, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)
    branch: str | None = None
    head_branch: str | None = None
    sha: str | None = None
    paths: list[str] | None = None
    labels: list[str] = Field(default_factory=list)
    added_label: str | None = None
    author: str | None = None
    text: str | None = None
    workflow: str | None = None
    conclusion: str | None = None


class TriggerStatus(BaseModel):
    repo: str
    triggers: list[dict[str, Any]]  # name, on (kinds), agent
    error: str | None
    loaded_at: datetime | None


# ---------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    code: str  # stable: not_found, invalid_state, merge_conflict, ... (docs/api.md)
    message: str  # one line, for people
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorDetail

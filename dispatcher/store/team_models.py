"""Teams: their tables (team, task, message), task states, and the API's schemas.

A team is a goal in one repo, a lead job, and a graph of tasks; each task runs
as jobs (``Job.team_id``, ``Job.task_id``) branched from the team's integration
branch, and its work is merged back into that branch (docs/teams.md). Beside
the tables as the job's are in :mod:`dispatcher.store.models`, so the faces may
import them (never the database module).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from dispatcher.errors import InvalidState
from dispatcher.paths import repo_subpath
from dispatcher.store.models import UTCDateTime, utcnow


class TeamState(StrEnum):
    ACTIVE = "active"  # tasks start as their blockers finish
    SHUT_DOWN = "shut_down"  # every member canceled; nothing starts any more
    MERGED = "merged"  # the integration branch was merged by a person


class TaskState(StrEnum):
    WAITING = "waiting"  # a blocker is not done, or a limit (budget, max-parallel) holds it
    STARTING = "starting"  # its job is being made (a restart finds the job or makes it)
    RUNNING = "running"  # its job is queued or runs
    PLAN_REVIEW = "plan_review"  # its plan waits for the lead's or a person's decision
    INTEGRATING = "integrating"  # its branch is being merged into the integration branch
    CONFLICTED = "conflicted"  # its merge conflicted: a conflict-fix task integrates it
    DONE = "done"  # its work is on the integration branch (or it made none)
    FAILED = "failed"  # its job crashed, timed out or was canceled; `retry` starts it again
    CANCELED = "canceled"  # the team was shut down before it was done


OPEN_TASK_STATES = frozenset(
    {TaskState.STARTING, TaskState.RUNNING, TaskState.PLAN_REVIEW, TaskState.INTEGRATING}
)
"""A task that holds one of the team's max-parallel places."""

_T = TaskState
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _T.WAITING: frozenset({_T.STARTING, _T.CANCELED}),
    _T.STARTING: frozenset({_T.RUNNING, _T.FAILED, _T.CANCELED, _T.WAITING}),
    _T.RUNNING: frozenset({_T.PLAN_REVIEW, _T.INTEGRATING, _T.FAILED, _T.CANCELED, _T.DONE}),
    _T.PLAN_REVIEW: frozenset({_T.STARTING, _T.CANCELED, _T.FAILED}),
    _T.INTEGRATING: frozenset({_T.DONE, _T.CONFLICTED, _T.FAILED}),
    _T.CONFLICTED: frozenset({_T.DONE, _T.CANCELED}),
    _T.DONE: frozenset(),
    _T.FAILED: frozenset({_T.WAITING, _T.CANCELED}),
    _T.CANCELED: frozenset({_T.WAITING}),
}


def task_transition(current: TaskState, target: TaskState) -> TaskState:
    """``target`` if a task may move there from ``current``; else InvalidState."""
    if target not in TASK_TRANSITIONS[current]:
        raise InvalidState(f"a task cannot go from {current.value} to {target.value}")
    return target


def _enum(cls: type[StrEnum]) -> sa.Enum:
    return sa.Enum(
        cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )  # fmt: skip


class Team(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repo.id", index=True)
    goal: str
    state: TeamState = Field(default=TeamState.ACTIVE, sa_type=_enum(TeamState))
    branch: str = ""  # the integration branch, dispatcher/team-<id>
    base_sha: str  # where the integration branch started
    lead_job_id: int | None = None
    lead_agent: str | None = None
    lead_command: list[str] | None = Field(default=None, sa_type=sa.JSON)
    budget_usd: float | None = None
    max_parallel: int | None = None
    held: str | None = None  # why waiting tasks do not start now (the budget), once said
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The node (docs/cluster.md) that made it: its integration branch is in that node's
    # clone, and that node's starts resume it. None: made before teams recorded it.
    node: str | None = Field(default=None, index=True)


class TeamTask(SQLModel, table=True):
    __tablename__ = "team_task"

    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="team.id", index=True)
    title: str
    prompt: str
    agent: str | None = None
    command: list[str] | None = Field(default=None, sa_type=sa.JSON)
    blocked_by: list[int] = Field(default_factory=list, sa_type=sa.JSON)
    owns: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    requires_plan: bool = False
    state: TaskState = Field(default=TaskState.WAITING, sa_type=_enum(TaskState))
    job_id: int | None = None  # its current (or last) job
    attempts: int = 0  # jobs started for it (a follow-up is not one)
    error: str | None = None  # why it failed, conflicted or waits
    plan: str | None = None  # the plan submitted, while and after it is reviewed
    plan_approved: bool = False
    feedback: str | None = None  # the reviewer's answer to the plan
    fix_of: int | None = None  # the conflicted task this one integrates
    signal: str | None = None  # blocked | needs-review | done, the member's last signal
    signal_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TeamMessage(SQLModel, table=True):
    """One message to one recipient (a broadcast is a row per recipient), handed over in
    id order. A read leases it (``leased_to`` ``read`` until ``leased_until``) and hands
    it out again once the lease ends unacknowledged; a prompt leases it (``prompt``, no
    end) until its job is made. ``delivered_at`` is set when it was acknowledged (or its
    prompt's job made): from then on no read sees it."""

    __tablename__ = "team_message"
    __table_args__ = (sa.Index("ix_team_message_inbox", "team_id", "recipient", "delivered_at"),)

    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="team.id")
    recipient: str  # "lead" or "task:<id>"
    sender: str  # "person", "lead", "task:<id>" or "daemon"
    body: str
    kind: str = "message"  # message | broadcast | signal | plan | notice
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    leased_to: str | None = None  # read | prompt: who holds it now
    leased_until: datetime | None = Field(default=None, sa_type=UTCDateTime)  # a read's lease


# ---------------------------------------------------------------- API schemas

Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
OwnedPath = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Who = Annotated[str, StringConstraints(pattern=r"^(person|lead|task:[1-9][0-9]{0,17})$")]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str
    goal: str = PydanticField(min_length=1, max_length=100_000)
    lead_agent: str | None = PydanticField(default=None, description="The lead's agent profile")
    lead_command: list[str] | None = PydanticField(
        default=None, min_length=1, description="Run this command as the lead instead"
    )
    budget_usd: float | None = PydanticField(
        default=None, gt=0, le=1_000_000, description="Cost cap over every member's jobs"
    )
    max_parallel: int | None = PydanticField(
        default=None, ge=1, le=1000, description="Members running at once (within the repo's)"
    )


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title
    prompt: str = PydanticField(min_length=1, max_length=1_000_000)
    agent: str | None = None
    command: list[str] | None = PydanticField(default=None, min_length=1)
    blocked_by: list[int] = PydanticField(default_factory=list, max_length=500)
    owns: list[OwnedPath] = PydanticField(default_factory=list, max_length=200)
    requires_plan: bool = False
    repo: str | None = PydanticField(
        default=None, description="Must be the team's repo if given (tasks of others are refused)"
    )

    @field_validator("owns")
    @classmethod
    def _inside(cls, value: list[str]) -> list[str]:
        return [repo_subpath(p) for p in value]


class TaskPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    team_id: int
    title: str
    prompt: str
    agent: str | None
    command: list[str] | None
    blocked_by: list[int]
    owns: list[str]
    requires_plan: bool
    state: TaskState
    job_id: int | None
    attempts: int
    error: str | None
    plan: str | None
    plan_approved: bool
    feedback: str | None
    fix_of: int | None
    signal: str | None
    signal_reason: str | None
    waiting_on: list[int] = PydanticField(default_factory=list)  # blockers not done yet
    cost_usd: float = 0.0  # reported cost of its jobs
    created_at: datetime


class TeamPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    repo: str
    goal: str
    state: TeamState
    branch: str
    base_sha: str
    head: str | None = None  # the integration branch's tip now
    lead_job_id: int | None
    lead_agent: str | None
    budget_usd: float | None
    max_parallel: int | None
    held: str | None
    cost_usd: float = 0.0  # every member's and the lead's reported cost
    tasks: list[TaskPublic] = PydanticField(default_factory=list)
    created_at: datetime


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = PydanticField(min_length=1, max_length=100_000)
    to: Who | Literal["all"] = PydanticField(
        description='"lead", "task:<id>" (a member), or "all" (every task and the lead)'
    )
    sender: Who = PydanticField(default="person", alias="from")


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    team_id: int
    recipient: str
    sender: str
    body: str
    kind: str
    created_at: datetime
    delivered_at: datetime | None = None  # when it was acknowledged (or put in a prompt)
    leased_until: datetime | None = None  # a read handed it out: again after this unless acked


class SignalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signal: Literal["blocked", "needs-review", "done"]
    reason: str = PydanticField(min_length=1, max_length=10_000)


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = PydanticField(min_length=1, max_length=200_000)


class PlanDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approve: bool
    feedback: str = PydanticField(default="", max_length=100_000)
    by: Literal["person", "lead"] = "person"


class TeamAction(BaseModel):
    """Answer of shutdown, retry, approve, merge: the team as it is now and what changed."""

    team: TeamPublic
    changed: bool
    message: str


class TeamMergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: str | None = None  # default: the repo's default branch
    strategy: Literal["merge", "squash", "ff"] = "merge"


def task_public(task: TeamTask, **extra: Any) -> TaskPublic:
    return TaskPublic.model_validate({**task.model_dump(), **extra})

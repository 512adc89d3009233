"""Who is asking (the daemon token or a job token) and what that principal may do.

The MCP server is the one face that takes job tokens (:mod:`dispatcher.jobs.tokens`):
the REST API takes the daemon token only. A request's bearer token becomes a
:class:`Principal` here; each MCP tool asks :class:`Access` before it calls the same
use-case the REST route calls. The daemon token may do everything. A job token
(valid while its job runs with the spawn it was minted for) is scoped
(docs/mcp.md, "Auth and scopes"):

* it sees itself and the jobs it created (its children), and acts (follow up, cancel,
  discard, retry, merge) on its children only. A follow-up or retry of a job is the
  same job to this: its children belong to the first run of the chain (``root_id``),
  so every later run still reaches them;
* it creates jobs in its own repo only, recorded as its children, started by default
  from its own branch (so their merge target is that branch), at most
  ``DISPATCHER_MCP_MAX_CHILDREN`` of them (50);
* it merges a child into its own branch only: never the repo's default branch, nor any
  other job's or team's branch;
* it lists only its own repo, and checks trigger file text; filing issues and
  posting events are the daemon token's.

A team member's token (its job's ``team_id``; the lead's job has no ``task_id``)
reaches its own team (docs/mcp.md, "Team tools"):

* it reads its team and its team's jobs;
* it sends messages as itself (``lead`` or ``task:<its task>``, taken from the
  token, never from the arguments) and reads only its own mailbox;
* a member signals and submits plans for its own task only; only the lead adds
  tasks, changes blockers, decides plans and retries tasks;
* creating, listing, shutting down and merging teams are the daemon token's, and
  another team is out of reach.

:meth:`Access.reach` is the one place that decides how far a principal reaches a
job; :meth:`Access.team` how far it reaches a team.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Literal

from dispatcher.errors import Forbidden, NotFound, Unauthorized
from dispatcher.jobs.tokens import JobTokens
from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store
from dispatcher.store.models import Job, JobCreate, MergeRequest


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the daemon token (``job_id`` None) or one job's token."""

    job_id: int | None = None
    repo_id: int | None = None
    repo: str | None = None  # the job's repo, by name
    branch: str | None = None  # the job's branch: its children's default base
    team_id: int | None = None  # the job's team, when it is a team's lead or member
    task_id: int | None = None  # the member's task (None for the lead)
    root_id: int | None = None  # the first run of its chain of follow-ups and retries

    @property
    def is_admin(self) -> bool:
        return self.job_id is None

    @property
    def is_lead(self) -> bool:
        return self.team_id is not None and self.task_id is None

    @property
    def member(self) -> str | None:
        """Its name in its team's mailboxes: ``lead``, ``task:<id>``, or None."""
        if self.team_id is None:
            return None
        return "lead" if self.task_id is None else f"task:{self.task_id}"

    def __str__(self) -> str:
        return "the daemon token" if self.job_id is None else f"the job token of job {self.job_id}"


ADMIN = Principal()


class TeamReach(enum.IntEnum):
    """How far a principal reaches a team."""

    MEMBER = 1  # show it, message as itself, read its own mailbox, its own task's voice
    LEAD = 2  # and add tasks, change blockers, decide plans, retry tasks
    ADMIN = 3  # and create, list, shut down, merge teams; any mailbox


class Reach(enum.IntEnum):
    """How far a principal reaches a job."""

    NONE = 0  # not at all: the job is outside its scope
    READ = 1  # show, log, diff
    ACT = 2  # and follow up, cancel, discard, retry, merge


class Access:
    """Bearer tokens into principals, and each principal's scope."""

    def __init__(self, store: Store, daemon_token: str | None, *, max_children: int = 50) -> None:
        self.store = store
        self.max_children = max_children
        self._token = daemon_token.encode() if daemon_token else None
        self._jobs = JobTokens(daemon_token) if daemon_token else None

    @staticmethod
    def is_job_token(token: str) -> bool:
        """Whether ``token`` is shaped like a job token (so a REST route can say why it
        refuses it); not a check of the token."""
        return JobTokens.claimed_job(token) is not None

    def principal(self, token: str) -> Principal:
        """The principal of a bearer token; :class:`Unauthorized` (one line, never the
        token) when it is neither the daemon token nor the token of a running job."""
        if self._token is not None and hmac.compare_digest(token.encode(), self._token):
            return ADMIN
        job_id = JobTokens.claimed_job(token)
        if job_id is None or self._jobs is None:
            raise Unauthorized("wrong bearer token")
        try:
            job = self.store.job(job_id)
        except NotFound:
            raise Unauthorized("wrong bearer token") from None
        if not self._jobs.matches(token, job_id, job.spawn_nonce):
            raise Unauthorized("wrong bearer token")
        if job.state is not JobState.RUNNING:
            raise Unauthorized(
                f"the job token of job {job_id} is no longer valid: the job is "
                f"{job.state.value} (a job token is valid only while its job runs)"
            )
        repo = self.store.repo(job.repo_id)
        return Principal(
            job_id=job_id, repo_id=job.repo_id, repo=repo.name, branch=job.branch,
            team_id=job.team_id, task_id=job.task_id, root_id=self._root(job),
        )  # fmt: skip

    def _root(self, job: Job) -> int:
        """The first run of ``job``'s chain: follow-ups and retries walked back (each
        link points at an older, smaller id, so the walk ends)."""
        while (earlier := job.followup_of or job.retry_of) is not None:
            job = self.store.job(earlier)
        assert job.id is not None
        return job.id

    # ------------------------------------------------------------ the seam

    def reach(self, who: Principal, job: Job) -> Reach:
        """How far ``who`` reaches ``job``: the daemon token every job; a job token
        itself and its team's jobs (read) and the jobs it created (act). The one place
        this is decided."""
        if who.is_admin:
            return Reach.ACT
        if job.parent_id is not None and job.parent_id in (who.root_id, who.job_id):
            return Reach.ACT
        if job.id == who.job_id:
            return Reach.READ
        if who.team_id is not None and job.team_id == who.team_id:
            return Reach.READ
        return Reach.NONE

    def listed_parent(self, who: Principal) -> int | None:
        """What a job list shows ``who``: None for everything, else only the jobs with
        this parent (a job token's children, made by any run of its chain)."""
        return who.root_id if who.root_id is not None else who.job_id

    # ------------------------------------------------------------ checks

    def check_job(self, who: Principal, job_id: int, *, act: bool = False) -> None:
        """Refused unless ``who`` may read the job (``act``: act on it): not found, or
        outside the token's scope, one line each. The daemon token reaches every job
        without a read here (the use-case that follows answers an unknown id)."""
        if not who.is_admin:
            self._reached(who, job_id, act=act)

    def _reached(self, who: Principal, job_id: int, *, act: bool) -> Job:
        job = self.store.job(job_id)  # NotFound for an unknown id
        reach = self.reach(who, job)
        if reach >= (Reach.ACT if act else Reach.READ):
            return job
        if reach is Reach.READ:
            raise Forbidden(
                f"{who} may read job {job_id} but not act on it: only on the jobs it created"
            )
        raise Forbidden(
            f"job {job_id} is outside the scope of {who}: it reaches itself, the jobs it "
            "created and its team's jobs"
        )

    def create(self, who: Principal, req: JobCreate) -> tuple[JobCreate, int | None]:
        """The job ``who`` may create for ``req``, and its parent: a job token's child is in
        its own repo, and starts from the parent's branch unless ``base`` says otherwise."""
        if who.is_admin:
            return req, None
        if req.repo != who.repo:
            raise Forbidden(f"{who} may create jobs in its own repo {who.repo!r} only")
        parent = who.root_id if who.root_id is not None else who.job_id
        assert parent is not None
        if self.store.count_children(parent) >= self.max_children:
            raise Forbidden(
                f"{who} has created {self.max_children} jobs, its limit "
                "(DISPATCHER_MCP_MAX_CHILDREN): a person raises it or runs more"
            )
        if req.base is None:
            req = req.model_copy(update={"base": who.branch})
        return req, parent

    def merge(self, who: Principal, job_id: int, req: MergeRequest) -> None:
        """Refused unless ``who`` may act on the job, and, for a job token, the merge
        lands on the token's own branch: never the repo's default branch, nor another
        job's or team's branch (a person merges those)."""
        if who.is_admin:
            return
        job = self._reached(who, job_id, act=True)
        default = self.store.repo(job.repo_id).default_branch
        target = (req.into or job.target_branch).removeprefix("refs/heads/")
        if target == default.removeprefix("refs/heads/"):
            raise Forbidden(
                f"{who} may not merge into {default!r}, the repo's default branch: merge "
                f"into its own branch {who.branch!r} (`into`), and a person merges that"
            )
        if who.branch is None or target != who.branch.removeprefix("refs/heads/"):
            raise Forbidden(
                f"{who} may merge into its own branch {who.branch!r} only, not {target!r}"
            )

    def repo(self, who: Principal, name: str) -> None:
        """Refused unless ``who`` may see the repo ``name`` (the same refusal whether or
        not such a repo exists: a job token learns nothing of other repos)."""
        if not who.is_admin and name != who.repo:
            raise Forbidden(f"{who} reaches its own repo {who.repo!r} only")

    def admin(self, who: Principal, what: str) -> None:
        """Refused unless ``who`` is the daemon token (``what``: the action, for the error)."""
        if not who.is_admin:
            raise Forbidden(f"{who} may not {what}: that takes the daemon token")

    # ------------------------------------------------------------ teams

    def team_reach(self, who: Principal, team_id: int) -> TeamReach | None:
        """How far ``who`` reaches team ``team_id`` (None: not at all)."""
        if who.is_admin:
            return TeamReach.ADMIN
        if who.team_id != team_id:
            return None
        return TeamReach.LEAD if who.is_lead else TeamReach.MEMBER

    def team(self, who: Principal, team_id: int, *, lead: bool = False, what: str = "") -> None:
        """Refused unless ``who`` reaches the team (``lead``: as its lead or the daemon
        token; ``what``: the action, for the error)."""
        reach = self.team_reach(who, team_id)
        if reach is None:
            raise Forbidden(
                f"team {team_id} is outside the scope of {who}: a job token reaches its own "
                "team only"
            )
        if lead and reach < TeamReach.LEAD:
            raise Forbidden(f"{who} may not {what}: only team {team_id}'s lead may")

    def own_team(self, who: Principal, team_id: int | None) -> int:
        """The team a tool acts on: ``team_id``, or (omitted) the job token's own team."""
        if team_id is not None:
            return team_id
        if who.team_id is None:
            raise Forbidden(f"give team_id: {who} is of no team")
        return who.team_id

    def own_task(self, who: Principal, team_id: int, task_id: int, what: str) -> None:
        """Refused unless ``who`` may speak for ``task_id``: the daemon token, or the
        member of that very task (a lead speaks for its own run, not a member's)."""
        self.team(who, team_id)
        if not who.is_admin and who.task_id != task_id:
            raise Forbidden(f"{who} may {what} for its own task only, not task {task_id}")

    def sender(self, who: Principal, team_id: int) -> str:
        """Who a message of ``who`` is from: the token's own name, or ``person``."""
        self.team(who, team_id)
        return who.member or "person"

    def mailbox(self, who: Principal, team_id: int, recipient: str | None) -> str:
        """The mailbox ``who`` reads: a job token its own only; the daemon token the one
        it names (default ``person``)."""
        self.team(who, team_id)
        if who.is_admin:
            return recipient or "person"
        own = who.member
        assert own is not None  # team() let no teamless job token through
        if recipient is not None and recipient != own:
            raise Forbidden(f"{who} reads its own mailbox {own!r} only, not {recipient!r}")
        return own

    def decider(self, who: Principal, team_id: int) -> Literal["person", "lead"]:
        """Who decides a plan: the lead (its token) or a person (the daemon token)."""
        self.team(who, team_id, lead=True, what="approve or reject plans")
        return "person" if who.is_admin else "lead"

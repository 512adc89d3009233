"""Who is asking (the daemon token or a job token) and what that principal may do.

The MCP server is the one face that takes job tokens (:mod:`dispatcher.jobs.tokens`):
the REST API takes the daemon token only. A request's bearer token becomes a
:class:`Principal` here; each MCP tool asks :class:`Access` before it calls the same
use-case the REST route calls. The daemon token may do everything. A job token
(valid while its job runs with the spawn it was minted for) is scoped
(docs/mcp.md, "Auth and scopes"):

* it sees itself and the jobs it created (its children), and acts (follow up, cancel,
  discard, retry, merge) on its children only;
* it creates jobs in its own repo only, recorded as its children, started by default
  from its own branch (so their merge target is that branch);
* it merges a child into any branch but its repo's default branch;
* it lists only its own repo, and checks trigger file text; filing issues and
  posting events are the daemon token's.

:meth:`Access.reach` is the one place that decides how far a principal reaches a
job; a team's jobs widen it (issue 13, "Teams").
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

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

    @property
    def is_admin(self) -> bool:
        return self.job_id is None

    def __str__(self) -> str:
        return "the daemon token" if self.job_id is None else f"the job token of job {self.job_id}"


ADMIN = Principal()


class Reach(enum.IntEnum):
    """How far a principal reaches a job."""

    NONE = 0  # not at all: the job is outside its scope
    READ = 1  # show, log, diff
    ACT = 2  # and follow up, cancel, discard, retry, merge


class Access:
    """Bearer tokens into principals, and each principal's scope."""

    def __init__(self, store: Store, daemon_token: str | None) -> None:
        self.store = store
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
        return Principal(job_id=job_id, repo_id=job.repo_id, repo=repo.name, branch=job.branch)

    # ------------------------------------------------------------ the seam

    def reach(self, who: Principal, job: Job) -> Reach:
        """How far ``who`` reaches ``job``: the daemon token every job; a job token
        itself (read) and the jobs it created (act). The one place this is decided."""
        if who.is_admin:
            return Reach.ACT
        if job.parent_id is not None and job.parent_id == who.job_id:
            return Reach.ACT
        if job.id == who.job_id:
            return Reach.READ
        return Reach.NONE

    def listed_parent(self, who: Principal) -> int | None:
        """What a job list shows ``who``: None for everything, else only the jobs with
        this parent (a job token's children)."""
        return who.job_id

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
            f"job {job_id} is outside the scope of {who}: it reaches itself and the jobs it created"
        )

    def create(self, who: Principal, req: JobCreate) -> tuple[JobCreate, int | None]:
        """The job ``who`` may create for ``req``, and its parent: a job token's child is in
        its own repo, and starts from the parent's branch unless ``base`` says otherwise."""
        if who.is_admin:
            return req, None
        if req.repo != who.repo:
            raise Forbidden(f"{who} may create jobs in its own repo {who.repo!r} only")
        if req.base is None:
            req = req.model_copy(update={"base": who.branch})
        return req, who.job_id

    def merge(self, who: Principal, job_id: int, req: MergeRequest) -> None:
        """Refused unless ``who`` may act on the job, and, for a job token, the merge
        lands anywhere but the repo's default branch."""
        if who.is_admin:
            return
        job = self._reached(who, job_id, act=True)
        default = self.store.repo(job.repo_id).default_branch
        target = (req.into or job.target_branch).removeprefix("refs/heads/")
        if target == default.removeprefix("refs/heads/"):
            raise Forbidden(
                f"{who} may not merge into {default!r}, the repo's default branch: merge "
                "into another branch (`into`), and a person merges that"
            )

    def repo(self, who: Principal, name: str) -> None:
        """Refused unless ``who`` may see the repo ``name``."""
        if not who.is_admin and name != who.repo:
            raise Forbidden(f"{who} reaches its own repo {who.repo!r} only")

    def admin(self, who: Principal, what: str) -> None:
        """Refused unless ``who`` is the daemon token (``what``: the action, for the error)."""
        if not who.is_admin:
            raise Forbidden(f"{who} may not {what}: that takes the daemon token")

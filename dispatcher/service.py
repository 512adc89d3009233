"""Use-cases shared by the API (and so the CLI) and, later, the triggers.

Every way a job is created goes through :meth:`Service.submit`. The service
never moves a job the runner owns (``preparing``/``running``): it asks the
runner to stop it and waits for the runner to record the end.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Protocol

from dispatcher import __version__, agents, git
from dispatcher.config import Settings
from dispatcher.errors import AlreadyExists, DispatcherError, InvalidInput, InvalidState
from dispatcher.lifecycle import ACTIVE, FINISHED, JobState
from dispatcher.merge import land
from dispatcher.models import (
    ActionResult,
    DiffPublic,
    Health,
    Job,
    JobCreate,
    JobPage,
    JobPublic,
    MergeRequest,
    Repo,
    RepoCreate,
    RepoPublic,
    utcnow,
)
from dispatcher.runner import branch_name, job_files
from dispatcher.store import Store

_REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Supervisor(Protocol):
    """What the service needs from the runner (in-process today, a queue later)."""

    def wake(self) -> None: ...
    def cancel(self, job_id: int) -> None: ...
    def join(self, job_id: int, timeout: float) -> None: ...


class Service:
    def __init__(self, settings: Settings, store: Store, supervisor: Supervisor) -> None:
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _job_lock(self, job_id: int) -> threading.Lock:
        """Serializes merge/discard/cancel of one job: a double click has one effect."""
        with self._locks_guard:
            return self._locks.setdefault(job_id, threading.Lock())

    # ------------------------------------------------------------ health

    def health(self) -> Health:
        return Health(version=__version__, jobs_active=self.store.count_active())

    # ------------------------------------------------------------ repos

    def add_repo(self, req: RepoCreate) -> RepoPublic:
        raw = Path(req.path).expanduser()
        if not raw.is_absolute():
            raise InvalidInput(f"repo path must be absolute: {req.path!r}")
        if not raw.exists():
            raise InvalidInput(f"path does not exist: {req.path}")
        top = git.toplevel(raw)
        if git.common_dir(top).resolve().parent != top.resolve():
            raise InvalidInput(f"{top} is a linked worktree; register its main checkout instead")
        state_dir = self.settings.state_dir.resolve()
        if top.resolve().is_relative_to(state_dir):
            raise InvalidInput(f"{top} is inside the dispatcher's state dir; register a repo")
        name = req.name or _default_name(top)
        if not _REPO_NAME_RE.match(name) or ".." in name:
            raise InvalidInput(
                f"invalid repo name {name!r}: use letters, digits, '.', '_' or '-' "
                "(64 characters at most, starting with a letter or digit)"
            )
        if self.store.find_repo(path=str(top)) is not None:
            raise AlreadyExists(f"{top} is already registered")
        if self.store.find_repo(name=name) is not None:
            raise AlreadyExists(f"a repo named {name!r} is already registered; pass --name")
        repo = self.store.add_repo(
            Repo(
                name=name,
                path=str(top),
                default_branch=git.default_branch(top),
                max_parallel=req.max_parallel,
            )
        )
        return self._repo_public(repo)

    def repos(self) -> list[RepoPublic]:
        return [self._repo_public(r) for r in self.store.repos()]

    def repo(self, name: str) -> RepoPublic:
        return self._repo_public(self.store.repo_by_name(name))

    def remove_repo(self, name: str) -> RepoPublic:
        """Unregister a repo: refused while it has active jobs; removes its jobs' worktrees.

        The jobs' branches stay in the repository, so no commit is lost.
        """
        repo = self.store.repo_by_name(name)
        assert repo.id is not None
        public = self._repo_public(repo)
        self.store.remove_repo(repo.id, before_delete=self._remove_worktrees)
        return public

    def _remove_worktrees(self, repo: Repo, jobs: list[Job]) -> None:
        repo_path = Path(repo.path)
        for job in jobs:
            if job.worktree and (repo_path / ".git").exists():
                git.worktree_remove(repo_path, Path(job.worktree))

    def _repo_public(self, repo: Repo) -> RepoPublic:
        assert repo.id is not None
        public = RepoPublic.model_validate(repo)
        public.exists = (Path(repo.path) / ".git").exists()
        public.jobs = self.store.job_counts(repo.id)
        return public

    # ------------------------------------------------------------ jobs

    def submit(self, req: JobCreate, *, retry_of: Job | None = None) -> JobPublic:
        """Validate and queue a job. The one path every job takes."""
        repo = self.store.repo_by_name(req.repo)
        repo_path = Path(repo.path)
        if not (repo_path / ".git").exists():
            raise InvalidInput(f"repo {repo.name!r}: {repo.path} no longer holds a git repository")
        if req.command:
            agents.command_profile(req.command)
            agent = "command"
        else:
            agent = req.agent or self.settings.default_agent
            agents.resolve_profile(agent, self.settings.agents)
        base_ref = req.base or repo.default_branch
        base_sha = git.rev_parse(repo_path, base_ref)
        target = base_ref if git.branch_head(repo_path, base_ref) is not None else None
        timeout_min = req.timeout_minutes or self.settings.default_timeout_minutes
        assert repo.id is not None
        job = Job(
            repo_id=repo.id,
            prompt=req.prompt,
            agent=agent,
            command=req.command,
            base_ref=base_ref,
            base_sha=base_sha,
            target_branch=target or repo.default_branch,
            timeout_s=timeout_min * 60,
            trigger=req.trigger,
            retry_of=retry_of.id if retry_of else None,
            attempt=retry_of.attempt + 1 if retry_of else 1,
        )
        job = self.store.add_job(job, branch_for=lambda jid: branch_name(jid, req.prompt))
        self.supervisor.wake()
        return JobPublic.of(job, repo.name)

    def job(self, job_id: int) -> JobPublic:
        job = self.store.job(job_id)
        return JobPublic.of(job, self.store.repo(job.repo_id).name)

    def jobs(
        self,
        *,
        repo: str | None = None,
        state: JobState | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> JobPage:
        repo_id = self.store.repo_by_name(repo).id if repo else None
        rows = self.store.jobs(repo_id=repo_id, state=state, before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        names = self.store.repo_names([r.repo_id for r in rows])
        items = [JobPublic.of(r, names.get(r.repo_id, "?")) for r in rows]
        return JobPage(items=items, next_before=items[-1].id if more and items else None)

    def log_file(self, job_id: int) -> Path:
        self.store.job(job_id)  # 404 for unknown ids
        return job_files(self.settings, job_id).log

    def job_state(self, job_id: int) -> JobState:
        return self.store.job(job_id).state

    def diff(self, job_id: int) -> DiffPublic:
        job = self.store.job(job_id)
        repo_path = Path(self.store.repo(job.repo_id).path)
        head = (job.branch and git.branch_head(repo_path, job.branch)) or job.head_sha
        if head is None:
            raise InvalidState(f"job {job_id} is {job.state.value} and has no commits yet")
        return DiffPublic(
            job=job_id,
            base=job.base_sha,
            head=head,
            stat=git.diff(repo_path, job.base_sha, head, stat=True),
            patch=git.diff(repo_path, job.base_sha, head),
        )

    # ------------------------------------------------------------ actions

    def cancel(self, job_id: int) -> ActionResult:
        with self._job_lock(job_id):
            job = self.store.job(job_id)
            if job.state is JobState.CANCELED:
                return self._result(job, False, f"job {job_id} is already canceled")
            if job.state not in ACTIVE:
                raise InvalidState(
                    f"job {job_id} already finished ({job.state.value}); nothing to cancel",
                    details={"state": job.state.value},
                )
            job = self._stop(job)
            if job.state is JobState.CANCELED:
                return self._result(job, True, f"job {job_id} canceled")
            if job.state in ACTIVE:
                return self._result(job, True, f"job {job_id}: cancel requested, stopping")
            return self._result(
                job, False, f"job {job_id} finished ({job.state.value}) before it was canceled"
            )

    def discard(self, job_id: int) -> ActionResult:
        with self._job_lock(job_id):
            job = self.store.job(job_id)
            if job.state is JobState.DISCARDED:
                return self._result(job, False, f"job {job_id} is already discarded")
            if job.state is JobState.MERGED:
                raise InvalidState(
                    f"job {job_id} is merged into {job.merged_into}; nothing to discard",
                    details={"state": job.state.value},
                )
            if job.state in ACTIVE:
                job = self._stop(job)
                if job.state in ACTIVE:
                    raise InvalidState(
                        f"job {job_id} did not stop in time; nothing was removed, try again"
                    )
            assert job.id is not None
            repo_path = Path(self.store.repo(job.repo_id).path)
            if job.worktree:
                git.worktree_remove(repo_path, Path(job.worktree))
            if job.branch and (repo_path / ".git").exists():
                git.delete_branch(repo_path, job.branch)
            job = self.store.move(
                job.id, set(FINISHED) | {JobState.QUEUED}, JobState.DISCARDED,
                worktree=None, closed_at=utcnow(),
            )  # fmt: skip
            return self._result(job, True, f"job {job_id} discarded: worktree and branch removed")

    def retry(self, job_id: int) -> ActionResult:
        job = self.store.job(job_id)
        if job.state in ACTIVE:
            raise InvalidState(
                f"job {job_id} is {job.state.value}; cancel it before retrying",
                details={"state": job.state.value},
            )
        existing = self.store.retry_of(job_id)
        if existing is not None:
            return self._result(
                existing, False, f"job {job_id} was already retried as job {existing.id}"
            )
        repo = self.store.repo(job.repo_id)
        new = self.submit(
            JobCreate(
                repo=repo.name,
                prompt=job.prompt,
                agent=None if job.command else job.agent,
                command=job.command,
                base=job.base_ref,
                timeout_minutes=job.timeout_s / 60,
                trigger=job.trigger,
            ),
            retry_of=job,
        )
        return ActionResult(job=new, changed=True, message=f"job {job_id} retried as job {new.id}")

    def merge(self, job_id: int, req: MergeRequest) -> ActionResult:
        with self._job_lock(job_id):
            job = self.store.job(job_id)
            repo = self.store.repo(job.repo_id)
            job, changed, message = land(self.settings, self.store, job, repo, req)
            return self._result(job, changed, message)

    def _stop(self, job: Job) -> Job:
        """Stop an active job: queued ones directly, claimed ones through the runner."""
        job_id = job.id
        assert job_id is not None
        if job.state is JobState.QUEUED:
            try:
                return self.store.move(
                    job_id, JobState.QUEUED, JobState.CANCELED,
                    finished_at=utcnow(), error="canceled on request",
                )  # fmt: skip
            except DispatcherError:
                job = self.store.job(job_id)  # claimed meanwhile: stop it via the runner
                if job.state not in ACTIVE:
                    return job
        self.store.update(job_id, cancel_requested=True)
        self.supervisor.cancel(job_id)
        self.supervisor.join(job_id, timeout=self.settings.kill_grace_seconds + 15)
        return self.store.job(job_id)

    def _result(self, job: Job, changed: bool, message: str) -> ActionResult:
        return ActionResult(
            job=JobPublic.of(job, self.store.repo(job.repo_id).name),
            changed=changed,
            message=message,
        )


def _default_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-.") or "repo"
    return name[:64]

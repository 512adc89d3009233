"""Use-cases shared by the API (and so the CLI) and, later, the triggers.

Every way a job is created goes through :meth:`Service.submit`. The service
never moves a job the runner owns (``preparing``/``running``): it asks the
runner to stop it and waits for the runner to record the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from dispatcher import __version__, faults, notify
from dispatcher.agents import profiles
from dispatcher.config import Settings
from dispatcher.errors import (
    AlreadyExists,
    DispatcherError,
    InvalidInput,
    InvalidState,
    Unauthorized,
)
from dispatcher.events.intake import Intake
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.git import meta, refs, worktrees
from dispatcher.jobs import budget, conventions, workspace
from dispatcher.jobs.merge import land, reconcile, recover
from dispatcher.jobs.pool import WorktreePool, left_out_note, released_ref, save_released
from dispatcher.jobs.runner import branch_name, job_files, note_job, run_cleanup
from dispatcher.jobs.sweeper import worktrees_disk_usage
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import ACTIVE, FINISHED, JobState
from dispatcher.process import logpage
from dispatcher.store.database import AlreadyMade, Store
from dispatcher.store.models import (
    ActionResult,
    Delivery,
    DeliveryPublic,
    DiffPublic,
    EventCreate,
    EventPublic,
    FollowupCreate,
    Health,
    IdempotencyKey,
    IdempotentRequest,
    IngestResult,
    Issue,
    IssueCreate,
    IssuePublic,
    Job,
    JobCreate,
    JobPage,
    JobPublic,
    MergeRequest,
    Repo,
    RepoCreate,
    RepoPublic,
    TriggerStatus,
    start_of_day,
    utcnow,
)
from dispatcher.store.models import Event as EventRow
from triggers.config import Trigger
from triggers.events import Event
from triggers.webhooks import github, gitlab
from triggers.webhooks.remotes import forge_name_of

log = logging.getLogger(__name__)

_REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Supervisor(Protocol):
    """What the service needs from the runner (in-process today, a queue later)."""

    def wake(self) -> None: ...
    def cancel(self, job_id: int) -> None: ...
    def join(self, job_id: int, timeout: float) -> None: ...


class RepoListener(Protocol):
    """Told when repos come and go, and when an event may have changed a repo's
    trigger file (the event sources re-arm their watches and schedules)."""

    def repo_added(self, repo: Repo) -> None: ...
    def repo_removed(self, repo: Repo) -> None: ...


class Service:
    def __init__(self, settings: Settings, store: Store, supervisor: Supervisor) -> None:
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        self.trigger_files = TriggerFiles(store)
        self.intake = Intake(settings, store, self.trigger_files, self)
        self.listener: RepoListener | None = None
        self.pool: WorktreePool | None = None  # set by the daemon when the pool is on
        self.notifier: notify.Notifier | None = None  # set by the daemon
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

    def add_repo(self, req: RepoCreate, *, idem: IdempotencyKey | None = None) -> RepoPublic:
        made = self.store.made_by(idem, "repo")
        if made is not None:  # the daemon stopped before it could answer: that answer
            return self._one_repo_public(self.store.repo(made))
        raw = Path(req.path).expanduser()
        if not raw.is_absolute():
            raise InvalidInput(f"repo path must be absolute: {req.path!r}")
        try:
            exists = raw.exists()
        except (OSError, ValueError) as exc:  # too long, NUL bytes
            raise InvalidInput(f"invalid repo path: {exc}") from None
        if not exists:
            raise InvalidInput(f"path does not exist: {req.path}")
        top = refs.toplevel(raw)
        if refs.common_dir(top).resolve().parent != top.resolve():
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
        forge_name = req.forge_name
        if forge_name is None:
            origin = meta.remote_url(top)
            forge_name = forge_name_of(origin) if origin else None
        try:
            repo = self.store.add_repo(
                Repo(
                    name=name,
                    path=str(top),
                    default_branch=refs.default_branch(top),
                    max_parallel=req.max_parallel,
                    forge_name=forge_name,
                    pool_size=req.pool_size,
                    daily_cost_usd=req.daily_cost_usd,
                ),
                idem=idem,
            )
        except AlreadyMade as made_meanwhile:
            return self._one_repo_public(self.store.repo(made_meanwhile.resource_id))
        self.trigger_files.load(repo)
        if self.listener is not None:
            self.listener.repo_added(repo)
        if self.pool is not None:
            self.pool.fill(repo)
        return self.repo(name)

    def repos(self) -> list[RepoPublic]:
        counts = self.store.job_counts()
        costs = self.store.costs_since(start_of_day())
        return [self._repo_public(r, counts, costs) for r in self.store.repos()]

    def repo(self, name: str) -> RepoPublic:
        return self._one_repo_public(self.store.repo_by_name(name))

    def _one_repo_public(self, repo: Repo) -> RepoPublic:
        assert repo.id is not None
        counts = self.store.job_counts(repo.id)
        return self._repo_public(repo, counts, self.store.costs_since(start_of_day(), repo.id))

    def remove_repo(self, name: str) -> RepoPublic:
        """Unregister a repo: refused while it has active jobs; removes its jobs' worktrees.

        The jobs' branches stay in the repository, so no commit is lost.
        """
        repo = self.store.repo_by_name(name)
        assert repo.id is not None
        public = self._one_repo_public(repo)
        self.store.remove_repo(repo.id, before_delete=self._remove_worktrees)
        self.trigger_files.forget(repo.id)
        if self.pool is not None:
            self.pool.forget(repo)
        if self.listener is not None:
            self.listener.repo_removed(repo)
        return public

    def _remove_worktrees(self, repo: Repo, jobs: list[Job]) -> None:
        repo_path = Path(repo.path)
        for job in jobs:
            if job.worktree and (repo_path / ".git").exists():
                worktrees.remove(repo_path, Path(job.worktree))

    def _repo_public(
        self, repo: Repo, counts: dict[int, dict[str, int]], costs: dict[int, float]
    ) -> RepoPublic:
        """The repo as the API shows it; ``counts`` and ``costs``: per repo id, read
        for all the repos listed at once."""
        assert repo.id is not None
        public = RepoPublic.model_validate(repo)
        public.exists = (Path(repo.path) / ".git").exists()
        public.jobs = counts.get(repo.id, {})
        active = self.trigger_files.active(repo.id)
        public.triggers = [t.name for t in active.trigger_list()] if active else []
        public.worktrees_bytes = worktrees_disk_usage(self.settings, repo.name)
        public.cost_today_usd = round(costs.get(repo.id, 0.0), 6)
        return public

    # ------------------------------------------------------------ jobs

    def submit(
        self,
        req: JobCreate,
        *,
        retry_of: Job | None = None,
        event_id: int | None = None,
        concurrency_group: str | None = None,
        agent_overrides: dict[str, list[str] | str] | None = None,
        trigger: Trigger | None = None,
        followup_of: Job | None = None,
        idem: IdempotencyKey | None = None,
    ) -> JobPublic:
        """Validate and queue a job. The one path every job takes (API, retry, triggers).

        The agent profile is resolved now and stored on the job, so a retry or a
        restart runs exactly what was asked even if settings or the repo's
        trigger file change meanwhile. With ``idem``, the key is written with the
        job, in its transaction; a job the key made already is answered instead.
        """
        made = self.store.made_by(idem, "job")
        if made is not None:  # the daemon stopped before it could answer: that answer
            return self._job_public(made)
        repo = self.store.repo_by_name(req.repo)
        repo_path = Path(repo.path)
        if not (repo_path / ".git").exists():
            raise InvalidInput(f"repo {repo.name!r}: {repo.path} no longer holds a git repository")
        same = retry_of or followup_of  # runs the very profile of the job it repeats
        if same is not None and same.profile is not None:
            profile = profiles.AgentProfile.model_validate(same.profile)
            agent = same.agent
        elif req.command:
            profile = profiles.command_profile(req.command)
            agent = "command"
        else:
            agent = req.agent or self.settings.default_agent
            profile = profiles.resolve_profile(
                agent, {**self.settings.agents, **(agent_overrides or {})}
            )
        assert repo.id is not None
        budget.check_daily(self.settings, self.store, repo)
        target: str | None
        if followup_of is not None:  # same base, branch and worktree as the run it continues
            base_ref, base_sha = followup_of.base_ref, followup_of.base_sha
            target = followup_of.target_branch
        else:
            base_ref = req.base or repo.default_branch
            base_sha = refs.rev_parse(repo_path, base_ref)
            target = base_ref if refs.is_branch(repo_path, base_ref) else None
        if retry_of is not None and retry_of.workspace is not None:
            ws = Workspace.model_validate(retry_of.workspace)
        else:
            ws = workspace.resolve(self.trigger_files.active(repo.id), trigger, skills=req.skills)
        if ws.skills:  # an unknown name is refused now, not when the job runs
            conventions.check_selected(conventions.load(repo_path, base_sha), ws.skills)
        max_cost = req.max_cost_usd or (trigger.max_cost_usd if trigger is not None else None)
        if retry_of is not None and max_cost is None:
            max_cost = retry_of.max_cost_usd
        timeout_min = req.timeout_minutes or self.settings.default_timeout_minutes
        job = Job(
            repo_id=repo.id,
            prompt=req.prompt,
            agent=agent,
            command=req.command,
            profile=profile.model_dump(mode="json"),
            base_ref=base_ref,
            base_sha=base_sha,
            target_branch=target or repo.default_branch,
            timeout_s=timeout_min * 60,
            trigger=req.trigger,
            event_id=event_id,
            concurrency_group=concurrency_group,
            retry_of=retry_of.id if retry_of else None,
            attempt=retry_of.attempt + 1 if retry_of else 1,
            max_attempts=self.settings.max_attempts,
            sparse=req.sparse or (retry_of.sparse if retry_of else None),
            workspace=None if ws.is_empty() else ws.model_dump(mode="json"),
            max_cost_usd=max_cost,
        )
        try:
            if followup_of is not None:
                assert followup_of.id is not None
                job.sparse, job.workspace = followup_of.sparse, followup_of.workspace
                job = self.store.add_followup(followup_of.id, job, idem=idem)
            else:
                job = self.store.add_job(
                    job, branch_for=lambda jid: branch_name(jid, req.prompt), idem=idem
                )
        except AlreadyMade as made_meanwhile:
            return self._job_public(made_meanwhile.resource_id)
        if idem is not None:  # committed with its key; the answer is not stored yet
            faults.reach("idempotency.before-answer")
        self.supervisor.wake()
        return JobPublic.of(job, repo.name)

    def _job_public(self, job_id: int) -> JobPublic:
        job = self.store.job(job_id)
        return JobPublic.of(job, self.store.repo(job.repo_id).name)

    def followup(
        self, job_id: int, req: FollowupCreate, *, idem: IdempotencyKey | None = None
    ) -> ActionResult:
        """Run the agent again in a finished job's worktree and branch with a new prompt,
        resuming its session where the agent can. The new job takes over the worktree;
        the chain of runs is kept (``followup_of`` / ``followed_by``)."""
        made = self.store.made_by(idem, "job")
        if made is not None:
            return ActionResult(
                job=self._job_public(made), changed=True,
                message=f"job {job_id} followed up as job {made}",
            )  # fmt: skip
        with self._job_lock(job_id):
            parent = self.store.job(job_id)
            repo = self.store.repo(parent.repo_id)
            new = self.submit(
                JobCreate(
                    repo=repo.name,
                    prompt=req.prompt,
                    agent=None if parent.command else parent.agent,
                    command=parent.command,
                    timeout_minutes=req.timeout_minutes or parent.timeout_s / 60,
                    trigger=parent.trigger,
                    max_cost_usd=parent.max_cost_usd,
                ),
                followup_of=parent,
                idem=idem,
            )
            return ActionResult(
                job=new, changed=True, message=f"job {job_id} followed up as job {new.id}"
            )

    def runs(self, job_id: int) -> list[JobPublic]:
        """Every run of the job's chain of follow-ups, oldest first."""
        job = self.store.job(job_id)
        while job.followup_of is not None:
            job = self.store.job(job.followup_of)
        chain = [job]
        while chain[-1].followed_by is not None:
            followed_by = chain[-1].followed_by
            assert followed_by is not None
            chain.append(self.store.job(followed_by))
        name = self.store.repo(job.repo_id).name
        return [JobPublic.of(j, name) for j in chain]

    def inbox(self, limit: int) -> list[JobPublic]:
        jobs = self.store.inbox(limit)
        names = self.store.repo_names([j.repo_id for j in jobs])
        return [JobPublic.of(j, names[j.repo_id]) for j in jobs]

    def deliveries(self, job_id: int) -> list[DeliveryPublic]:
        self.store.job(job_id)  # 404 for an unknown job
        return [DeliveryPublic.model_validate(d) for d in self.store.deliveries(job_id)]

    # ------------------------------------------------------------ notifications

    def job_ended(self, job_id: int) -> None:
        """The runner let go of a job: announce how it ended (never raises)."""
        if not self.settings.notify and not self.trigger_files.any_notify():
            return  # nowhere to send anything: not even a read
        try:
            job = self.store.job(job_id)
        except Exception:
            log.exception("job %s: cannot announce it", job_id)
            return
        self.announce(job)

    def announce(self, job: Job, *, state: str | None = None, skip: Iterable[str] = ()) -> None:
        """Queue notifications about ``job``'s state (or ``state``: an earlier one still
        owed), except the deliveries whose message id is in ``skip``; the job owes them
        until they settle.
        Never raises: a merge or discard that worked is not failed by its notice."""
        try:
            self._announce(job, state=state, skip=skip)
        except Exception:
            log.exception("job %s: cannot announce it", job.id)

    def _announce(self, job: Job, *, state: str | None, skip: Iterable[str]) -> None:
        if self.notifier is None or job.id is None:
            return
        state = state or job.state.value
        if JobState(state) in ACTIVE:
            return
        active = self.trigger_files.active(job.repo_id)
        if not self.settings.notify and not (active is not None and active.notify):
            if job.notice_pending is not None:  # owed, but nowhere to send it any more
                self.store.settle_notice(job.id, job.notice_pending)
            return  # nowhere to send it: skip building the notice
        repo = self.store.repo(job.repo_id)
        if job.notice_pending != state:
            self.store.owe_notice(job.id, state)  # settled when every delivery has an outcome
        self.notifier.notify(
            notify.JobNotice(
                job_id=job.id, repo=repo.name, state=state, branch=job.branch,
                prompt=job.prompt, summary=job.summary, error=job.error,
                url=f"{self.settings.api_url}/jobs/{job.id}", cost_usd=job.cost_usd,
                files_changed=job.files_changed, insertions=job.insertions,
                deletions=job.deletions,
            ),
            skip=skip,
        )  # fmt: skip

    def notice_settled(self, notice: notify.JobNotice) -> None:
        """Every delivery of ``notice`` has a final outcome: the job owes it no more."""
        self.store.settle_notice(notice.job_id, notice.state)

    def resume_notices(self) -> int:
        """Send again what a stopped or crashed daemon still owed (a retry waiting, or
        not yet sent), skipping the targets whose outcome is recorded; how many jobs."""
        owed = self.store.jobs_owed_notices()
        for job in owed:
            assert job.id is not None and job.notice_pending is not None
            try:
                done = [
                    d.message_id
                    for d in self.store.deliveries(job.id)
                    if d.state == job.notice_pending and d.message_id
                ]
            except Exception:
                log.exception("job %s: cannot read its deliveries", job.id)
                continue
            log.info("job %s: sending the %s notifications still owed", job.id, job.notice_pending)
            self.announce(job, state=job.notice_pending, skip=done)
        return len(owed)

    def notify_targets(self, notice: notify.JobNotice) -> list[notify.Target]:
        """The daemon's ``notify`` setting plus the repo's trigger file ``notify:``."""
        entries: list[Mapping[str, object]] = list(self.settings.notify)
        repo = self.store.find_repo(name=notice.repo)
        active = self.trigger_files.active(repo.id) if repo and repo.id else None
        if active is not None:
            entries += [n.model_dump(exclude_defaults=True) for n in active.notify]
        targets: list[notify.Target] = []
        for entry in entries:
            try:
                targets.append(notify.validate_target(entry))
            except DispatcherError as exc:
                log.warning("repo %s: notify entry skipped: %s", notice.repo, exc.message)
        return targets

    def record_delivery(self, d: notify.Delivery) -> None:
        self.store.add_delivery(
            Delivery(
                job_id=d.job_id, target=d.target, url=d.url, state=d.state, ok=d.ok,
                attempts=d.attempts, status_code=d.status_code, error=d.error, at=d.at,
                message_id=d.message_id,
            )
        )  # fmt: skip

    @staticmethod
    def _continued(job: Job) -> None:
        if job.followed_by is not None:
            raise InvalidState(
                f"job {job.id} was continued by follow-up job {job.followed_by}, which holds "
                f"its worktree and branch now; act on job {job.followed_by}"
            )

    def cancel_in_background(self, job_id: int) -> None:
        """Cancel without waiting (a concurrency group replacing an older job)."""
        threading.Thread(target=self._cancel_quietly, args=(job_id,), daemon=True).start()

    def _cancel_quietly(self, job_id: int) -> None:
        try:
            self.cancel(job_id)
        except DispatcherError as exc:
            log.info("job %s: not canceled: %s", job_id, exc.message)

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

    def log_page(
        self,
        job_id: int,
        *,
        offset: int | None = None,
        tail: int | None = None,
        limit: int | None = None,
        file_id: int | None = None,
    ) -> logpage.LogPage:
        """One bounded page of the job's ``agent.log`` (see :mod:`dispatcher.process.logpage`):
        from ``offset`` (default 0) or its last ``tail`` bytes; ``limit`` defaults to
        ``tail``, else :data:`logpage.DEFAULT_LIMIT`. ``file_id``: the file the offset
        is in (an earlier page's); another file (rotated since) is read from 0."""
        path = self.log_file(job_id)
        _one_start(offset, tail)
        size = limit or tail or logpage.DEFAULT_LIMIT
        return logpage.read_page(path, offset=offset or 0, tail=tail, limit=size, file_id=file_id)

    def log_start(self, job_id: int, *, offset: int | None = None, tail: int | None = None) -> int:
        """Where following the job's log begins: ``offset``, or its last ``tail`` bytes."""
        path = self.log_file(job_id)
        _one_start(offset, tail)
        if tail is None:
            return offset or 0
        return logpage.read_page(path, tail=tail, limit=1).start

    def job_state(self, job_id: int) -> JobState:
        return self.store.job(job_id).state

    def diff(self, job_id: int) -> DiffPublic:
        job = self.store.job(job_id)
        repo_path = Path(self.store.repo(job.repo_id).path)
        head = (job.branch and refs.branch_head(repo_path, job.branch)) or job.head_sha
        if head is None:
            raise InvalidState(f"job {job_id} is {job.state.value} and has no commits yet")
        return DiffPublic(
            job=job_id,
            base=job.base_sha,
            head=head,
            stat=refs.diff(repo_path, job.base_sha, head, stat=True),
            patch=refs.diff(repo_path, job.base_sha, head),
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
            self._continued(job)
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
            repo = self.store.repo(job.repo_id)
            repo_path = Path(repo.path)
            if job.worktree:
                self._drop_worktree(repo, job.id, Path(job.worktree))
            if job.branch and (repo_path / ".git").exists():
                worktrees.delete_branch(repo_path, job.branch)
            job = self.store.move(
                job.id, set(FINISHED) | {JobState.QUEUED}, JobState.DISCARDED,
                worktree=None, closed_at=utcnow(),
            )  # fmt: skip
            self.announce(job)
            return self._result(job, True, f"job {job_id} discarded: worktree and branch removed")

    def retry(self, job_id: int, *, idem: IdempotencyKey | None = None) -> ActionResult:
        made = self.store.made_by(idem, "job")
        if made is not None:
            return ActionResult(
                job=self._job_public(made), changed=True,
                message=f"job {job_id} retried as job {made}",
            )  # fmt: skip
        job = self.store.job(job_id)
        if job.state in ACTIVE:
            raise InvalidState(
                f"job {job_id} is {job.state.value}; cancel it before retrying",
                details={"state": job.state.value},
            )
        self._continued(job)
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
            idem=idem,
        )
        return ActionResult(job=new, changed=True, message=f"job {job_id} retried as job {new.id}")

    def merge(self, job_id: int, req: MergeRequest) -> ActionResult:
        with self._job_lock(job_id):
            job = self.store.job(job_id)
            self._continued(job)
            repo = self.store.repo(job.repo_id)
            assert job.id is not None
            job_id_ = job.id
            job, changed, message = land(
                self.settings, self.store, job, repo, req,
                drop=lambda path: self._drop_worktree(repo, job_id_, path),
            )  # fmt: skip
            if changed and job.state is JobState.MERGED:
                self.announce(job)
            return self._result(job, changed, message)

    def recover_merges(self) -> None:
        """At start-up, before any job runs or merge is accepted: finish or undo the
        merges a crashed daemon left under way, then mark merged the finished jobs
        whose work their target already holds. Each job newly merged gives up its
        worktree and is announced. Never raises."""
        try:
            jobs = recover(self.settings, self.store) + reconcile(self.store)
        except Exception:
            log.exception("recovering merges failed")
            return
        for job in jobs:
            assert job.id is not None
            try:
                if job.worktree:
                    repo = self.store.repo(job.repo_id)
                    self._drop_worktree(repo, job.id, Path(job.worktree))
                    job = self.store.update(job.id, worktree=None)
            except Exception:
                log.exception("job %s: cleanup after a recovered merge failed", job.id)
            self.announce(job)

    def _drop_worktree(self, repo: Repo, job_id: int, worktree: Path) -> None:
        """A job is done with its worktree: back to the warm pool, or removed.

        Either way its uncommitted edits are saved to ``refs/dispatcher/released/<id>``.
        """
        ws = Workspace.model_validate(self.store.job(job_id).workspace or {})
        checkouts = [Path(r.path) for r in self.store.repos()]
        run_cleanup(self.settings, job_id, ws, worktree, checkouts=checkouts)
        limit = ws.max_leftover_bytes(self.settings.max_leftover_file_mb)
        saved = None
        repo_path = Path(repo.path)
        if self.pool is not None and (repo_path / ".git").exists():
            saved = self.pool.release(
                repo, worktree, job_id=job_id, exclude=ws.never_commit(), max_file_bytes=limit
            )
        else:
            if worktree.is_dir() and worktrees.is_valid(worktree, repo_path):
                saved = save_released(self.settings, worktree, job_id, ws.never_commit(), limit)
            worktrees.remove(repo_path, worktree)
        note = left_out_note(released_ref(job_id), saved) if saved else ""
        if note:
            note_job(self.settings, job_id, note)

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

    # ------------------------------------------------------------ idempotency

    def idempotency_key(
        self, key: str, method: str, path: str, request_hash: str
    ) -> IdempotencyKey:
        """A request's key, with when its stored answers expire from now."""
        ttl = timedelta(hours=self.settings.idempotency_hours)
        return IdempotencyKey(key, method, path, request_hash, not_before=utcnow() - ttl)

    def idempotent_get(self, idem: IdempotencyKey) -> IdempotentRequest | None:
        return self.store.idempotent_get(idem)

    def idempotent_answer(
        self, idem: IdempotencyKey, status: int, body: bytes, content_type: str
    ) -> None:
        self.store.idempotent_answer(idem, status, body, content_type)

    # ------------------------------------------------------------ events and triggers

    def ingest(self, event: Event) -> IngestResult:
        """The one submit path for events (sources, webhooks, ``POST /events``, inbox)."""
        return self.intake.ingest(event)

    def post_event(self, req: EventCreate, *, idem: IdempotencyKey | None = None) -> IngestResult:
        made = self.store.made_by(idem, "event")
        if made is not None:  # the daemon stopped before it could answer: that answer
            return self._ingested(made)
        repo = self.store.repo_by_name(req.repo)
        data = req.model_dump(exclude={"dedup_key"})
        key = req.dedup_key or f"generated-{uuid.uuid4().hex}"
        event = Event(source="api", dedup_key=f"api:{repo.name}:{key}", **data)
        try:
            return self.intake.ingest(event, repo, idem=idem)
        except AlreadyMade as made_meanwhile:
            return self._ingested(made_meanwhile.resource_id)

    def _ingested(self, event_id: int) -> IngestResult:
        """What became of a stored event, as it is now (its triggers may still run)."""
        row = self.store.event(event_id)
        active = self.trigger_files.active(row.repo_id)
        checks = {t.name for t in active.trigger_list() if t.check} if active else set()
        return IngestResult(
            event_id=event_id,
            matched=list(row.matched),
            jobs=self.store.job_ids_for_events([event_id]).get(event_id, []),
            pending_checks=[n for n in row.matched if n in checks],
            notes=list(row.notes),
        )

    def events(
        self, *, repo: str | None = None, before: int | None = None, limit: int = 50
    ) -> list[EventPublic]:
        repo_id = self.store.repo_by_name(repo).id if repo else None
        rows = self.store.events(repo_id=repo_id, before=before, limit=limit)
        return self._events_public(rows)

    def event(self, event_id: int) -> EventPublic:
        return self._events_public([self.store.event(event_id)])[0]

    def _events_public(self, rows: list[EventRow]) -> list[EventPublic]:
        names = self.store.repo_names([r.repo_id for r in rows])
        jobs = self.store.job_ids_for_events([r.id for r in rows if r.id is not None])
        out = []
        for row in rows:
            assert row.id is not None
            out.append(
                EventPublic(
                    **row.model_dump(exclude={"repo_id", "facts"}),
                    repo=names.get(row.repo_id, "?"),
                    jobs=jobs.get(row.id, []),
                )
            )
        return out

    def receive_webhook(self, forge: str, headers: Mapping[str, str], body: bytes) -> IngestResult:
        """Verify a forge delivery over its raw body, then ingest it.

        Nothing is stored unless the signature (GitHub: X-Hub-Signature-256;
        GitLab: X-Gitlab-Token) verifies with the secret from the settings
        (a per-repo override from ``webhook_secrets`` first).
        """
        module = github if forge == "github" else gitlab
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # checked below, after the
            payload = None  # signature: an unverified body is never trusted or stored
        forge_repo = module.forge_repo(payload) if isinstance(payload, dict) else None
        repos = self.store.repos_by_forge_name(forge_repo) if forge_repo else []
        default = (
            self.settings.github_webhook_secret
            if forge == "github"
            else self.settings.gitlab_webhook_token
        )
        secrets = [self.settings.webhook_secrets.get(r.name) for r in repos]
        candidates = [x for x in [*secrets, default] if x]
        if not candidates:
            raise Unauthorized(f"no {forge} webhook secret is configured; the delivery is refused")
        if forge == "github":
            ok = any(github.verify(body, headers, secret) for secret in candidates)
        else:
            ok = any(gitlab.verify(headers, secret) for secret in candidates)
        if not ok:
            raise Unauthorized(f"bad or missing {forge} webhook signature")
        if not isinstance(payload, dict):
            raise InvalidInput("webhook body is not a JSON object")
        name = module.event_name(headers)
        if not name:
            raise InvalidInput(f"missing {forge} event header")
        delivery = module.delivery_id(headers) or hashlib.sha256(body).hexdigest()
        if forge == "github":
            event = github.normalize(name, delivery, payload, source=github.source_of(headers))
        else:
            event = gitlab.normalize(name, delivery, payload)
        if event is None:
            log.info("webhook: ignored %s event %r", forge, name)
            return IngestResult(event_id=None, ignored=f"{forge} event {name!r} is not handled")
        if not repos:
            log.info("webhook: no registered repo for %r", forge_repo)
            return IngestResult(event_id=None, ignored=f"no registered repo for {forge_repo!r}")
        result = IngestResult(event_id=None)
        for repo in repos:  # two clones of one forge repo: each gets its own event
            keyed = event.model_copy(update={"dedup_key": f"{event.dedup_key}:{repo.name}"})
            one = self.intake.ingest(keyed, repo)
            result.event_id = result.event_id or one.event_id
            result.duplicate = one.duplicate
            result.matched += one.matched
            result.jobs += one.jobs
            result.pending_checks += one.pending_checks
            result.notes += one.notes
        return result

    def file_issue(
        self, repo_name: str, req: IssueCreate, *, idem: IdempotencyKey | None = None
    ) -> IssuePublic:
        """The local issue inbox: keep the issue, and emit ``issues`` ``opened``."""
        repo = self.store.repo_by_name(repo_name)
        assert repo.id is not None
        issue = self._add_issue(repo.id, req, idem)
        assert issue.id is not None
        if issue.event_id is None:  # its event, once (its dedup key is the issue's)
            self._issue_opened(repo, issue)
        return self._issue_public(repo, self.store.issue(issue.id))

    def _add_issue(self, repo_id: int, req: IssueCreate, idem: IdempotencyKey | None) -> Issue:
        """The new issue, or the one ``idem`` made already (the daemon stopped before it
        could answer)."""
        made = self.store.made_by(idem, "issue")
        if made is not None:
            return self.store.issue(made)
        new = Issue(repo_id=repo_id, number=0, title=req.title, body=req.body, labels=req.labels)
        try:
            return self.store.add_issue(new, idem=idem)
        except AlreadyMade as made_meanwhile:
            return self.store.issue(made_meanwhile.resource_id)

    def _issue_opened(self, repo: Repo, issue: Issue) -> None:
        """Emit the issue's ``issues`` ``opened`` event and link it to the issue."""
        assert issue.id is not None
        event = Event(
            kind="issues",
            action="opened",
            source="local",
            dedup_key=f"local:{repo.name}:issue:{issue.number}:opened",
            repo=repo.name,
            payload={
                "action": "opened",
                "issue": {
                    "number": issue.number,
                    "title": issue.title,
                    "body": issue.body,
                    "labels": [{"name": label} for label in issue.labels],
                    "user": {"login": "local"},
                    "state": "open",
                },
                "repository": {"name": repo.name, "full_name": repo.forge_name or repo.name},
                "sender": {"login": "local"},
            },
            labels=list(issue.labels),
            author="local",
            text=f"{issue.title}\n{issue.body}",
        )
        result = self.intake.ingest(event, repo)
        if result.event_id is not None:
            self.store.set_issue_event(issue.id, result.event_id)

    def issues(self, repo_name: str) -> list[IssuePublic]:
        repo = self.store.repo_by_name(repo_name)
        assert repo.id is not None
        return [self._issue_public(repo, i) for i in self.store.issues(repo.id)]

    def _issue_public(self, repo: Repo, issue: Issue) -> IssuePublic:
        jobs: list[int] = []
        if issue.event_id is not None:
            jobs = self.store.job_ids_for_events([issue.event_id]).get(issue.event_id, [])
        return IssuePublic(**issue.model_dump(exclude={"id", "repo_id"}), repo=repo.name, jobs=jobs)

    def trigger_status(self) -> list[TriggerStatus]:
        out = []
        for repo in self.store.repos():
            assert repo.id is not None
            active = self.trigger_files.active(repo.id)
            triggers = [
                {"name": t.name, "on": sorted(t.kinds()), "agent": t.agent}
                for t in (active.trigger_list() if active else [])
            ]
            out.append(
                TriggerStatus(
                    repo=repo.name,
                    triggers=triggers,
                    error=repo.triggers_error,
                    loaded_at=repo.triggers_loaded_at,
                )
            )
        return out


def _default_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-.") or "repo"
    return name[:64]


def _one_start(offset: int | None, tail: int | None) -> None:
    if offset is not None and tail is not None:
        raise InvalidInput("give offset or tail, not both")

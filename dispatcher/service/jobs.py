"""Jobs: submit (the one path every job takes), follow up, retry; list and show them.

The agent profile, the base commit and the workspace are resolved when a job
is submitted and stored on it, so a retry or a restart runs exactly what was
asked even if settings or the repo's trigger file change meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dispatcher import faults
from dispatcher.agents import profiles, spec
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidInput, InvalidState
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.git import refs
from dispatcher.jobs import budget, conventions, workspace
from dispatcher.jobs.files import note_job
from dispatcher.jobs.naming import branch_name
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import ACTIVE, JobState
from dispatcher.service.control import Control, Supervisor, action_result, refuse_continued
from dispatcher.service.fetches import Fetches
from dispatcher.store.database import AlreadyMade, Store
from dispatcher.store.models import (
    ActionResult,
    FollowupCreate,
    IdempotencyKey,
    Job,
    JobCreate,
    JobPage,
    JobPublic,
    utcnow,
)
from triggers.config import Trigger

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Jobs:
    """Jobs made (submitted, followed up, retried) and read; the intake's submitter."""

    settings: Settings
    store: Store
    supervisor: Supervisor
    trigger_files: TriggerFiles
    control: Control  # its lock per job, and the cancel of a replaced job
    # A team's job's waiting messages as a prompt section, and what marks them delivered
    # (set by the composition root to Teams.for_followup; None: no teams).
    team_messages: Callable[[Job], tuple[str, Callable[[bool], None]]] | None = None
    # A `fetch: true` repo's fetch before a job's base is resolved (None: never fetch).
    fetches: Fetches | None = None
    # A job's chain's fix follow-ups run and fix deliveries queued (set by the composition
    # root to FixLoop.counts; None: not shown).
    fix_counts: Callable[[Job], tuple[int, int]] | None = None

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
        team: tuple[int, int | None] | None = None,
        parent_id: int | None = None,
        rebased_onto: str | None = None,
        on_success: dict[str, object] | None = None,
        fetch_asked: float | None = None,
    ) -> JobPublic:
        """Validate and queue a job. The one path every job takes (API, retry, triggers).

        With ``idem``, the key is written with the job, in its transaction; a job
        the key made already is answered instead. ``team``: the team and task (None:
        its lead) the job works for, stored with it (a follow-up keeps its parent's).
        ``parent_id``: the job whose agent
        asks for this one (MCP, :mod:`.access`); a retry or follow-up keeps its job's.
        ``rebased_onto``: a follow-up that resolves a rebase's conflicts starts from that
        commit (:mod:`.rebase`).
        ``on_success``: what it does when it succeeds (a fix follow-up's push), instead
        of its trigger's.
        ``fetch_asked``: when the request arrived (:meth:`.Fetches.now`): a ``fetch: true``
        fetch since then is shared, not run again (the intake fetched before its lock).
        """
        made = self.store.made_by(idem, "job")
        if made is not None:  # the daemon stopped before it could answer: that answer
            return self.get(made)
        repo = self.store.repo_by_name(req.repo)
        repo_path = Path(repo.path)
        if not (repo_path / ".git").exists():
            raise InvalidInput(f"repo {repo.name!r}: {repo.path} no longer holds a git repository")
        same = retry_of or followup_of  # runs the very profile of the job it repeats
        if same is not None and same.profile is not None:
            profile = spec.AgentProfile.model_validate(same.profile)
            agent = same.agent
        elif req.command:
            profile = profiles.command_profile(req.command)
            agent = "command"
        else:
            assert repo.id is not None
            if agent_overrides is None:  # not from a trigger: the repo's file still applies
                active = self.trigger_files.active(repo.id)
                agent_overrides = dict(active.agents or {}) if active is not None else {}
            agent = req.agent or self.settings.default_agent
            profile = profiles.resolve_profile(agent, {**self.settings.agents, **agent_overrides})
        assert repo.id is not None
        budget.check_daily(self.settings, self.store, repo)
        target: str | None
        fetched: str | None = None  # a line for the job's log about the fetch
        if followup_of is not None:  # same base, branch and worktree as the run it continues
            base_ref, base_sha = followup_of.base_ref, rebased_onto or followup_of.base_sha
            target = followup_of.target_branch
        else:
            base_ref = req.base or repo.default_branch
            if self.fetches is not None:
                base_sha, fetched = self.fetches.base(repo, base_ref, fetch_asked)
            else:
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
            parent_id=same.parent_id if same is not None else parent_id,
            on_success=on_success or self._on_success(repo.id, trigger, same),
        )
        if followup_of is not None and team is None and followup_of.team_id is not None:
            team = (followup_of.team_id, followup_of.task_id)
        if team is not None:
            job.team_id, job.task_id = team
        try:
            if followup_of is not None:
                assert followup_of.id is not None
                job.sparse, job.workspace = followup_of.sparse, followup_of.workspace
                # The same branch: its remote and pull request are the follow-up's too.
                job.pushed_remote, job.pushed_sha = (
                    followup_of.pushed_remote,
                    followup_of.pushed_sha,
                )
                job.pushed_at = followup_of.pushed_at
                job.pr_url, job.pr_number = followup_of.pr_url, followup_of.pr_number
                job.pr_state = followup_of.pr_state
                job.rebased_onto = rebased_onto or followup_of.rebased_onto
                job.rebased_at = utcnow() if rebased_onto else followup_of.rebased_at
                # It runs in its parent's worktree: on the node that has it.
                if self.control.peers is not None:
                    job.node = self.control.peers.node_of(followup_of)
                job = self.store.add_followup(followup_of.id, job, idem=idem)
            else:
                job = self.store.add_job(
                    job, branch_for=lambda jid: branch_name(jid, req.prompt), idem=idem
                )
        except AlreadyMade as made_meanwhile:
            return self.get(made_meanwhile.resource_id)
        if fetched is not None:
            assert job.id is not None
            note_job(self.settings, job.id, fetched)
        if idem is not None:  # committed with its key; the answer is not stored yet
            faults.reach("idempotency.before-answer")
        self.supervisor.wake()
        return JobPublic.of(job, repo.name)

    def _on_success(
        self, repo_id: int, trigger: Trigger | None, same: Job | None
    ) -> dict[str, object] | None:
        """What the job does when it succeeds with commits (docs/forge.md): its trigger's
        on-success (else the file's defaults'); a retry or follow-up keeps its job's."""
        if same is not None:
            return same.on_success
        active = self.trigger_files.active(repo_id) if trigger is not None else None
        if trigger is None or active is None:
            return None
        return active.on_success_for(trigger)

    def followup(
        self,
        job_id: int,
        req: FollowupCreate,
        *,
        idem: IdempotencyKey | None = None,
        team_messages: bool = True,
        rebased_onto: str | None = None,
        on_success: dict[str, object] | None = None,
    ) -> ActionResult:
        """Run the agent again in a finished job's worktree and branch with a new prompt,
        resuming its session where the agent can. The new job takes over the worktree;
        the chain of runs is kept (``followup_of`` / ``followed_by``). A team's lead's or
        member's job gets the messages waiting for it after the prompt (``team_messages``
        False: the caller put them in already), delivered once the new job is made.
        ``rebased_onto``: see :meth:`submit`."""
        made = self._made_already(idem, job_id, "followed up")
        if made is not None:
            return made
        with self.control.lock(job_id):
            return self.followup_locked(
                job_id, req, idem=idem, team_messages=team_messages, rebased_onto=rebased_onto,
                on_success=on_success,
            )  # fmt: skip

    def followup_locked(
        self,
        job_id: int,
        req: FollowupCreate,
        *,
        idem: IdempotencyKey | None = None,
        team_messages: bool = True,
        rebased_onto: str | None = None,
        on_success: dict[str, object] | None = None,
    ) -> ActionResult:
        """:meth:`followup` for a caller that holds the job's lock already (a rebase
        makes its conflict's follow-up under the lock it started the merge under)."""
        parent = self.store.job(job_id)
        prompt, settle = req.prompt, _NOTHING
        if team_messages and parent.team_id is not None and self.team_messages is not None:
            waiting, settle = self.team_messages(parent)
            prompt += f"\n\n{waiting}" if waiting else ""
        try:
            again = self._again(
                parent,
                prompt=prompt,
                timeout_minutes=req.timeout_minutes or parent.timeout_s / 60,
                max_cost_usd=parent.max_cost_usd,
            )
            new = self.submit(
                again, followup_of=parent, idem=idem, rebased_onto=rebased_onto,
                on_success=on_success,
            )  # fmt: skip
        except BaseException:
            settle(False)  # not in any prompt: reads have them again
            raise
        faults.reach("jobs.followup-made")  # the job is made; its messages not confirmed
        settle(True)  # in the new run's prompt now (a restart that finds it confirms)
        return _run_again(job_id, "followed up", new)

    def runs(self, job_id: int) -> list[JobPublic]:
        """Every run of the job's chain of follow-ups, oldest first."""
        chain = self.store.chain(job_id)
        name = self.store.repo(chain[0].repo_id).name
        return [JobPublic.of(j, name) for j in chain]

    def retry(self, job_id: int, *, idem: IdempotencyKey | None = None) -> ActionResult:
        made = self._made_already(idem, job_id, "retried")
        if made is not None:
            return made
        job = self.store.job(job_id)
        if job.state in ACTIVE:
            raise InvalidState(
                f"job {job_id} is {job.state.value}; cancel it before retrying",
                details={"state": job.state.value},
            )
        refuse_continued(job)
        existing = self.store.retry_of(job_id)
        if existing is not None:
            return action_result(
                self.store, existing, False,
                f"job {job_id} was already retried as job {existing.id}",
            )  # fmt: skip
        again = self._again(
            job, prompt=job.prompt, timeout_minutes=job.timeout_s / 60, base=job.base_ref
        )
        return _run_again(job_id, "retried", self.submit(again, retry_of=job, idem=idem))

    def _made_already(
        self, idem: IdempotencyKey | None, job_id: int, how: str
    ) -> ActionResult | None:
        """The answer to a request whose new run ``idem`` made already (the daemon
        stopped before it could answer), if it did."""
        made = self.store.made_by(idem, "job")
        return None if made is None else _run_again(job_id, how, self.get(made))

    def _again(
        self,
        job: Job,
        *,
        prompt: str,
        timeout_minutes: float,
        base: str | None = None,
        max_cost_usd: float | None = None,
    ) -> JobCreate:
        """The request that runs ``job``'s agent (or command) again, for its trigger."""
        return JobCreate(
            repo=self.store.repo(job.repo_id).name,
            prompt=prompt,
            agent=None if job.command else job.agent,
            command=job.command,
            base=base,
            timeout_minutes=timeout_minutes,
            trigger=job.trigger,
            max_cost_usd=max_cost_usd,
        )

    def get(self, job_id: int) -> JobPublic:
        job = self.store.job(job_id)
        shown = JobPublic.of(job, self.store.repo(job.repo_id).name)
        if self.fix_counts is not None and job.pushed_remote:
            shown.fix_attempts, shown.fixes_queued = self.fix_counts(job)
        return shown

    def page(
        self,
        *,
        repo: str | None = None,
        state: JobState | None = None,
        before: int | None = None,
        limit: int = 50,
        parent: int | None = None,
    ) -> JobPage:
        repo_id = self.store.repo_by_name(repo).id if repo else None
        rows = self.store.jobs(
            repo_id=repo_id, state=state, before=before, limit=limit + 1, parent_id=parent
        )
        more = len(rows) > limit
        rows = rows[:limit]
        names = self.store.repo_names([r.repo_id for r in rows])
        items = [JobPublic.of(r, names.get(r.repo_id, "?")) for r in rows]
        return JobPage(items=items, next_before=items[-1].id if more and items else None)

    def inbox(self, limit: int, *, parent: int | None = None) -> list[JobPublic]:
        """Jobs with commits that await review (merge or discard), newest first: succeeded,
        failed or timed out; ``parent``: only those that job created."""
        jobs = self.store.inbox(limit, parent_id=parent)
        names = self.store.repo_names([j.repo_id for j in jobs])
        return [JobPublic.of(j, names[j.repo_id]) for j in jobs]

    def cancel_in_background(self, job_id: int) -> None:
        """Cancel without waiting (a concurrency group replacing an older job)."""
        threading.Thread(target=self._cancel_quietly, args=(job_id,), daemon=True).start()

    def _cancel_quietly(self, job_id: int) -> None:
        try:
            self.control.cancel(job_id)
        except DispatcherError as exc:
            log.info("job %s: not canceled: %s", job_id, exc.message)


def _nothing(made: bool) -> None:
    """No messages to settle."""


_NOTHING: Callable[[bool], None] = _nothing


def _run_again(job_id: int, how: str, new: JobPublic) -> ActionResult:
    """``job_id`` ran again (``how``: retried, followed up) as the job ``new``."""
    return ActionResult(job=new, changed=True, message=f"job {job_id} {how} as job {new.id}")

"""Fix loops: what forge deliveries about a job's pull request do to the job (docs/forge.md).

A delivery's :class:`~triggers.webhooks.prfacts.PrFact` about the pull request of a
job (found by its number, its head branch or its last pushed commit) is recorded as a
:class:`~dispatcher.store.models.PrAction`, keyed by the delivery, before anything is
done: one delivery acts once, and a stopped or killed daemon goes on with it at the
next start (:meth:`FixLoop.resume`). Then, one action at a time per chain of
follow-ups, on a thread of the loop's own:

* ``merged`` / ``closed``: the chain's newest job is marked merged (on the forge) or
  discarded, its worktree released as a local merge or discard does; a run still going
  is stopped first; the fixes still queued are dropped. A close discards only a branch
  at its last push: one with commits the forge never got is kept, job and all.
* a fix (CI failed, changes requested, a fix command): a follow-up of the chain's newest
  job with a prompt that quotes what the forge said, then (``on-success``) a push of
  the branch. While that job (or any run of the chain) is active the action waits,
  queued in the database. Past the bound (``max-fix-attempts``) the pull request is
  labelled, a person notified, and the action is ``gave_up``.

A follow-up is made with an idempotency key of its action, in the job's own
transaction: an action found half-done after a crash makes no second one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dispatcher import faults
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, RefMoved
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.jobs.files import note_job
from dispatcher.lifecycle import ACTIVE, CLOSED, JobState
from dispatcher.notify.notices import FIX_GAVE_UP, JobNotice
from dispatcher.service import fixprompt
from dispatcher.service.control import Control
from dispatcher.service.forge import Forges
from dispatcher.service.jobs import Jobs
from dispatcher.service.notices import Notices
from dispatcher.store.database import Store
from dispatcher.store.models import (
    FollowupCreate,
    IdempotencyKey,
    Job,
    PrAction,
    PrActionPublic,
    PushRequest,
    Repo,
)
from dispatcher.store.pr_actions import PrActionStore
from triggers.webhooks.prfacts import PrFact, ReviewComment

log = logging.getLogger(__name__)

_CLOSING = ("merged", "closed")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _names_job(fact: PrFact, job: Job) -> bool:
    """A merged or closed PR is the job's only by the number it recorded or the commit
    it pushed, never by its (public) branch name alone."""
    by_number = fact.number is not None and job.pr_number == fact.number
    return by_number or (fact.head_sha is not None and fact.head_sha == job.pushed_sha)


@dataclass(eq=False)
class FixLoop:
    """Pull request deliveries into job moves and fix follow-ups, one at a time per chain."""

    settings: Settings
    store: Store
    trigger_files: TriggerFiles
    jobs: Jobs
    control: Control
    forges: Forges
    notices: Notices
    rows: PrActionStore = field(init=False)
    _locks: dict[int, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _pool: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rows = PrActionStore(self.store)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fixloop")

    def close(self) -> None:
        """Stop taking work (what is queued stays queued in the database)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ deliveries

    def receive(self, fact: PrFact, repo: Repo, dedup_key: str) -> str | None:
        """One delivery's fact about ``repo``'s pull request: recorded (once per
        delivery) and acted on in the background. A line for the webhook's answer, or
        None when it is about no job's pull request."""
        assert repo.id is not None
        if fact.from_fork:
            return None  # a fork's pull request (or its CI) is never a job's
        if fact.number is None and not fact.same_repo:
            return None  # a fork's CI names no PR; a branch name or sha is anyone's
        head = self.rows.matching_head(
            repo.id, number=fact.number, branch=fact.head_branch, sha=fact.head_sha
        )
        if head is None or head.id is None:
            return None
        if fact.kind in _CLOSING and not _names_job(fact, head):
            return None  # a branch of the job's name is not enough to close the job
        seen = self.rows.by_key(dedup_key)
        if seen is not None:
            return f"pull request action {seen.id} ({seen.state}): a redelivery, nothing more"
        pr = f"job {head.id}'s pull request"
        root = self.rows.chain_root(head.id)
        if fact.kind == "ci_failed" and fact.head_sha:
            first = self.rows.ci_failure(root, fact.head_sha)
            if first is not None:
                return (
                    f"{pr}: CI failed on {fact.head_sha[:12]} again ({fact.name}): a duplicate "
                    f"of pull request action {first.id}, nothing more"
                )
        prompt = None
        if fact.is_fix:
            refused = self._refused(fact, repo)
            if refused is not None:
                log.info("%s: %s %s: not acted on: %s", pr, fact.kind, fact.author, refused)
                return f"{pr}: {refused}; nothing done"
            comments: tuple[ReviewComment, ...] = ()
            if fact.kind == "changes_requested" and fact.review_id and fact.number:
                notes = self.forges.review_comments(head.id, fact.number, fact.review_id)
                comments = tuple(ReviewComment(n.path, n.line, n.body) for n in notes)
            prompt = fixprompt.prompt_for(
                fact, branch=head.branch, command=self.settings.fix_command, comments=comments
            )
        action, new = self.rows.add(
            PrAction(
                repo_id=repo.id, root_id=root, dedup_key=dedup_key,
                kind=fact.kind, name=fact.name, prompt=prompt, author=fact.author,
                head_sha=fact.head_sha,
            )
        )  # fmt: skip
        if not new:
            return f"pull request action {action.id} ({action.state}): a redelivery, nothing more"
        log.info("%s: %s recorded as pull request action %s", pr, fact.kind, action.id)
        self._soon(action.root_id)
        return f"{pr}: {fact.kind.replace('_', ' ')}: pull request action {action.id}"

    def _refused(self, fact: PrFact, repo: Repo) -> str | None:
        """Why a review or comment starts no fix (None: it does). CI results come from
        the forge itself (a signed delivery), so they need no author."""
        if fact.kind == "ci_failed":
            return None
        command = self.settings.fix_command
        if fact.kind == "comment" and fixprompt.command_text(fact, command) is None:
            return f"the comment does not start with {command!r}"
        author = (fact.author or "").strip()
        if not author:
            return "the author is unknown"
        assert repo.id is not None
        active = self.trigger_files.active(repo.id)
        listed = [*self.settings.fix_authors, *(active.fix_authors if active else [])]
        allowed = {a.lower() for a in listed}
        if author.lower() in allowed:
            return None
        associations = {a.upper() for a in self.settings.fix_author_associations}
        bot = author.lower().endswith("[bot]")
        if not bot and (fact.association or "").upper() in associations:
            return None
        return f"{author} is not allowed to ask for fixes"

    # ------------------------------------------------------------ the runner's hook

    def job_ended(self, job_id: int, ended: Job | None = None) -> None:
        """A job ended (after its on-success push): its fix action is done, and the next
        one its chain has queued goes. ``ended``: the row the runner recorded at the end
        (a job with no on-success; None: read it, as a push may have moved it). Never
        raises."""
        try:
            job = ended if ended is not None else self.store.job(job_id)
            if job.pushed_remote is None:
                return  # never on a forge: no pull request to act for
            action = self.rows.by_job(job_id)
            if action is not None and action.id is not None and action.state == "running":
                self.rows.move(
                    action.id, "running", "done",
                    note=f"follow-up job {job_id} {job.state.value}",
                )  # fmt: skip
            self._soon(action.root_id if action is not None else self.rows.chain_root(job_id))
        except Exception:
            log.exception("job %s: the fix loop could not go on", job_id)

    def resume(self, node: str | None = None) -> int:
        """At start: what a stopped daemon left (actions queued, or half-done); how
        many chains. ``node``: this daemon's; only the chains it owns (their root job's:
        :mod:`dispatcher.store.pr_actions`). Never raises."""
        try:
            self._settle_running(node=node)
            roots = self.rows.open_roots(node)
        except Exception:
            log.exception("cannot read the fix loops' queued actions")
            return 0
        for root in roots:
            self._soon(root)
        return len(roots)

    def counts(self, job: Job) -> tuple[int, int]:
        """(fix follow-ups its chain ran, fix deliveries queued) for ``GET /jobs/{id}``."""
        assert job.id is not None
        return self.rows.counts(self.rows.chain_root(job.id))

    def actions(self, job_id: int) -> list[PrActionPublic]:
        """The pull request actions of the job's chain, oldest first."""
        root = self.rows.chain_root(job_id)
        return [PrActionPublic.model_validate(a) for a in self.rows.of_chain(root)]

    # ------------------------------------------------------------ one chain, one at a time

    def _soon(self, root: int) -> None:
        with contextlib.suppress(RuntimeError):  # shutting down: queued for the next start
            self._pool.submit(self._advance_logged, root)

    def _lock(self, root: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(root, threading.Lock())

    def _advance_logged(self, root: int) -> None:
        try:
            self.advance(root)
        except Exception:
            log.exception("chain of job %s: the fix loop stopped; the next start goes on", root)

    def advance(self, root: int) -> None:
        """Act on the chain's actions in order (closing ones first) until one has to
        wait: a follow-up running, or one just started."""
        with self._lock(root):
            self._settle_running(root)
            while True:
                waiting = self.rows.of_chain(root, ["queued", "started"])
                waiting.sort(key=lambda a: (a.kind not in _CLOSING, a.id or 0))
                for action in waiting:
                    assert action.id is not None
                    head = self.rows.chain_head(root)
                    if action.kind in _CLOSING:
                        self._close(action, head)
                    elif self._fix(action, head):
                        break
                else:
                    return
                # One has to wait for a follow-up; one found made after a restart may
                # have ended already (its end told no one): then the next goes now.
                if not self._settle_running(root):
                    return

    def _settle_running(self, root: int | None = None, node: str | None = None) -> int:
        """Fix actions whose follow-up is no longer active are done: it ended while the
        daemon was down, or before its action could say it was running. How many.
        ``node``: of its chains only (every chain's when ``root`` is None)."""
        if root is None:
            running = self.rows.in_state("running", node)
        else:
            running = self.rows.of_chain(root, ["running"])
        settled = 0
        for action in running:
            assert action.id is not None and action.job_id is not None
            job = self.store.job(action.job_id)
            if job.state not in ACTIVE:
                self.rows.move(
                    action.id, "running", "done", note=f"follow-up job {job.id} {job.state.value}"
                )
                settled += 1
        return settled

    def _close(self, action: PrAction, head: Job) -> None:
        assert action.id is not None and head.id is not None
        faults.reach("fixloop.before-close")
        try:
            if action.kind == "merged":
                done = self.control.merged_on_forge(head.id, into=head.target_branch)
            else:
                if head.state is not JobState.MERGED:  # merged locally: its PR was merged
                    self.store.update(head.id, pr_state="closed")  # so it is, whatever follows
                # Only what the forge has may go: a branch past its last push (a fix not
                # pushed, a follow-up's commits) is kept, and so is the job.
                done = self.control.discard(head.id, expected_tip=head.pushed_sha or "-")
        except RefMoved as exc:
            why = f"pull request closed on the forge; job kept, not discarded: {exc.message}"
            note_job(self.settings, head.id, why)
            self.rows.move(action.id, "queued", "dropped", note=why)
            return
        except DispatcherError as exc:
            self.rows.move(action.id, "queued", "dropped", note=exc.message)
            return
        self.rows.move(action.id, "queued", "done", note=done.message)

    def _fix(self, action: PrAction, head: Job) -> bool:
        """Start the action's follow-up, or drop it, or give up; True: it has to wait."""
        assert action.id is not None and head.id is not None
        if action.state == "started":  # the last daemon stopped while making it
            return self._follow_up(action, head)
        if head.state in CLOSED:
            self._drop(action, f"job {head.id} is {head.state.value}")
            return False
        if head.state in ACTIVE:
            return True  # one run at a time: it goes when this one ends
        if action.kind == "ci_failed" and action.head_sha:
            # The branch's newest commit is the job's head (a push of it may have failed:
            # the pushed sha is older then, and its failures are not this commit's).
            if head.head_sha is not None and action.head_sha != head.head_sha:
                self._drop(action, f"about commit {action.head_sha}, not the branch's newest")
                return False
            first = self.rows.ci_failure(action.root_id, action.head_sha, before=action.id)
            if first is not None:  # recorded at once by two deliveries: one fix for both
                self._drop(action, f"a duplicate of pull request action {first.id}")
                return False
        limit = self._limit(head)
        ran, _ = self.rows.counts(action.root_id)
        if limit == 0:
            self._drop(action, "max-fix-attempts is 0 for this job: no fix loop")
            return False
        if ran >= limit:
            self._give_up(action, head, ran, limit)
            return False
        self.rows.move(action.id, "queued", "started")
        return self._follow_up(self.rows.get(action.id), head)

    def _follow_up(self, action: PrAction, head: Job) -> bool:
        """Make the action's follow-up (once: its idempotency key is written with it);
        False: it could not be made (the action is dropped, saying why)."""
        assert action.id is not None and head.id is not None
        if head.state is JobState.SUCCEEDED and head.pushed_sha != head.head_sha:
            try:  # what the newest run made goes to the forge first, whatever comes next
                self.forges.push(head.id, PushRequest(remote=head.pushed_remote or "origin"))
            except DispatcherError as exc:
                log.info("job %s: not pushed before its fix: %s", head.id, exc.message)
        faults.reach("fixloop.before-followup")
        idem = IdempotencyKey(
            key=f"pr-action-{action.id}", method="FIX", path=f"/pr-actions/{action.id}",
            request_hash="fix", not_before=_EPOCH,
        )  # fmt: skip
        on_success = head.on_success or {"push": True, "remote": head.pushed_remote or "origin"}
        try:
            made = self.jobs.followup(
                head.id, FollowupCreate(prompt=action.prompt or "Fix the pull request."),
                idem=idem, on_success=on_success,
            )  # fmt: skip
        except DispatcherError as exc:
            self.rows.move(action.id, "started", "dropped", note=f"no follow-up: {exc.message}")
            return False
        faults.reach("fixloop.followup-made")
        self.rows.move(
            action.id, "started", "running", job_id=made.job.id,
            note=f"follow-up job {made.job.id} of job {head.id}",
        )  # fmt: skip
        log.info("pull request action %s: follow-up job %s", action.id, made.job.id)
        return True

    def _drop(self, action: PrAction, why: str) -> None:
        assert action.id is not None
        self.rows.move(action.id, "queued", "dropped", note=why)

    def _limit(self, head: Job) -> int:
        active = self.trigger_files.active(head.repo_id)
        if active is not None:
            trigger = active.triggers.get(head.trigger) if head.trigger else None
            limit = active.max_fix_attempts_for(trigger)
            if limit is not None:
                return limit
        return self.settings.max_fix_attempts

    def _give_up(self, action: PrAction, head: Job, ran: int, limit: int) -> None:
        """Past the bound: the pull request labelled and a person told (the first time
        only), before the action says so (a crash in between does them again)."""
        assert action.id is not None and head.id is not None
        why = f"{ran} fix follow-up(s) ran (max-fix-attempts {limit}); left to a person"
        if not self.rows.gave_up(action.root_id):
            label = self.settings.fix_gave_up_label
            if head.pr_number is not None and head.pr_url:
                try:
                    self.forges.label_pr(head.id, label)
                except DispatcherError as exc:
                    why += f"; the label {label!r} was not set: {exc.message}"
            self._announce(head, why)
        self.rows.move(action.id, "queued", "gave_up", note=why)
        log.info("job %s: fix loop gave up: %s", head.id, why)

    def _announce(self, head: Job, why: str) -> None:
        notifier = self.notices.notifier
        if notifier is None or head.id is None:
            return
        pr = f"pull request #{head.pr_number}" if head.pr_number else f"branch {head.branch}"
        notifier.notify(
            JobNotice(
                job_id=head.id, repo=self.store.repo(head.repo_id).name, state=FIX_GAVE_UP,
                branch=head.branch, prompt=f"Fix loop gave up on {pr}: {why}",
                summary=head.pr_url, error=why, url=f"{self.settings.api_url}/jobs/{head.id}",
            )
        )  # fmt: skip

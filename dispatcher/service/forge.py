"""Push a job's branch to its repo's remote and open its pull request (docs/forge.md).

``push`` and ``pr`` hold the job's lock (as merge and discard do). A refused push
or a forge's error is recorded on the job (``forge_error`` and a note in its log)
and raised as one line; nothing local changes. :meth:`Forges.job_ended` (the
daemon's hook) does what a trigger's ``on-success:`` asked, on a thread of its
own; its failure is recorded and never fails the job. Tokens come from the
settings only and are scrubbed from every message.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from dispatcher import faults
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, ForgeError, InvalidInput, InvalidState
from dispatcher.forge import hosts
from dispatcher.forge.client import NewPullRequest, PullRequest, ReviewNote, client_for
from dispatcher.forge.remotes import fork_of, parse_remote
from dispatcher.git import refs
from dispatcher.git import remote as git_remote
from dispatcher.git.names import validate_branch_name
from dispatcher.jobs.files import note_job
from dispatcher.lifecycle import FINISHED, JobState
from dispatcher.service.control import Control, action_result, refuse_continued
from dispatcher.service.credentials import push_credentials
from dispatcher.store.database import Store
from dispatcher.store.models import ActionResult, Job, PullRequestCreate, PushRequest, utcnow

log = logging.getLogger(__name__)

_OPEN = frozenset({"open", "draft"})
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


@dataclass(eq=False)
class Forges:
    """``push`` and ``pr`` of a job, and the on-success of its trigger."""

    settings: Settings
    store: Store
    control: Control  # its lock per job

    # ------------------------------------------------------------------ push

    def push(self, job_id: int, req: PushRequest) -> ActionResult:
        if (holder := self.control.elsewhere(job_id, "push")) is not None:
            assert self.control.peers is not None
            return self.control.peers.action(holder, job_id, "push", req)
        with self.control.lock(job_id):
            job = self._pushable(job_id)
            job, changed, message = self._push(job, req.remote, force=req.force_with_lease)
            return action_result(self.store, job, changed, message)

    def push_locked(self, job: Job, remote: str, *, force: bool = False) -> Job:
        """:meth:`push` for a caller that holds the job's lock already (a rebase)."""
        return self._push(job, remote, force=force)[0]

    def _push(self, job: Job, remote: str, *, force: bool = False) -> tuple[Job, bool, str]:
        assert job.id is not None
        job_id = job.id
        repo_path = Path(self.store.repo(job.repo_id).path)
        head = refs.branch_head(repo_path, job.branch)
        if head is None:
            raise InvalidState(f"job {job.id}'s branch {job.branch} is gone; nothing to push")
        try:
            _, push_url = git_remote.remote_urls(repo_path, remote)
            lease = job.pushed_sha if job.pushed_remote == remote else None
            git_remote.push(
                repo_path, remote, job.branch, lease=lease, force_with_lease=force,
                credentials=self._credentials(push_url),
                timeout=self.settings.push_timeout_seconds,
            )  # fmt: skip
        except DispatcherError as exc:
            self._failed(job, "push", exc)
            raise
        faults.reach("forge.pushed")  # the remote has it; the job does not say so yet
        same = job.pushed_remote == remote and job.pushed_sha == head
        job = self.store.update(
            job_id, pushed_remote=remote, pushed_sha=head, pushed_at=utcnow(), forge_error=None
        )
        message = f"job {job.id}: pushed {job.branch} ({head[:12]}) to {remote}"
        note_job(self.settings, job_id, message)
        return job, not same, message

    def _credentials(self, push_url: str) -> git_remote.Credentials | None:
        """The token of the push URL's host (:func:`push_credentials`)."""
        return push_credentials(self.settings, push_url)

    # ------------------------------------------------------------------ pull requests

    def pr(self, job_id: int, req: PullRequestCreate) -> ActionResult:
        if (holder := self.control.elsewhere(job_id, "pull request")) is not None:
            assert self.control.peers is not None
            return self.control.peers.action(holder, job_id, "pr", req)
        with self.control.lock(job_id):
            job = self._pushable(job_id)
            repo_path = Path(self.store.repo(job.repo_id).path)
            if job.pr_url and job.pr_number is not None and job.pr_state in _OPEN:
                # The same PR; a follow-up's new commits are pushed to its branch first.
                pushed = False
                if job.pushed_sha != refs.branch_head(repo_path, job.branch):
                    job, pushed, _ = self._push(job, job.pushed_remote or req.remote)
                message = f"job {job_id} has pull request #{job.pr_number} already: {job.pr_url}"
                return action_result(
                    self.store,
                    job,
                    pushed,
                    message + ("; its new commits pushed" if pushed else ""),
                )
            base = validate_branch_name(req.base or job.target_branch)
            try:
                fetch_url, push_url = git_remote.remote_urls(repo_path, req.remote)
                forge = hosts.forge_for(self.settings, parse_remote(fetch_url))
                fork = fork_of(fetch_url, push_url)  # the PR is the upstream's, its head the fork's
                if forge.token is None:
                    raise ForgeError(
                        f"no token for {forge.host}: set one in DISPATCHER_FORGE_TOKENS "
                        f'(\'{{"{forge.host}": "..."}}\') to open pull requests on {forge.name}'
                    )
            except DispatcherError as exc:
                self._failed(job, "pull request", exc)
                raise
            head = refs.branch_head(repo_path, job.branch)
            if job.pushed_remote != req.remote or job.pushed_sha != head:
                job, _, _ = self._push(job, req.remote)
            new = NewPullRequest(
                head=job.branch, base=base, title=title_of(job), body=body_of(job, repo_path),
                draft=req.draft, labels=tuple(dict.fromkeys(req.labels)), head_repo=fork,
            )  # fmt: skip
            with self._client() as http:
                client = client_for(forge, http)
                try:
                    pr, opened = client.open(new)
                except DispatcherError as exc:
                    self._failed(job, "pull request", exc)
                    raise
                faults.reach("forge.pr-opened")  # the forge has it; the job does not say so yet
                job = self.store.update(
                    job_id, pr_url=pr.url, pr_number=pr.number, pr_state=pr.state, forge_error=None
                )
                said = "opened" if opened else "found open already"
                message = (
                    f"job {job_id}: pull request #{pr.number} {said} on {forge.name}: {pr.url}"
                )
                note_job(self.settings, job_id, message)
                # The PR is recorded first: a refusal here loses nothing. A PR found open (a
                # crash after the forge made it, or one made by hand) gets them too.
                if new.labels and not (opened and client.labels_on_create):
                    try:
                        client.label(pr, new.labels)
                    except DispatcherError as exc:
                        self._failed(job, "labelling the pull request", exc)
                        job = self.store.job(job_id)
                        message += f"; its labels were not set: {exc.message}"
            return action_result(self.store, job, opened, message)

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.settings.forge_timeout_seconds, follow_redirects=False)

    # ------------------------------------------------------------------ on-success

    def job_ended(self, job_id: int, then: Callable[[], None] | None = None) -> None:
        """The runner let go of a job (the daemon's hook): if it succeeded with commits
        and its trigger asked (``on-success:``), push it or open its pull request, on a
        thread of its own; ``then`` runs after that (on that thread), or at once when
        nothing is to be done. Never raises."""
        try:
            job = self.store.job(job_id)
        except Exception:
            log.exception("job %s: cannot tell whether it is to be pushed", job_id)
            job = None
        wanted = job.on_success if job is not None else None
        if (
            job is None
            or not wanted
            or job.state is not JobState.SUCCEEDED
            or not job.commits_ahead
        ):
            if then is not None:
                then()
            return

        def work() -> None:
            self._on_success(job_id, wanted)
            if then is not None:
                then()

        threading.Thread(target=work, name="forge", daemon=True).start()

    def resume(self, node: str | None = None) -> None:
        """At start: the on-success a stopped daemon still owed (a job succeeded, its
        push or pull request not done nor failed), each on a thread. ``node``: this
        daemon's; only its jobs' (their branch is in its clone). Never raises."""
        try:
            jobs = self.store.jobs_in([JobState.SUCCEEDED], node=node)
        except Exception:
            log.exception("cannot read which jobs are still to be pushed")
            return
        for job in jobs:
            wanted = job.on_success
            if not wanted or not job.commits_ahead or job.forge_error or job.id is None:
                continue
            owed = job.pushed_sha != job.head_sha or (bool(wanted.get("pr")) and not job.pr_url)
            if owed and job.followed_by is None:
                self.job_ended(job.id)

    def _on_success(self, job_id: int, wanted: dict[str, object]) -> None:
        remote = str(wanted.get("remote") or "origin")
        faults.reach("forge.before-on-success")
        try:
            pr = wanted.get("pr")
            if isinstance(pr, dict):
                self.pr(job_id, PullRequestCreate.model_validate({"remote": remote, **pr}))
            elif wanted.get("push"):
                self.push(job_id, PushRequest(remote=remote))
        except DispatcherError as exc:
            self._recorded(job_id, exc)  # the push's and pr's own failures are already
        except Exception as exc:  # a bug, or input the trigger file let through
            log.exception("job %s: on-success failed", job_id)
            why = " ".join(str(exc).split())[:300] or type(exc).__name__
            self._recorded(job_id, InvalidInput(f"the trigger file's on-success: {why}"))

    def _recorded(self, job_id: int, exc: DispatcherError) -> None:
        """Make sure an on-success failure is on the job (so a restart does not retry
        it): the ones ``_failed`` saw are; one raised before it (a bad base) is now."""
        job = self.store.job(job_id)
        if job.forge_error is None:
            self._failed(job, "on-success", exc)

    # ------------------------------------------------------------------ fix loops

    def label_pr(self, job_id: int, label: str) -> None:
        """Put ``label`` on the job's pull request (the fix loop gave up); a failure is
        recorded on the job and raised."""
        job = self.store.job(job_id)
        if job.pr_number is None or not job.pr_url:
            raise InvalidState(f"job {job_id} has no pull request to label")
        pr = PullRequest(job.pr_number, job.pr_url, job.pr_state or "open")
        try:
            with self._client() as http:
                client_for(self._forge_of(job), http).label(pr, (label,))
        except DispatcherError as exc:
            self._failed(job, "labelling the pull request", exc)
            raise

    def review_comments(self, job_id: int, number: int, review_id: int) -> list[ReviewNote]:
        """The comments of a review of the job's pull request, asked of the forge (none
        when it cannot be asked: the failure is logged, the fix goes on without them)."""
        job = self.store.job(job_id)
        try:
            with self._client() as http:
                return client_for(self._forge_of(job), http).review_comments(number, review_id)
        except DispatcherError as exc:
            log.warning("job %s: review comments not read: %s", job_id, self.scrub(exc.message))
            return []

    def _forge_of(self, job: Job) -> hosts.Forge:
        repo_path = Path(self.store.repo(job.repo_id).path)
        fetch_url, _ = git_remote.remote_urls(repo_path, job.pushed_remote or "origin")
        return hosts.forge_for(self.settings, parse_remote(fetch_url))

    # ------------------------------------------------------------------ shared

    def _pushable(self, job_id: int) -> Job:
        job = self.store.job(job_id)
        refuse_continued(job)
        if job.state not in FINISHED:
            raise InvalidState(
                f"job {job_id} is {job.state.value}; only a finished job's branch is pushed",
                details={"state": job.state.value},
            )
        if not job.commits_ahead or not job.branch:
            raise InvalidState(f"job {job_id} has no commits to push")
        return job

    def _failed(self, job: Job, what: str, exc: DispatcherError) -> None:
        """Record why ``what`` failed on the job: its field, its log, the daemon's log."""
        assert job.id is not None
        message = self.scrub(exc.message)
        exc.message = message
        exc.args = (message,)
        self.store.update(job.id, forge_error=message)
        note_job(self.settings, job.id, f"{what} failed: {message}")
        log.warning("job %s: %s failed: %s", job.id, what, message, extra={"job_id": job.id})

    def scrub(self, text: str) -> str:
        """``text`` without any forge token of the settings, nor a URL's user and password
        (a remote URL with credentials in it, echoed by git)."""
        text = _USERINFO.sub(r"\1", text)
        for token in self.settings.forge_tokens.values():
            secret = token.get_secret_value()
            if secret:
                text = text.replace(secret, "***")
        return " ".join(text.split())


def title_of(job: Job) -> str:
    """The pull request's title: the prompt's first line (at most 100 characters)."""
    first = next((line.strip() for line in job.prompt.splitlines() if line.strip()), "")
    first = first.lstrip("#").strip()
    if len(first) > 100:
        first = first[:99].rstrip() + "…"
    return first or f"Job {job.id}"


def body_of(job: Job, repo_path: Path) -> str:
    """The pull request's body: the prompt, the agent's summary, cost and diffstat."""
    prompt = job.prompt.strip()
    if len(prompt) > 4000:
        prompt = prompt[:4000] + "\n…"
    quoted = "\n".join(f"> {line}" if line else ">" for line in prompt.splitlines())
    parts = [f"**Prompt**\n\n{quoted}"]
    if job.summary:
        parts.append(f"**Summary** (the agent's)\n\n{job.summary.strip()[:4000]}")
    facts = [f"{job.commits_ahead} commit{'s' if job.commits_ahead != 1 else ''}"]
    if job.files_changed is not None:
        facts.append(
            f"{job.files_changed} file{'s' if job.files_changed != 1 else ''} changed, "
            f"+{job.insertions or 0}/-{job.deletions or 0}"
        )
    if job.cost_usd is not None:
        facts.append(f"cost ${job.cost_usd:.2f}")
    facts.append(f"agent {job.agent}")
    parts.append(" · ".join(facts))
    if job.head_sha:
        try:
            stat = refs.diff(repo_path, job.base_sha, job.head_sha, stat=True).rstrip()
        except DispatcherError:
            stat = ""
        if stat:
            if len(stat) > 6000:
                stat = stat[:6000] + "\n…"
            parts.append(f"```\n{stat}\n```")
    parts.append(f"Opened by worktree-dispatcher for job {job.id} (branch `{job.branch}`).")
    return "\n\n".join(parts)

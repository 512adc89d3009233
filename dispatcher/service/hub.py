"""Results leave the machine: a repo's hub (docs/cluster.md, step 6).

For a repo that names a hub (a git remote of its clone), a job that ends with
commits has its branch pushed there, whatever its outcome: before its end is recorded
(:meth:`Hubs.before_end`, the runner's hook, whose ``hub_sha`` goes in the end's own
write), else after it (:meth:`Hubs.job_ended`, on a thread; retried, then the one-line
reason recorded on the job: ``hub_sha`` or ``hub_error``). A kill between that
later push and its record leaves the job owing it (its ``hub_sha`` is not its head):
:meth:`Hubs.resume` pushes it again at the next start. A kill between the first push
and the end's record leaves the job running: the next start (or the node taking it
over) ends it and pushes again. While an agent runs, its worktree's files are pushed
every ``attempt_push_seconds`` to ``refs/dispatcher/attempts/<job>/<attempt>`` on the
hub, as a commit made in a temporary index (the agent's index, HEAD and branch are not
touched) whose parent is the job branch's head, skipped when nothing changed
(:meth:`Hubs.push_attempts`); those refs are deleted when the job is merged or
discarded (:meth:`Hubs.closed`). Merges of a hub repo are pushed there by the
merge engine itself (:func:`dispatcher.git.merge.merge`, ``hub``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher import faults
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.git import commits, refs
from dispatcher.git import remote as git_remote
from dispatcher.git.names import identity
from dispatcher.jobs.files import note_job
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import FINISHED, JobState
from dispatcher.service.control import Control
from dispatcher.service.credentials import hub_of
from dispatcher.store.database import Store
from dispatcher.store.models import Job, Repo

log = logging.getLogger(__name__)

_BACKOFF_SECONDS = 1.0  # before the second try of a push, doubled per try


def attempt_ref(job_id: int, attempt: int) -> str:
    """Where a job's attempt's work in progress is pushed on the hub."""
    return f"refs/dispatcher/attempts/{job_id}/{attempt}"


@dataclass(eq=False)
class Hubs:
    """Job branches, work in progress and their clean-up on each repo's hub."""

    settings: Settings
    store: Store
    control: Control  # its lock per job
    trigger_files: TriggerFiles  # a committed `hub:` of a repo without its own setting
    # This daemon's node (docs/cluster.md; None: every row is its own): whose running
    # jobs' work in progress it pushes (their worktrees are in its clones).
    node: str | None = field(default=None, init=False)
    # (job, attempt) -> the (tree, parent) last pushed as its attempt ref
    _last: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict, init=False)
    _closed: set[int] = field(default_factory=set, init=False)  # attempt refs deleted
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)

    def remote_of(self, repo: Repo) -> str | None:
        """The repo's hub: its own setting, else its trigger file's ``hub:`` (None: no
        hub, nothing is pushed)."""
        if repo.hub:
            return repo.hub
        active = self.trigger_files.active(repo.id) if repo.id is not None else None
        return active.hub if active is not None else None

    # ------------------------------------------------------------------ job branches

    def job_ended(self, job_id: int, ended: Job | None = None) -> None:
        """The runner let go of a job (the daemon's hook): a hub repo's job with commits
        has its branch pushed, on a thread of its own. Never raises."""
        try:
            job = ended if ended is not None else self.store.job(job_id)
            if not self._owes(job):
                return
        except Exception:
            log.exception("job %s: cannot tell whether it is to be pushed to its hub", job_id)
            return
        threading.Thread(
            target=self._push_branch, args=(job_id,), name="hub-push", daemon=True
        ).start()

    def before_end(self, job: Job, fields: dict[str, object]) -> dict[str, object]:
        """The runner's hook before it records a job's end (``fields``: what it will
        write): a hub repo's job with commits has its branch pushed first, so that a job
        recorded ended has its result off the machine, and a node killed before the
        record has its job taken over and run again (the next push overwrites this one).
        One try: a failure is left to :meth:`job_ended`'s tries. Never raises."""
        head, ahead = fields.get("head_sha"), fields.get("commits_ahead")
        if not isinstance(head, str) or not ahead or not job.branch or job.id is None:
            return {}
        try:
            repo = self.store.repo(job.repo_id)
            remote = self.remote_of(repo)
            if not remote:
                return {}
            repo_path = Path(repo.path)
            hub = hub_of(self.settings, repo_path, remote)
            git_remote.push_ref(
                repo_path, hub.remote, f"refs/heads/{job.branch}", head,
                credentials=hub.credentials, timeout=hub.timeout,
            )  # fmt: skip
            faults.reach("hub.pushed-before-end")  # the hub has it; the end is not recorded
        except DispatcherError as exc:
            message = " ".join(exc.message.split())[:500]
            log.info("job %s: push to its hub before its end failed: %s", job.id, message)
            return {}
        except Exception:
            log.exception("job %s: push to its hub before its end failed", job.id)
            return {}
        note_job(
            self.settings, job.id, f"pushed {job.branch} ({head[:12]}) to the hub {hub.remote}"
        )
        return {"hub_sha": head, "hub_error": None}

    def resume(self, node: str | None = None) -> None:
        """At start, on a thread: the branch pushes a stopped daemon still owed (a job
        ended with commits, its branch not on the hub at its head, no failure recorded),
        one after the other; then the attempt refs of jobs merged or discarded meanwhile
        are deleted from each hub. ``node``: this daemon's; only its jobs' (their branch
        is in its clone). Never raises."""
        threading.Thread(target=self._resume, args=(node,), name="hub-resume", daemon=True).start()

    def _resume(self, node: str | None) -> None:
        try:
            hubs = {r.id: r for r in self.store.repos() if self.remote_of(r)}
            if not hubs:
                return
            jobs = [j for j in self.store.jobs_in(sorted(FINISHED), node=node) if j.repo_id in hubs]
        except Exception:
            log.exception("cannot read which jobs are still to be pushed to their hub")
            return
        for job in jobs:
            if job.id is not None and self._owes(job):
                self._push_branch(job.id)
        for repo in hubs.values():
            try:
                self._sweep_attempts(repo)
            except Exception:
                log.exception("repo %s: its hub's attempt refs were not tidied", repo.name)

    def _sweep_attempts(self, repo: Repo) -> None:
        """Delete from the repo's hub the attempt refs of its jobs that are closed
        (merged or discarded: a daemon stopped before it deleted them)."""
        remote = self.remote_of(repo)
        if not remote:
            return
        repo_path = Path(repo.path)
        try:
            hub = hub_of(self.settings, repo_path, remote)
            found = git_remote.remote_refs(
                repo_path, hub.remote, "refs/dispatcher/attempts/*",
                credentials=hub.credentials, timeout=hub.timeout,
            )  # fmt: skip
        except DispatcherError as exc:
            log.warning("repo %s: its hub's attempt refs not read: %s", repo.name, exc.message)
            return
        ids = {int(p[3]) for p in (r.split("/") for r in found) if len(p) > 4 and p[3].isdigit()}
        closed = [job_id for job_id in sorted(ids) if self._job_closed(job_id, repo.id)]
        for job_id in closed:
            self._delete_attempts(repo, remote, job_id)

    def _job_closed(self, job_id: int, repo_id: int | None) -> bool:
        try:
            job = self.store.job(job_id)
        except DispatcherError:
            return False  # not this database's job: not ours to delete
        return job.repo_id == repo_id and job.state in (JobState.MERGED, JobState.DISCARDED)

    def _owes(self, job: Job) -> bool:
        if job.state not in FINISHED or not job.commits_ahead or not job.branch:
            return False
        if job.hub_error or (job.hub_sha is not None and job.hub_sha == job.head_sha):
            return False
        return self.remote_of(self.store.repo(job.repo_id)) is not None

    def _push_branch(self, job_id: int) -> None:
        """Push the job's branch to its repo's hub, ``hub_push_tries`` times at most."""
        tries = self.settings.hub_push_tries
        for n in range(tries):
            if n:
                threading.Event().wait(_BACKOFF_SECONDS * 2 ** (n - 1))
            try:
                with self.control.lock(job_id):
                    if self._push_once(job_id):
                        return
            except DispatcherError as exc:
                message = " ".join(exc.message.split())[:500]
                if n + 1 < tries:
                    log.info("job %s: push to its hub failed (try %d): %s", job_id, n + 1, message)
                    continue
                self._failed(job_id, message)
            except Exception:
                log.exception("job %s: push to its hub failed", job_id)
                return

    def _push_once(self, job_id: int) -> bool:
        """One push; True when done (or nothing is to be done any more)."""
        job = self.store.job(job_id)
        repo = self.store.repo(job.repo_id)
        remote = self.remote_of(repo)
        if not remote or not job.branch or job.state not in FINISHED | {JobState.MERGED}:
            return True
        repo_path = Path(repo.path)
        head = refs.branch_head(repo_path, job.branch)
        if head is None:
            if job.state is not JobState.MERGED:  # merged: its branch went with the merge
                self._failed(job_id, f"its branch {job.branch} is gone; nothing to push")
            return True
        if job.hub_sha == head:
            return True
        hub = hub_of(self.settings, repo_path, remote)
        # The job branch on the hub is the daemon's: whatever is there is overwritten (a
        # rebase, a follow-up, a push a crash left unrecorded).
        git_remote.push_ref(
            repo_path, hub.remote, f"refs/heads/{job.branch}", head,
            credentials=hub.credentials, timeout=hub.timeout,
        )  # fmt: skip
        faults.reach("hub.pushed")  # the hub has it; the job does not say so yet
        self.store.update(job_id, hub_sha=head, hub_error=None)
        said = f"job {job_id}: pushed {job.branch} ({head[:12]}) to the hub {hub.remote}"
        note_job(self.settings, job_id, said)
        return True

    def _failed(self, job_id: int, message: str) -> None:
        self.store.update(job_id, hub_error=message)
        note_job(self.settings, job_id, f"push to the hub failed: {message}")
        log.warning("job %s: push to its hub failed: %s", job_id, message, extra={"job_id": job_id})

    # ------------------------------------------------------------------ attempts

    def loop(self, stop: threading.Event) -> None:
        """Push the running jobs' work in progress every ``attempt_push_seconds`` until
        ``stop`` is set (the daemon's thread; 0 seconds: it returns at once)."""
        every = self.settings.attempt_push_seconds
        if every <= 0:
            return
        while not stop.wait(every):
            try:
                self.push_attempts()
            except Exception:
                log.exception("pushing work in progress to the hubs failed")

    def push_attempts(self) -> None:
        """One pass: each running job of a hub repo gets its attempt ref pushed when its
        files (or its branch's head) changed since the last push."""
        repos = {r.id: (r, remote) for r in self.store.repos() if (remote := self.remote_of(r))}
        if not repos:
            return
        for job in self.store.jobs_in([JobState.RUNNING], node=self.node):
            found = repos.get(job.repo_id)
            if found is None or job.id is None or not job.worktree or not job.branch:
                continue
            try:
                self._push_attempt(found[0], found[1], job)
            except DispatcherError as exc:
                log.warning("job %s: work in progress not pushed to the hub: %s", job.id,
                            exc.message[:300], extra={"job_id": job.id})  # fmt: skip

    def _push_attempt(self, repo: Repo, remote: str, job: Job) -> None:
        assert job.id is not None
        worktree, repo_path = Path(job.worktree or ""), Path(repo.path)
        if not worktree.is_dir():
            return
        parent = refs.branch_head(repo_path, job.branch)
        if parent is None:
            return
        ws = Workspace.model_validate(job.workspace or {})
        tree = commits.snapshot_tree(
            worktree,
            exclude=ws.never_commit(),
            max_file_bytes=ws.max_leftover_bytes(self.settings.max_leftover_file_mb),
        )
        key = (job.id, job.attempt)
        with self._guard:
            if job.id in self._closed or self._last.get(key) == (tree, parent):
                return
        ident = identity(self.settings.commit_author_name, self.settings.commit_author_email)
        message = f"dispatcher: work in progress of job {job.id}, attempt {job.attempt}"
        sha = commits.commit_tree(repo_path, tree, [parent], message, ident)
        hub = hub_of(self.settings, repo_path, remote)
        with self._guard:  # not after the refs were deleted (merged or discarded)
            if job.id in self._closed:
                return
            git_remote.push_ref(
                repo_path, hub.remote, attempt_ref(job.id, job.attempt), sha,
                credentials=hub.credentials, timeout=hub.timeout,
            )  # fmt: skip
            self._last[key] = (tree, parent)
        log.info("job %s: work in progress pushed to %s (%s)", job.id, hub.remote, sha[:12])

    # ------------------------------------------------------------------ clean-up

    def closed(self, job: Job) -> None:
        """A job was merged or discarded (Control's hook): its attempt refs go from the
        hub, on a thread. Never raises."""
        if job.id is None:
            return
        job_id = job.id
        with self._guard:
            self._closed.add(job_id)
            for key in [k for k in self._last if k[0] == job_id]:
                del self._last[key]
        try:
            repo = self.store.repo(job.repo_id)
        except Exception:
            log.exception("job %s: cannot tell whether it has a hub", job_id)
            return
        remote = self.remote_of(repo)
        if remote:
            threading.Thread(
                target=self._delete_attempts, args=(repo, remote, job_id), name="hub-clean",
                daemon=True,
            ).start()  # fmt: skip

    def _delete_attempts(self, repo: Repo, remote: str, job_id: int) -> None:
        repo_path = Path(repo.path)
        faults.reach("hub.before-attempts-deleted")  # closed; its refs still on the hub
        try:
            with self._guard:
                hub = hub_of(self.settings, repo_path, remote)
                found = git_remote.remote_refs(
                    repo_path, hub.remote, f"refs/dispatcher/attempts/{job_id}/*",
                    credentials=hub.credentials, timeout=hub.timeout,
                )  # fmt: skip
                for ref in sorted(found):
                    git_remote.push_ref(
                        repo_path, hub.remote, ref, None,
                        credentials=hub.credentials, timeout=hub.timeout,
                    )  # fmt: skip
        except DispatcherError as exc:
            log.warning("job %s: its attempt refs were not deleted from the hub: %s", job_id,
                        exc.message[:300], extra={"job_id": job_id})  # fmt: skip

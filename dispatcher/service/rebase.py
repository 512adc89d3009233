"""``dispatcher rebase JOB``: a finished job's branch brought onto its target's tip (docs/forge.md).

With the job's lock held (as merge, discard and push take it), the branch's commits
are replayed onto the target's current tip in the object database and the branch
moves by compare-and-swap (:func:`dispatcher.git.rebase.rebase_branch`); the job's
own worktree, where it still has one, moves with it, and no other checkout is
touched. The job then records its new base (``base_sha`` = ``rebased_onto``), head
and diffstat. A branch that already held a merge, or whose commits conflict one by
one where the whole does not, gets a merge of the target instead.

On a conflict nothing on the branch changes: a merge of the target is started in the
job's worktree (the conflicting files with their markers, ``MERGE_HEAD``), and a
follow-up job is made there, under the same lock, with a prompt naming the files;
when its agent is done, the daemon's commit of what it left is the merge (only if no
conflict markers are left: :mod:`dispatcher.jobs.result`), on the same branch, and
the follow-up's base is the target's tip.

A job with an open pull request whose branch was rewritten is pushed again at once
with ``--force-with-lease`` (its lease: where the job last pushed it), so the PR shows
the rebased commits; a job pushed without a PR is left for ``dispatcher push
--force-with-lease``, which the answer says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dispatcher import faults
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidState, MergeConflict
from dispatcher.git import journal as merge_journal
from dispatcher.git import rebase as git_rebase
from dispatcher.git import refs, worktrees
from dispatcher.git.names import identity
from dispatcher.jobs.files import note_job
from dispatcher.lifecycle import FINISHED
from dispatcher.service.control import Control, action_result, refuse_continued
from dispatcher.service.fetches import Fetches
from dispatcher.service.forge import Forges
from dispatcher.service.jobs import Jobs
from dispatcher.store.database import Store
from dispatcher.store.models import ActionResult, FollowupCreate, Job, Repo, utcnow

log = logging.getLogger(__name__)

_OPEN = frozenset({"open", "draft"})


@dataclass(frozen=True)
class _Conflicted:
    """A rebase that conflicted: the merge started in the job's worktree."""

    files: list[str]
    onto: str
    worktree: Path
    fetch_note: str | None


@dataclass(eq=False)
class Rebases:
    """Rebase a finished job's branch onto its target's tip."""

    settings: Settings
    store: Store
    control: Control  # its lock per job
    jobs: Jobs  # the follow-up that resolves a conflict
    forges: Forges  # the push with lease of a job with a pull request
    fetches: Fetches  # `fetch: true`

    def rebase(self, job_id: int) -> ActionResult:
        if (holder := self.control.elsewhere(job_id, "rebase")) is not None:
            assert self.control.peers is not None
            return self.control.peers.action(holder, job_id, "rebase")
        with self.control.lock(job_id):
            job = self._rebasable(job_id)
            repo = self.store.repo(job.repo_id)
            outcome = self._rebase(job, repo)
            if isinstance(outcome, ActionResult):
                return outcome
            # Under the same lock: a second rebase waiting on it finds the job continued
            # (and never takes back the merge this follow-up owns).
            return self._follow_up(job, outcome)

    # ------------------------------------------------------------------ checks

    def _rebasable(self, job_id: int) -> Job:
        job = self.store.job(job_id)  # NotFound: "no job with id N"
        refuse_continued(job)
        if job.state not in FINISHED:
            raise InvalidState(
                f"job {job_id} is {job.state.value}; only a finished job's branch is rebased",
                details={"state": job.state.value},
            )
        repo_path = Path(self.store.repo(job.repo_id).path)
        if not job.branch or refs.branch_head(repo_path, job.branch) is None:
            raise InvalidState(
                f"job {job_id}'s branch {job.branch or '?'} is gone; nothing to rebase"
            )
        if refs.branch_head(repo_path, job.branch) == job.base_sha:
            raise InvalidState(f"job {job_id} has no commits to rebase")
        return job

    # ------------------------------------------------------------------ the rebase

    def _rebase(self, job: Job, repo: Repo) -> ActionResult | _Conflicted:
        assert job.id is not None
        job_id = job.id
        repo_path = Path(repo.path)
        target = job.target_branch
        onto, fetch_note = self.fetches.tip(repo, target)
        if onto is None:
            raise InvalidState(
                f"job {job_id}'s target branch {target} no longer exists; nothing to rebase onto"
            )
        head = refs.branch_head(repo_path, job.branch)
        assert head is not None
        ident = identity(self.settings.commit_author_name, self.settings.commit_author_email)
        journal = self.settings.merges_dir / f"rebase-{job_id}.json"
        try:
            done = git_rebase.rebase_branch(
                repo_path, job.branch, head=head, base=job.base_sha, onto=onto, ident=ident,
                message=f"Merge {target} into {job.branch}\n\nDispatcher job {job_id}: "
                f"{git_rebase.MARK} {onto[:12]}.\n",
                journal=journal, label=f"rebase-{job_id}",
                worktree=Path(job.worktree) if job.worktree else None,
            )  # fmt: skip
        except MergeConflict as exc:
            files = list(exc.details.get("files") or [])
            return self._start_conflict(job, repo_path, head, onto, files, fetch_note)
        faults.reach("rebase.landed")  # the branch moved; the job does not say so yet
        answer = self._record(job, repo_path, onto, head, done, fetch_note)
        # Recorded: nothing left for a restart to finish (until then, a record that
        # raised leaves the journal, and the next start records the rebase from it).
        merge_journal.discard(journal)
        return answer

    def _record(
        self,
        job: Job,
        repo_path: Path,
        onto: str,
        old: str,
        done: git_rebase.Rebased,
        fetch_note: str | None,
    ) -> ActionResult:
        assert job.id is not None
        job_id = job.id
        target = job.target_branch
        stats = refs.branch_stats(repo_path, onto, done.tip)
        if done.how == "current" and job.base_sha == onto:
            message = f"job {job_id}: {job.branch} is on {target}'s tip ({onto[:12]}) already"
            return action_result(self.store, job, False, message)
        job = self.store.update(
            job_id, base_sha=onto, rebased_onto=onto, rebased_at=utcnow(), head_sha=done.tip,
            commits_ahead=stats.ahead, files_changed=stats.diff.files,
            insertions=stats.diff.insertions, deletions=stats.diff.deletions,
        )  # fmt: skip
        how = {
            "replayed": f"rebased onto {target} ({onto[:12]}): {stats.ahead} commit(s) "
            f"replayed, head {done.tip[:12]}",
            "merged": f"brought onto {target} ({onto[:12]}) by a merge commit {done.tip[:12]} "
            "(its commits conflict one by one, or it held a merge already)",
            "current": f"already holds {target}'s tip ({onto[:12]}); its base recorded",
        }[done.how]
        message = f"job {job_id}: {job.branch} {how}"
        if fetch_note:
            message += f"; {fetch_note}"
        if stats.ahead == 0:
            message += f"; its changes are all in {target} already: nothing left to merge"
        message += self._after_push(job, rewritten=done.how == "replayed" and done.tip != old)
        note_job(self.settings, job_id, message)
        return action_result(self.store, self.store.job(job_id), True, message)

    def _after_push(self, job: Job, *, rewritten: bool) -> str:
        """What a rebase means for the job's pushed branch, said at the end of the answer;
        a job with an open pull request is pushed again (with lease when rewritten)."""
        if job.pushed_remote is None or job.pushed_sha is None:
            return ""
        remote = job.pushed_remote
        if job.pr_url and job.pr_state in _OPEN:
            try:
                self.forges.push_locked(job, remote, force=rewritten)
            except DispatcherError as exc:
                how = " --force-with-lease" if rewritten else ""
                return (
                    f"; pushing it to {remote} for pull request #{job.pr_number} failed "
                    f"({exc.message}); `dispatcher push {job.id}{how}` when that is fixed"
                )
            lease = " with --force-with-lease" if rewritten else ""
            return f"; pushed to {remote}{lease}: pull request #{job.pr_number} shows it"
        if rewritten:
            return (
                f"; it was pushed to {remote} before: its history changed, so the next push "
                f"needs `dispatcher push {job.id} --force-with-lease`"
            )
        return f"; `dispatcher push {job.id}` brings {remote} up to date (a fast-forward)"

    # ------------------------------------------------------------------ conflicts

    def _start_conflict(
        self,
        job: Job,
        repo_path: Path,
        head: str,
        onto: str,
        files: list[str],
        fetch_note: str | None,
    ) -> _Conflicted:
        """Begin the merge of the target in the job's worktree (markers in the files)."""
        assert job.id is not None
        job_id = job.id
        where = f"rebasing job {job_id} onto {job.target_branch} ({onto[:12]}) conflicts in " + (
            ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        )
        worktree = Path(job.worktree) if job.worktree else None
        if worktree is None or not worktrees.is_valid(worktree, repo_path):
            raise MergeConflict(
                f"{where}; the job has no worktree left for a follow-up to resolve them in "
                "(nothing was changed)",
                details={"files": files},
            )
        ident = identity(self.settings.commit_author_name, self.settings.commit_author_email)
        message = (
            f"Merge {job.target_branch} into {job.branch}\n\nDispatcher job {job_id}: "
            f"{git_rebase.MARK} {onto[:12]}, conflicts resolved by the agent.\n"
        )
        in_tree = git_rebase.start_merge(
            worktree, job.branch, head=head, onto=onto, message=message, ident=ident
        )
        note_job(self.settings, job_id, f"{where}; merge started in {worktree} for a follow-up")
        return _Conflicted(in_tree or files, onto, worktree, fetch_note)

    def _follow_up(self, job: Job, conflict: _Conflicted) -> ActionResult:
        """The follow-up that resolves ``conflict``, made under the job's lock (held by
        the caller); the merge is taken back if it cannot be made."""
        assert job.id is not None
        faults.reach("rebase.conflict-started")  # the merge is under way; no follow-up yet
        try:
            made = self.jobs.followup_locked(
                job.id,
                FollowupCreate(prompt=conflict_prompt(job, conflict.files, conflict.onto)),
                rebased_onto=conflict.onto,
            )
        except BaseException:
            git_rebase.abort_merge(conflict.worktree)
            raise
        shown = ", ".join(conflict.files[:10])
        more = f" and {len(conflict.files) - 10} more" if len(conflict.files) > 10 else ""
        message = (
            f"job {job.id}: rebasing onto {job.target_branch} ({conflict.onto[:12]}) conflicts "
            f"in {shown}{more}; follow-up job {made.job.id} resolves them in its worktree "
            "(nothing on the branch changed yet)"
        )
        if conflict.fetch_note:
            message += f"; {conflict.fetch_note}"
        return made.model_copy(update={"message": message})


def conflict_prompt(job: Job, files: list[str], onto: str) -> str:
    """The follow-up's prompt: what is under way, the files, what to do and not do."""
    listed = "\n".join(f"- {path}" for path in files)
    return (
        f"Bring this branch ({job.branch}) up to date with {job.target_branch}: a merge of "
        f"{job.target_branch} (at {onto[:12]}) into it is under way in this worktree and "
        f"stopped at conflicts in these files:\n\n{listed}\n\n"
        "Resolve every conflict: edit each file so that it keeps the intent of both sides "
        "and no conflict markers (<<<<<<<, =======, >>>>>>>) are left, and make sure the "
        "code still works. Then stop: the daemon commits what you leave as the merge on "
        "this branch. Do not run `git merge --abort`, `git reset`, `git rebase` or "
        "`git checkout` of another branch.\n\n"
        f"The job's original task, for context:\n\n{job.prompt.strip()[:4000]}"
    )

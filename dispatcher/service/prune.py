"""Prune: discard finished jobs in bulk and tidy what merged and discarded jobs left.

Never loses work silently:

* by default only failed, canceled and timed-out jobs go, and only those whose branch
  holds no commit beyond their base (counted in git now, not as recorded when the job
  ended: someone may have committed in the worktree since); a job with commits is kept
  and listed, with the ``--state`` that would prune it;
* succeeded jobs, and jobs with commits, go only when their state is asked for;
* queued, preparing and running jobs are never pruned (asking is refused).

A finished job is pruned through :meth:`Control.discard`, the path of ``dispatcher
discard``: its worktree released (uncommitted edits saved to
``refs/dispatcher/released/<id>`` first), its branch deleted, the job moved to
``discarded``. A merged or discarded job can leave its branch (``merge`` keeps it
unless asked; a discard that could not reach the repo): the branch is deleted if it
holds nothing its job did not land, and no unfinished job (a follow-up) uses it.
Worktree directories no job claims go through the sweeper's orphan step (their state
saved to ``refs/dispatcher/orphans/`` first).

Several nodes (docs/cluster.md): a job's branch and worktree are in the clone of the
node that ran it, so its commits can only be counted there. A prune takes this node's
jobs (and those no node ran) itself and asks each other running node to prune its own
(the same request, forwarded: that node prunes only its own jobs); the answers are
one result. The jobs of a node that is not running are kept, and listed as such.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dispatcher.durations import describe_age, parse_duration
from dispatcher.errors import DispatcherError, InvalidInput
from dispatcher.git import refs, worktrees
from dispatcher.jobs.sweeper import Sweeper
from dispatcher.lifecycle import ACTIVE, CLOSED, FINISHED, JobState
from dispatcher.service.control import Control
from dispatcher.store.database import Store
from dispatcher.store.models import Job, PrunedJob, PruneRequest, PruneResult, Repo, utcnow

PRUNED_BY_DEFAULT = frozenset({JobState.FAILED, JobState.CANCELED, JobState.TIMED_OUT})
"""Finished states pruned when no state is asked for (jobs without commits only)."""


@dataclass(frozen=True)
class _Plan:
    """What to do with one picked job."""

    job: Job
    repo: Repo
    commits: int | None
    tip: str | None  # its branch's sha now; None: no branch (or no repository)
    action: str  # "discard", "delete_branch" or "keep"
    reason: str = ""  # why it is kept


@dataclass(eq=False)
class Prune:
    store: Store
    control: Control  # the discard path, with its lock per job
    sweeper: Sweeper  # the orphan step, one sweep at a time
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def run(self, req: PruneRequest, *, now: datetime | None = None) -> PruneResult:
        now = now or utcnow()
        states = _states(req.states)
        explicit = req.states is not None
        min_age = parse_duration(req.older_than) if req.older_than else 0.0
        repos = [self.store.repo_by_name(req.repo)] if req.repo else self.store.repos()
        with self._lock:  # two prunes at once would plan the same jobs
            branches = {r.id: _branches(r) for r in repos}
            elsewhere: dict[str, list[Job]] = {}
            plans = self._plan(repos, branches, states, explicit, min_age, now, elsewhere)
            jobs = [self._carry_out(p, now, dry_run=req.dry_run) for p in plans]
            present = [r for r in repos if branches[r.id] is not None]
            orphans = self._orphans(present, now, dry_run=req.dry_run) if states & CLOSED else []
        for node, held in sorted(elsewhere.items()):
            theirs, their_orphans = self._on_node(node, held, req, now)
            jobs += theirs
            orphans += their_orphans
        jobs.sort(key=lambda j: (j.action == "keep", j.id))
        return PruneResult(
            dry_run=req.dry_run, jobs=jobs, orphans=orphans,
            summary=_summary(jobs, orphans, dry_run=req.dry_run),
        )  # fmt: skip

    # ------------------------------------------------------------ planning

    def _plan(
        self,
        repos: list[Repo],
        branches: dict[int | None, dict[str, str] | None],
        states: frozenset[JobState],
        explicit: bool,
        min_age: float,
        now: datetime,
        elsewhere: dict[str, list[Job]],
    ) -> list[_Plan]:
        """This node's plans; the picked jobs other nodes ran go into ``elsewhere``, by
        node (left out when this prune came from another node: each prunes its own)."""
        by_id = {r.id: r for r in repos}
        peers = self.control.peers
        here = peers.node if peers is not None and peers.enabled else None
        forwarded = peers is not None and peers.is_forwarded()
        nodes: dict[tuple[str | None, int | None], str | None] = {}
        picked = []
        for j in self.store.jobs_in(sorted(states)):
            if j.repo_id not in by_id or _age(j, now) < min_age or j.followed_by is not None:
                continue
            owner = self._owner(j, nodes)
            if forwarded:  # the asking node took its own and those no node ran
                if owner is not None and owner == here:
                    picked.append(j)
            elif owner is None or owner == here:
                picked.append(j)
            else:
                elsewhere.setdefault(owner, []).append(j)
        # Branches an unfinished job still works on (a follow-up shares its parent's).
        unfinished = self.store.jobs_in(sorted(ACTIVE | FINISHED))
        in_use = {(j.repo_id, j.branch) for j in unfinished if j.followed_by is None}
        plans = []
        for job in sorted(picked, key=lambda j: j.id or 0):
            repo = by_id[job.repo_id]
            heads = branches[job.repo_id]
            tip = heads.get(f"refs/heads/{job.branch}") if heads is not None else None
            if job.state in CLOSED and (tip is None or (job.repo_id, job.branch) in in_use):
                continue  # nothing left of it (or not its to delete)
            try:
                if job.state in CLOSED:
                    assert tip is not None
                    plans.append(self._closed(job, repo, tip))
                else:
                    plans.append(_finished(job, repo, tip, heads is not None, explicit))
            except DispatcherError as exc:
                reason = f"cannot tell what its branch holds: {exc.message}"
                plans.append(_Plan(job, repo, None, tip, "keep", reason))
        return plans

    def _owner(self, job: Job, seen: dict[tuple[str | None, int | None], str | None]) -> str | None:
        """The node whose clone has the job's branch (None: SQLite, or no node ran it);
        ``seen``: the answers so far, by the job's node and worker (one read each)."""
        peers = self.control.peers
        if peers is None or not peers.enabled:
            return None
        key = (job.node, job.worker_id)
        if key not in seen:
            seen[key] = peers.node_of(job)
        return seen[key]

    def _on_node(
        self, node: str, held: list[Job], req: PruneRequest, now: datetime
    ) -> tuple[list[PrunedJob], list[str]]:
        """The same prune asked of ``node`` for its jobs: its answer; its jobs kept (and
        said why) when it is not running or does not answer."""
        peers = self.control.peers
        assert peers is not None
        name, holder = peers.reach(node)
        why = f"its node {name or node} ({node}) is not running; prune it there"
        if holder is not None:
            try:
                resp = peers.request(holder, "POST", "/jobs/prune", body=req)
                result = PruneResult.model_validate_json(resp.content)
                return result.jobs, result.orphans
            except DispatcherError as exc:
                why = f"its node {holder.name} did not prune it: {exc.message}"
            except ValueError as exc:  # an answer that is not a prune's
                first = (str(exc).splitlines() or [""])[0]
                why = f"its node {holder.name} answered what is not a prune's result: {first}"
        names = self.store.repo_names(sorted({j.repo_id for j in held}))
        kept = []
        for job in held:
            if job.state in CLOSED:  # merged or discarded: only a leftover branch, there
                continue
            assert job.id is not None
            repo = names.get(job.repo_id, "?")
            item = PrunedJob(
                id=job.id, repo=repo, state=job.state, age_s=round(_age(job, now), 3),
                commits=None, branch=job.branch, action="keep", done=False,
                message=f"job {job.id} ({repo}, {job.state.value}): kept: {why}",
            )  # fmt: skip
            kept.append(item)
        return kept, []

    def _closed(self, job: Job, repo: Repo, tip: str) -> _Plan:
        """A merged or discarded job whose branch is still there."""
        commits = _commits(repo, job, tip)
        if job.state is JobState.DISCARDED and tip not in (job.head_sha, job.base_sha):
            # Not what was discarded: committed to since (or a discard that never reached it).
            reason = f"{job.branch} holds commits made since the job ended; delete it by hand"
            return _Plan(job, repo, commits, tip, "keep", reason)
        if job.state is JobState.MERGED and tip != job.head_sha:
            target = job.merged_into or job.target_branch
            if not refs.is_branch(Path(repo.path), target) or not refs.is_ancestor(
                Path(repo.path), tip, target
            ):
                reason = f"{job.branch} moved since the merge and holds commits {target} lacks"
                return _Plan(job, repo, commits, tip, "keep", reason)
        return _Plan(job, repo, commits, tip, "delete_branch")

    # ------------------------------------------------------------ doing

    def _carry_out(self, plan: _Plan, now: datetime, *, dry_run: bool) -> PrunedJob:
        job = plan.job
        assert job.id is not None
        what = (
            f"job {job.id} ({plan.repo.name}, {job.state.value}, {describe_age(_age(job, now))}"
            f" old, {'? commits' if plan.commits is None else _n(plan.commits, 'commit')})"
        )
        item = PrunedJob(
            id=job.id, repo=plan.repo.name, state=job.state, age_s=round(_age(job, now), 3),
            commits=plan.commits, branch=job.branch, action=plan.action, done=False, message="",
        )  # fmt: skip
        if plan.action == "keep":
            item.message = f"{what}: kept: {plan.reason}"
            return item
        done_text, dry_text = _TEXTS[plan.action]
        if dry_run:
            item.message = f"{what}: {dry_text.format(branch=job.branch)}"
            return item
        try:
            if plan.action == "discard":  # only if its branch is where it was counted
                self.control.discard(job.id, expected_tip=plan.tip)
            else:
                assert plan.tip is not None
                worktrees.delete_branch(Path(plan.repo.path), job.branch, expected=plan.tip)
        except DispatcherError as exc:
            item.message = f"{what}: not pruned: {exc.message}"
            return item
        item.done = True
        item.message = f"{what}: {done_text.format(branch=job.branch)}"
        return item

    def _orphans(self, repos: list[Repo], now: datetime, *, dry_run: bool) -> list[str]:
        if dry_run:
            return [str(p) for r in repos for p in self.sweeper.orphans(r)]
        report = self.sweeper.sweep_orphans(repos, now=now)
        return [str(o.path) for o in report.orphans]


def _finished(job: Job, repo: Repo, tip: str | None, readable: bool, explicit: bool) -> _Plan:
    """A finished job: discarded, unless it has (or may have) commits and its state was
    not asked for. ``readable``: the repo's path holds a repository."""
    # Out of reach: unknown, whatever was recorded (commits may have been made since).
    commits = _commits(repo, job, tip) if readable else None
    if explicit or commits == 0:
        return _Plan(job, repo, commits, tip, "discard")
    if commits is None:
        reason = f"its commits are unknown ({repo.path} holds no repository now)"
    else:
        reason = f"{_n(commits, 'commit')} on {job.branch}"
    return _Plan(
        job, repo, commits, tip, "keep", f"{reason}; `--state {job.state.value}` prunes it"
    )


def _states(asked: list[JobState] | None) -> frozenset[JobState]:
    if asked is None:
        return PRUNED_BY_DEFAULT | CLOSED
    active = sorted(s.value for s in set(asked) & ACTIVE)
    if active:
        raise InvalidInput(
            f"{', '.join(active)} jobs are never pruned: cancel them first "
            f"(prunable states: {', '.join(s.value for s in _PRUNABLE)})"
        )
    return frozenset(asked)


_PRUNABLE = [s for s in JobState if s in FINISHED | CLOSED]
_TEXTS = {  # action: (when done, in a dry run)
    "discard": ("discarded: worktree and branch removed", "would be discarded"),
    "delete_branch": ("branch {branch} deleted", "branch {branch} would be deleted"),
}


def _branches(repo: Repo) -> dict[str, str] | None:
    """The repo's branches now; None when its path no longer holds a repository."""
    try:
        return refs.for_each_ref(Path(repo.path))
    except (DispatcherError, OSError):
        return None


def _commits(repo: Repo, job: Job, tip: str | None) -> int:
    """Commits on the job's branch not in its base (0 without a branch)."""
    if tip is None or tip == job.base_sha:
        return 0
    return refs.branch_stats(Path(repo.path), job.base_sha, tip).ahead


def _age(job: Job, now: datetime) -> float:
    """Seconds since the job reached its state (finished, or closed)."""
    since = (job.closed_at if job.state in CLOSED else None) or job.finished_at or job.created_at
    moment = since.replace(tzinfo=UTC) if since.tzinfo is None else since
    return max(0.0, (now - moment).total_seconds())


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _summary(jobs: list[PrunedJob], orphans: list[str], *, dry_run: bool) -> str:
    pruned = sum(1 for j in jobs if j.action != "keep" and (j.done or dry_run))
    failed = sum(1 for j in jobs if j.action != "keep" and not j.done and not dry_run)
    kept = sum(1 for j in jobs if j.action == "keep")
    parts = [
        f"{'would prune' if dry_run else 'pruned'} {_n(pruned, 'job')}",
        f"{'would remove' if dry_run else 'removed'} {_n(len(orphans), 'orphan worktree')}",
    ]
    if kept:
        parts.append(f"kept {_n(kept, 'job')} (see why above)")
    if failed:
        parts.append(f"{failed} could not be pruned")
    return "; ".join(parts) + (" (dry run: nothing changed)" if dry_run else "")

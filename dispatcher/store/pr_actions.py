"""The rows of the fix loop: what forge deliveries ask of jobs' pull requests.

It shares :class:`~dispatcher.store.database.Store`'s engines and its habit: short
single-writer writes (:mod:`~dispatcher.store.backends`), detached rows returned. An
action moves only through :meth:`PrActionStore.move`, a compare-and-set on its state.

A chain's actions are its root job's node's (docs/cluster.md): the chain's follow-ups
continue in the worktree its root job made there. They have no worker of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from dispatcher.errors import InvalidState, NotFound
from dispatcher.store.database import Store
from dispatcher.store.models import Job, PrAction, utcnow
from dispatcher.store.owners import node_jobs

FIX_KINDS = ("ci_failed", "changes_requested", "comment")
COUNTED = ("started", "running", "done")  # fix actions that ran (or are running) a follow-up
OPEN = ("queued", "started", "running")  # not yet done with


def _owned(node: str | None) -> sa.ColumnElement[bool]:
    """Actions of the chains ``node`` owns: those whose root job it owns (None: all)."""
    if node is None:
        return sa.true()
    return col(PrAction.root_id).in_(select(col(Job.id)).where(node_jobs(node)))


@dataclass(eq=False)
class PrActionStore:
    store: Store

    def add(self, action: PrAction) -> tuple[PrAction, bool]:
        """Record ``action`` unless its delivery was recorded already: (the row, new)."""
        try:
            with self.store.writing() as s:
                s.add(action)
                s.flush()
                return action, True
        except IntegrityError:
            seen = self.by_key(action.dedup_key)
            if seen is None:  # another constraint failed: not ours to hide
                raise
            return seen, False

    def by_key(self, dedup_key: str) -> PrAction | None:
        with self.store.reading() as s:
            return s.exec(select(PrAction).where(PrAction.dedup_key == dedup_key)).first()

    def get(self, action_id: int) -> PrAction:
        with self.store.reading() as s:
            row = s.get(PrAction, action_id)
            if row is None:
                raise NotFound(f"no pull request action with id {action_id}")
            return row

    def move(
        self, action_id: int, expected: str | Sequence[str], state: str, **fields: Any
    ) -> PrAction:
        """Compare-and-set: to ``state`` only from ``expected``; else InvalidState."""
        allowed = [expected] if isinstance(expected, str) else list(expected)
        with self.store.writing() as s:
            row = s.get(PrAction, action_id)
            if row is None:
                raise NotFound(f"no pull request action with id {action_id}")
            if row.state not in allowed:
                raise InvalidState(f"pull request action {action_id} is {row.state}")
            row.state = state
            for key, value in fields.items():
                setattr(row, key, value)
            if state in ("done", "dropped", "gave_up"):
                row.done_at = utcnow()
            s.add(row)
            s.flush()
            return row

    def of_chain(self, root_id: int, states: Sequence[str] | None = None) -> list[PrAction]:
        """The chain's actions, oldest first (``states``: only those)."""
        q = select(PrAction).where(PrAction.root_id == root_id)
        if states is not None:
            q = q.where(col(PrAction.state).in_(list(states)))
        with self.store.reading() as s:
            return list(s.exec(q.order_by(col(PrAction.id))).all())

    def in_state(self, state: str, node: str | None = None) -> list[PrAction]:
        """The actions in ``state``; ``node``: only of the chains that node owns (its root
        job's: :func:`_owned`)."""
        with self.store.reading() as s:
            q = (
                select(PrAction)
                .where(PrAction.state == state, _owned(node))
                .order_by(col(PrAction.id))
            )
            return list(s.exec(q).all())

    def ci_failure(self, root_id: int, sha: str, *, before: int | None = None) -> PrAction | None:
        """The chain's first ``ci_failed`` action about commit ``sha`` not dropped (one red
        commit sends a check run per check, a suite, a workflow run; a pipeline and its
        jobs): the others are its duplicates. ``before``: only one older than that id."""
        q = select(PrAction).where(
            PrAction.root_id == root_id, PrAction.kind == "ci_failed",
            PrAction.head_sha == sha, PrAction.state != "dropped",
        )  # fmt: skip
        if before is not None:
            q = q.where(col(PrAction.id) < before)
        with self.store.reading() as s:
            return s.exec(q.order_by(col(PrAction.id))).first()

    def by_job(self, job_id: int) -> PrAction | None:
        """The fix action whose follow-up ``job_id`` is."""
        with self.store.reading() as s:
            return s.exec(select(PrAction).where(PrAction.job_id == job_id)).first()

    def counts(self, root_id: int) -> tuple[int, int]:
        """(fix follow-ups run, fix actions queued) of the chain."""
        with self.store.reading() as s:
            rows = s.exec(
                select(PrAction.state, func.count())
                .where(PrAction.root_id == root_id, col(PrAction.kind).in_(FIX_KINDS))
                .group_by(col(PrAction.state))
            ).all()
        by_state = dict(rows)
        return sum(by_state.get(x, 0) for x in COUNTED), by_state.get("queued", 0)

    def gave_up(self, root_id: int) -> bool:
        with self.store.reading() as s:
            found = s.exec(
                select(PrAction.id).where(PrAction.root_id == root_id, PrAction.state == "gave_up")
            ).first()
        return found is not None

    def open_roots(self, node: str | None = None) -> list[int]:
        """The chains with an action not yet done with (for the next start); ``node``:
        only those it owns."""
        with self.store.reading() as s:
            rows = s.exec(
                select(PrAction.root_id)
                .where(col(PrAction.state).in_(list(OPEN)), _owned(node))
                .distinct()
                .order_by(col(PrAction.root_id))
            ).all()
        return list(rows)

    def chain_head(self, job_id: int) -> Job:
        """The newest job of ``job_id``'s chain of follow-ups."""
        return self.store.chain(job_id)[-1]

    def chain_root(self, job_id: int) -> int:
        """The first job of ``job_id``'s chain of follow-ups."""
        root = self.store.chain(job_id)[0].id
        assert root is not None
        return root

    def matching_head(
        self, repo_id: int, *, number: int | None, branch: str | None, sha: str | None
    ) -> Job | None:
        """The newest job of the repo at the head of its chain, pushed to a remote (its
        branch is on the forge), whose pull request is ``number``; else (a delivery
        without the number, or a PR the job did not record) whose branch is ``branch``
        or whose last push is ``sha``, but never one that recorded another PR number (a
        fork's pull request from a branch of the same name is not the job's)."""
        base = select(Job).where(
            Job.repo_id == repo_id,
            col(Job.followed_by).is_(None),
            col(Job.pushed_remote).is_not(None),
        )
        with self.store.reading() as s:
            if number is not None:
                found = s.exec(
                    base.where(col(Job.pr_number) == number, col(Job.pr_url).is_not(None)).order_by(
                        col(Job.id).desc()
                    )
                ).first()
                if found is not None:
                    return found
            ways: list[sa.ColumnElement[bool]] = []
            if branch:
                ways.append(col(Job.branch) == branch)
            if sha:
                ways.append(sa.or_(col(Job.pushed_sha) == sha, col(Job.head_sha) == sha))
            if not ways:
                return None
            q = base.where(sa.or_(*ways))
            if number is not None:
                q = q.where(sa.or_(col(Job.pr_number).is_(None), col(Job.pr_number) == number))
            return s.exec(q.order_by(col(Job.id).desc())).first()

"""The teams' rows: teams, tasks (moved by compare-and-set) and messages (leased, acked).

It shares :class:`~dispatcher.store.database.Store`'s engines and its habit:
short writes, each the only writer while it runs, detached rows returned. A task moves only
through :meth:`TeamStore.move_task`, a compare-and-set on its state checked
against :data:`~dispatcher.store.team_models.TASK_TRANSITIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import col, func, select

from dispatcher.errors import InvalidState, NotFound
from dispatcher.store.database import Store
from dispatcher.store.models import Job, utcnow
from dispatcher.store.owners import node_teams
from dispatcher.store.team_models import (
    TaskState,
    Team,
    TeamMessage,
    TeamTask,
    task_transition,
)


@dataclass(eq=False)
class TeamStore:
    store: Store

    # ------------------------------------------------------------ teams

    def add_team(self, team: Team, *, branch_for: Callable[[int], str]) -> Team:
        """Insert ``team`` and name its integration branch from its new id."""
        with self.store.writing() as s:
            s.add(team)
            s.flush()
            assert team.id is not None
            team.branch = branch_for(team.id)
            s.add(team)
            s.flush()
            return team

    def team(self, team_id: int) -> Team:
        with self.store.reading() as s:
            team = s.get(Team, team_id)
            if team is None:
                raise NotFound(f"no team with id {team_id}; see `dispatcher team list`")
            return team

    def teams(self, repo_id: int | None = None, node: str | None = None) -> list[Team]:
        """Newest first; ``node``: only that node's
        (:func:`~dispatcher.store.owners.node_teams`)."""
        q = select(Team).where(node_teams(node)).order_by(col(Team.id).desc())
        if repo_id is not None:
            q = q.where(Team.repo_id == repo_id)
        with self.store.reading() as s:
            return list(s.exec(q).all())

    def update_team(self, team_id: int, **fields: Any) -> Team:
        with self.store.writing() as s:
            team = s.get(Team, team_id)
            if team is None:
                raise NotFound(f"no team with id {team_id}")
            return _set(s, team, fields)

    def team_of_lead(self, job_id: int) -> Team | None:
        with self.store.reading() as s:
            return s.exec(select(Team).where(Team.lead_job_id == job_id)).first()

    # ------------------------------------------------------------ tasks

    def add_task(self, task: TeamTask, check: Callable[[list[TeamTask]], None]) -> TeamTask:
        """Insert ``task`` after ``check`` passed on the team's tasks as they are inside
        this write (no task added meanwhile can slip past it)."""
        with self.store.writing() as s:
            check(list(s.exec(select(TeamTask).where(TeamTask.team_id == task.team_id)).all()))
            s.add(task)
            s.flush()
            return task

    def set_blockers(
        self, task_id: int, blocked_by: list[int], check: Callable[[list[TeamTask]], None]
    ) -> TeamTask:
        """Give a waiting task new blockers, after ``check`` passed on the team's tasks
        with the change made (inside this write)."""
        with self.store.writing() as s:
            task = _get_task(s, task_id)
            if task.state is not TaskState.WAITING:
                raise InvalidState(
                    f"task {task_id} is {task.state.value}; only a waiting task's blockers change"
                )
            tasks = list(s.exec(select(TeamTask).where(TeamTask.team_id == task.team_id)).all())
            task.blocked_by = list(blocked_by)
            check(tasks)
            s.add(task)
            s.flush()
            return task

    def task(self, task_id: int) -> TeamTask:
        with self.store.reading() as s:
            return _get_task(s, task_id)

    def tasks(self, team_id: int) -> list[TeamTask]:
        with self.store.reading() as s:
            q = select(TeamTask).where(TeamTask.team_id == team_id).order_by(col(TeamTask.id))
            return list(s.exec(q).all())

    def move_task(
        self, task_id: int, expected: TaskState | set[TaskState], target: TaskState, **fields: Any
    ) -> TeamTask:
        """Compare-and-set: move the task to ``target`` only if it is in ``expected``
        (InvalidState naming its state when not)."""
        allowed = {expected} if isinstance(expected, TaskState) else set(expected)
        with self.store.writing() as s:
            task = _get_task(s, task_id)
            if task.state not in allowed:
                raise InvalidState(
                    f"task {task_id} is {task.state.value}, not "
                    + " or ".join(sorted(a.value for a in allowed)),
                    details={"state": task.state.value},
                )
            task_transition(task.state, target)
            return _set(s, task, {"state": target, **fields})

    def update_task(self, task_id: int, **fields: Any) -> TeamTask:
        assert "state" not in fields, "state changes go through move_task()"
        with self.store.writing() as s:
            return _set(s, _get_task(s, task_id), fields)

    def newest_job_of_task(self, task_id: int) -> Job | None:
        """The task's newest job (a restart finds the job a ``starting`` task made)."""
        with self.store.reading() as s:
            q = select(Job).where(Job.task_id == task_id).order_by(col(Job.id).desc())
            return s.exec(q).first()

    def team_jobs(self, team_id: int) -> list[Job]:
        with self.store.reading() as s:
            q = select(Job).where(Job.team_id == team_id).order_by(col(Job.id))
            return list(s.exec(q).all())

    def children(self, team_id: int) -> list[Job]:
        """The jobs the team's jobs created through MCP (``parent_id``), and the jobs
        those created, and so on: not the team's own (they have no ``team_id``) but
        counted in its cost and max-parallel and canceled by its shutdown."""
        found: list[Job] = []
        with self.store.reading() as s:
            seen = set(s.exec(select(Job.id).where(Job.team_id == team_id)).all())
            frontier = set(seen)
            while frontier:
                q = select(Job).where(
                    col(Job.parent_id).in_(sorted(frontier)), col(Job.team_id).is_(None)
                )
                rows = [j for j in s.exec(q).all() if j.id not in seen]
                found.extend(rows)
                frontier = {j.id for j in rows}
                seen |= frontier
        return sorted(found, key=lambda j: j.id or 0)

    def team_of_job(self, job: Job) -> int | None:
        """The team ``job`` works for: its own ``team_id``, or that of the job whose
        ``parent_id`` chain it descends from (None: no team's)."""
        seen: set[int] = set()
        with self.store.reading() as s:
            while job.team_id is None:
                if job.parent_id is None or job.parent_id in seen:
                    return None
                seen.add(job.parent_id)
                parent = s.get(Job, job.parent_id)
                if parent is None:
                    return None
                job = parent
            return job.team_id

    def team_cost(self, team_id: int) -> float:
        """The reported cost of every job of the team (lead and members) and of every
        job they created (:meth:`children`)."""
        with self.store.reading() as s:
            total = s.exec(
                select(func.sum(Job.cost_usd)).where(
                    Job.team_id == team_id, col(Job.cost_usd).is_not(None)
                )
            ).one()
        return float(total or 0.0) + sum(j.cost_usd or 0.0 for j in self.children(team_id))

    # ------------------------------------------------------------ messages

    def add_messages(self, rows: Sequence[TeamMessage]) -> list[TeamMessage]:
        """Store messages (a broadcast's rows together, in one transaction)."""
        with self.store.writing() as s:
            for row in rows:
                s.add(row)
            s.flush()
            return list(rows)

    def take_messages(
        self, team_id: int, recipient: str, limit: int, *, ack: int | None, lease_s: float
    ) -> tuple[list[TeamMessage], datetime | None]:
        """In one write: confirm (mark delivered) the recipient's messages handed out with
        an id up to ``ack``, then lease the next ones to this read for ``lease_s``.

        Only a run from the oldest undelivered message is handed out, and it stops at
        one leased to an earlier read or a prompt, so the order holds and an ``ack``
        confirms only what was handed out. Returns the rows and, when a read's lease
        held the run back, when it ends (a waiting read takes again then)."""
        with self.store.writing() as s:
            now = utcnow()
            if ack is not None:
                s.exec(
                    sa.update(TeamMessage)
                    .where(
                        col(TeamMessage.team_id) == team_id,
                        col(TeamMessage.recipient) == recipient,
                        col(TeamMessage.id) <= ack,
                        col(TeamMessage.delivered_at).is_(None),
                        col(TeamMessage.leased_to) == "read",
                    )
                    .values(delivered_at=now)
                    .execution_options(synchronize_session=False)
                )
            if limit <= 0:
                return [], None
            rows, held = _free_run(s.exec(_undelivered(team_id, recipient, limit)).all(), now)
            _lease(s, rows, "read", now + timedelta(seconds=lease_s))
            return rows, held

    def lease_for_prompt(self, team_id: int, recipient: str, limit: int) -> list[TeamMessage]:
        """The recipient's oldest undelivered messages, leased to a prompt (no read takes
        them): the ones a prompt leased before (a launch a crash cut short) and the run
        after them. :meth:`delivered` confirms them once that prompt's job exists."""
        with self.store.writing() as s:
            rows, _ = _free_run(
                s.exec(_undelivered(team_id, recipient, limit)).all(), utcnow(), prompt=True
            )
            _lease(s, rows, "prompt", None)
            return rows

    def delivered(self, rows: Sequence[TeamMessage]) -> None:
        """Confirm messages a prompt holds (its job is made)."""
        if not rows:
            return
        with self.store.writing() as s:
            _mark_delivered(s, [r.id for r in rows if r.id is not None])

    def release_prompt(self, team_id: int, recipient: str) -> None:
        """Free what a prompt of ``recipient`` holds (its job could not be made)."""
        with self.store.writing() as s:
            s.exec(
                sa.update(TeamMessage)
                .where(
                    col(TeamMessage.team_id) == team_id,
                    col(TeamMessage.recipient) == recipient,
                    col(TeamMessage.delivered_at).is_(None),
                    col(TeamMessage.leased_to) == "prompt",
                )
                .values(leased_to=None, leased_until=None)
                .execution_options(synchronize_session=False)
            )

    def prompt_held(self, team_id: int) -> list[TeamMessage]:
        """The team's undelivered messages a prompt holds, oldest first (at a restart:
        what launches and follow-ups a crash cut short were putting into prompts)."""
        with self.store.reading() as s:
            q = (
                select(TeamMessage)
                .where(
                    TeamMessage.team_id == team_id,
                    col(TeamMessage.delivered_at).is_(None),
                    col(TeamMessage.leased_to) == "prompt",
                )
                .order_by(col(TeamMessage.id))
            )
            return list(s.exec(q).all())

    def delivered_ids(self, ids: Sequence[int]) -> None:
        """Confirm these messages (a restart found them in the prompt of a job)."""
        with self.store.writing() as s:
            _mark_delivered(s, ids)

    def prompt_delivered(self, team_id: int, recipient: str) -> None:
        """Confirm every message a prompt of ``recipient`` holds (a restart found the job
        that prompt made)."""
        with self.store.writing() as s:
            ids = s.exec(
                select(TeamMessage.id).where(
                    TeamMessage.team_id == team_id,
                    TeamMessage.recipient == recipient,
                    col(TeamMessage.delivered_at).is_(None),
                    col(TeamMessage.leased_to) == "prompt",
                )
            ).all()
            _mark_delivered(s, [i for i in ids if i is not None])

    def messages(self, team_id: int, limit: int = 200) -> list[TeamMessage]:
        """The team's messages, newest last (delivered or not): `team show`'s log."""
        with self.store.reading() as s:
            q = (
                select(TeamMessage)
                .where(TeamMessage.team_id == team_id)
                .order_by(col(TeamMessage.id).desc())
                .limit(limit)
            )
            return list(reversed(s.exec(q).all()))


def _undelivered(team_id: int, recipient: str, limit: int) -> Any:
    return (
        select(TeamMessage)
        .where(
            TeamMessage.team_id == team_id,
            TeamMessage.recipient == recipient,
            col(TeamMessage.delivered_at).is_(None),
        )
        .order_by(col(TeamMessage.id))
        .limit(limit)
    )


def _free_run(
    rows: Sequence[TeamMessage], now: datetime, *, prompt: bool = False
) -> tuple[list[TeamMessage], datetime | None]:
    """The leading rows no one holds (a read's lease ended, or, for a prompt, a prompt
    holds), and when the read's lease that stopped the run ends (None: none did)."""
    free: list[TeamMessage] = []
    for row in rows:
        if row.leased_to == "prompt" and not prompt:
            return free, None
        if row.leased_to == "read" and row.leased_until is not None and row.leased_until > now:
            return free, row.leased_until
        free.append(row)
    return free, None


def _lease(s: Any, rows: Sequence[TeamMessage], to: str, until: datetime | None) -> None:
    for row in rows:
        row.leased_to, row.leased_until = to, until
        s.add(row)
    s.flush()


def _mark_delivered(s: Any, ids: Sequence[int]) -> None:
    if not ids:
        return
    s.exec(
        sa.update(TeamMessage)
        .where(col(TeamMessage.id).in_(list(ids)), col(TeamMessage.delivered_at).is_(None))
        .values(delivered_at=utcnow())
        .execution_options(synchronize_session=False)
    )


_Row = TypeVar("_Row", Team, TeamTask)


def _set(s: Any, row: _Row, fields: dict[str, Any]) -> _Row:
    """Set ``fields`` on ``row`` and write it (inside the caller's transaction)."""
    for key, value in fields.items():
        setattr(row, key, value)
    s.add(row)
    s.flush()
    return row


def _get_task(s: Any, task_id: int) -> TeamTask:
    task = s.get(TeamTask, task_id)
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    assert isinstance(task, TeamTask)
    return task

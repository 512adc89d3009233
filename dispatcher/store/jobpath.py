"""The statements on a job's path from submit to end, in SQLAlchemy Core.

A trivial job's store work is its insert, its claim, its move to ``running`` and its
end. Those run here as Core statements on a bare :class:`~sqlalchemy.Connection` (no ORM
session, unit of work or flush), built once with bound parameters so that each call
only binds values and finds its compiled form in the engine's cache; the claim's rows
come back from its ``UPDATE ... RETURNING`` and are made :class:`Job` objects the way the
ORM loads them (detached, as a closed session's are), without the model's validation.
The ORM's spelling of the same calls cost about three times the CPU (measured:
``README.md``, "The store on a job's path").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.base import manager_of_class

from dispatcher.errors import InvalidState, NotFound
from dispatcher.lifecycle import JobState
from dispatcher.store.models import Clone, Job, Worker
from dispatcher.store.owners import Guard, taken_over

JOB: sa.Table = Job.__table__  # type: ignore[attr-defined]
CLONE: sa.Table = Clone.__table__  # type: ignore[attr-defined]
WORKER: sa.Table = Worker.__table__  # type: ignore[attr-defined]
_MANAGER = manager_of_class(Job)
_BUSY = (JobState.PREPARING, JobState.RUNNING)


@cache
def busy_and_queued(nodeless: bool) -> sa.CompoundSelect[Any]:
    """The claim's one read of where things stand: every preparing or running job's
    repo, concurrency group and port, and whether this node runs it (``True``: a handful
    of rows, at most max-parallel per node), and each repo with queued jobs that the node
    (``node``; ``nodeless``: the clones with no node) has a clone of (``False``: a walk of
    the (state, repo_id, id) index). A busy job counts against this node's slots when a
    worker of this node holds it (or none does: a row from before workers)."""
    node: sa.ColumnElement[bool]
    if nodeless:
        node = CLONE.c.node.is_(None)
        mine: sa.ColumnElement[Any] = sa.literal(True)
    else:
        node = CLONE.c.node == sa.bindparam("node")
        held_here = sa.select(WORKER.c.id).where(WORKER.c.node == sa.bindparam("node"))
        mine = sa.or_(JOB.c.worker_id.is_(None), JOB.c.worker_id.in_(held_here))
    cloned = sa.select(CLONE.c.repo_id).where(node)
    queued = [JOB.c.state == JobState.QUEUED, JOB.c.repo_id.in_(cloned)]
    if not nodeless:
        queued.append(_for_node())
    return sa.union_all(
        sa.select(
            JOB.c.repo_id,
            JOB.c.concurrency_group,
            JOB.c.port,
            sa.literal(True),
            sa.cast(mine, sa.Boolean),
        ).where(JOB.c.state.in_(_BUSY)),
        sa.select(
            JOB.c.repo_id,
            sa.cast(sa.null(), JOB.c.concurrency_group.type),  # PostgreSQL's NULL is text
            sa.cast(sa.null(), JOB.c.port.type),
            sa.literal(False),
            sa.literal(False),
        )
        .where(*queued)
        .distinct(),
    )


_STATE_OF = sa.select(JOB.c.state, JOB.c.worker_id, JOB.c.attempt).where(
    JOB.c.id == sa.bindparam("job_id")
)

_INSERT = sa.insert(JOB).returning(JOB.c.id)
_SET_BRANCH = (
    sa.update(JOB).where(JOB.c.id == sa.bindparam("job_id")).values(branch=sa.bindparam("v_branch"))
)
_INSERTED = tuple(c.name for c in JOB.c if c.name != "id")


def detached(job: Job) -> Job:
    """``job``, written by a Core statement (no session saw it), made detached as a
    closed session's objects are: a later session treats it as the stored row."""
    make_transient_to_detached(job)
    return job


def job_from_row(row: sa.Row[Any]) -> Job:
    """A :class:`Job` from a full row, made as the ORM loads one (no validation) and
    detached (as a closed session's objects are)."""
    job: Job = _MANAGER.new_instance()
    job.__dict__.update(row._mapping)  # a Job's attributes are named as its columns
    return detached(job)


def _for_node() -> sa.ColumnElement[bool]:
    """A queued job this node (``node``) may run: one pinned to no node or to it."""
    return sa.or_(JOB.c.node.is_(None), JOB.c.node == sa.bindparam("node"))


@cache
def candidates(grouped: bool, nodeless: bool = True) -> sa.Select[Any]:
    """A repo's oldest claimable queued jobs (``repo``, ``now``, ``n``; ``groups``: the
    busy concurrency groups to skip, when ``grouped``; unless ``nodeless``, only those
    ``node`` may run): an index range scan on (state, repo_id, id)."""
    where = [
        JOB.c.state == JobState.QUEUED,
        JOB.c.repo_id == sa.bindparam("repo"),
        # A re-queued job waits out its backoff.
        sa.or_(JOB.c.not_before.is_(None), JOB.c.not_before <= sa.bindparam("now")),
    ]
    if not nodeless:
        where.append(_for_node())
    if grouped:
        where.append(
            sa.or_(
                JOB.c.concurrency_group.is_(None),
                JOB.c.concurrency_group.not_in(sa.bindparam("groups", expanding=True)),
            )
        )
    return (
        sa.select(JOB.c.id, JOB.c.concurrency_group)
        .where(*where)
        .order_by(JOB.c.id)
        .limit(sa.bindparam("n"))
    )


@dataclass(frozen=True)
class StartBlocks:
    """What the runner has the claim give each job it takes, in the claim's own write:
    the first block of ``block`` ports in ``[base, base + count)`` that no preparing or
    running job holds and whose first port ``usable`` says is free on the machine (None
    when every block is taken), and its spawn's nonce (see :mod:`dispatcher.jobs.recovery`)."""

    base: int
    count: int
    block: int
    usable: Callable[[int], bool]

    def first_free(self, held: set[int]) -> int | None:
        """The first free block's first port, now held (in ``held``); None if none is."""
        for first in range(self.base, self.base + self.count - self.block + 1, self.block):
            if first not in held and self.usable(first):
                held.add(first)
                return first
        return None


@cache
def _claim_update(n: int, target: JobState, start: bool, worker: bool) -> sa.Update:
    now = sa.bindparam("now", type_=JOB.c.claimed_at.type)
    values: dict[str, Any] = {"state": target, "claimed_at": now}
    if worker:
        values["worker_id"] = sa.bindparam("worker", type_=JOB.c.worker_id.type)
    if start:  # each job's own port and nonce: ``port_i``/``nonce_i`` for ``id_i``
        for name, column in (("port", JOB.c.port), ("nonce", JOB.c.spawn_nonce)):
            whens: list[tuple[sa.ColumnElement[bool], Any]] = [
                (JOB.c.id == sa.bindparam(f"id_{i}"), sa.bindparam(f"{name}_{i}", column.type))
                for i in range(n)
            ]
            values[column.name] = sa.case(*whens, else_=sa.null())
    return (
        sa.update(JOB)
        .where(JOB.c.id.in_(sa.bindparam("ids", expanding=True)), JOB.c.state == JobState.QUEUED)
        .values(values)
        .returning(*JOB.c)
    )


def claim(
    conn: sa.Connection,
    chosen: list[int],
    target: JobState,
    now: Any,
    ports: Mapping[int, int | None] | None,
    worker_id: int | None = None,
) -> list[Job]:
    """Move ``chosen`` from ``queued`` to ``target`` (the WHERE on the state is the
    compare-and-set), with their ports and fresh spawn nonces when ``ports`` is given,
    and the claiming worker's id when ``worker_id`` is, and return the rows as moved
    (one ``UPDATE ... RETURNING``, compiled once for each number of jobs)."""
    params: dict[str, Any] = {"ids": chosen, "now": now}
    if worker_id is not None:
        params["worker"] = worker_id
    if ports is not None:
        for i, job_id in enumerate(chosen):
            params[f"id_{i}"] = job_id
            params[f"port_{i}"] = ports[job_id]
            params[f"nonce_{i}"] = secrets.token_hex(6)
    statement = _claim_update(len(chosen), target, ports is not None, worker_id is not None)
    return [job_from_row(row) for row in conn.execute(statement, params)]


def insert_job(conn: sa.Connection, job: Job, branch_for: Callable[[int], str]) -> None:
    """Insert ``job`` and name its branch from its new id (two statements, in the caller's
    transaction); ``job`` gets both."""
    params = {name: getattr(job, name) for name in _INSERTED}
    job_id = conn.execute(_INSERT, params).scalar_one()
    branch = branch_for(job_id)
    conn.execute(_SET_BRANCH, {"job_id": job_id, "v_branch": branch})
    job.id, job.branch = job_id, branch


@cache
def _advance(names: tuple[str, ...], guarded: bool) -> sa.Update:
    where = [JOB.c.id == sa.bindparam("job_id"), JOB.c.state == sa.bindparam("expected")]
    if guarded:  # the claim's worker and attempt (docs/cluster.md, step 4)
        worker = sa.bindparam("g_worker", type_=JOB.c.worker_id.type)
        where += [
            JOB.c.worker_id.is_not_distinct_from(worker),
            JOB.c.attempt == sa.bindparam("g_attempt"),
        ]
    return (
        sa.update(JOB)
        .where(*where)
        .values({name: sa.bindparam(f"v_{name}") for name in names})
        .returning(JOB.c.cancel_requested)
    )


def advance(
    conn: sa.Connection,
    job_id: int,
    expected: JobState,
    fields: Mapping[str, Any],
    guard: Guard | None = None,
) -> bool:
    """Write ``fields`` on the job if it is in ``expected`` and, with ``guard``, still
    that claim's (one ``UPDATE ... RETURNING``), and return its ``cancel_requested``;
    NotFound, TakenOver (another worker or attempt holds it) or InvalidState (naming the
    actual state) when no row matched."""
    names = tuple(sorted(fields))
    params: dict[str, Any] = {f"v_{name}": fields[name] for name in names}
    if guard is not None:
        params.update(g_worker=guard.worker_id, g_attempt=guard.attempt)
    statement = _advance(names, guard is not None)
    row = conn.execute(statement, {"job_id": job_id, "expected": expected, **params}).first()
    if row is not None:
        return bool(row[0])
    found = conn.execute(_STATE_OF, {"job_id": job_id}).first()
    if found is None:
        raise NotFound(f"no job with id {job_id}")
    actual, worker_id, attempt = found
    if guard is not None and not guard.holds(worker_id, attempt):
        raise taken_over(job_id, guard, worker_id, attempt)
    state = JobState(actual).value
    raise InvalidState(f"job {job_id} is {state}, not {expected.value}", details={"state": state})

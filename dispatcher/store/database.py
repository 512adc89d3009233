"""The database: engines, migrations, queries, state changes and job claiming.

Written once for SQLite and PostgreSQL; what differs between them (connections,
the single writer, migrations' table copies, a few SQL spellings) is the
:class:`~dispatcher.store.backends.Backend` the URL picks. Reads see one snapshot
and take no lock; every write is a short transaction that is the only writer while
it runs (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's writer lock), so writers queue
instead of failing half-way (datasette's single-writer habit). Every state change is
a compare-and-set on the current state, checked against the transition table
(:func:`dispatcher.lifecycle.transition`), so two actors can never both move a
job: one job at a time in :meth:`Store.move`, the claimed jobs in one statement
in :meth:`Store.claim`.

The database is created and upgraded by Alembic (:func:`migrate`) from the
migrations shipped inside the package.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from dispatcher import faults
from dispatcher.errors import AlreadyExists, IdempotencyKeyReused, InvalidState, NotFound
from dispatcher.lifecycle import ACTIVE, FINISHED, IN_INBOX, JobState, transition
from dispatcher.store import jobpath, revision, sqlite_head
from dispatcher.store import team_models as _team_models  # noqa: F401  (their tables)
from dispatcher.store.backends import Backend, Hold, backend_for
from dispatcher.store.jobpath import StartBlocks
from dispatcher.store.models import (
    Clone,
    Delivery,
    Event,
    IdempotencyKey,
    IdempotentRequest,
    Issue,
    Job,
    PrAction,
    Repo,
    Worker,
    utcnow,
)
from dispatcher.store.owners import Guard, node_jobs, taken_over
from dispatcher.store.repochanges import CHANNEL, QUEUED_CHANNEL, RepoChanges

log = logging.getLogger(__name__)


def database_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is the database going away under a transaction (a dropped
    connection, a server restarting) rather than anything the statement did: what was
    being written was rolled back, or (lost at its commit) may have landed."""
    return isinstance(exc, sa.exc.DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError)
    )


# The server's answers that mean "not now" (shutting down, starting up, crashed).
_NOT_NOW = frozenset({"57P01", "57P02", "57P03", "08000", "08001", "08003", "08006"})
# What libpq says (a failed connect has no SQLSTATE) when the server answered and will
# answer the same again: no such database or role, credentials or rules that refuse.
_FOR_GOOD = ("does not exist", "authentication failed", "pg_hba.conf", "permission denied",
             "invalid connection option", "invalid dsn", "invalid integer value")  # fmt: skip


def _unreachable(exc: sa.exc.DBAPIError) -> bool:
    """Whether a failed connect is the server being away (tried again), not refused for
    a reason that stays (bad credentials, no such database: failed at once)."""
    state = getattr(exc.orig, "sqlstate", None)
    if state is not None:
        return state in _NOT_NOW
    text = str(exc.orig if exc.orig is not None else exc)
    return not any(reason in text for reason in _FOR_GOOD)


def first_line(exc: BaseException) -> str:
    """The driver's own message, first line (SQLAlchemy's adds the statement and a link)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def migrations_dir() -> Path:
    """Alembic's script directory: inside the installed wheel, or the source tree's."""
    packaged = Path(str(resources.files("dispatcher"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def migrate(url: str, *, recorded: bool = True) -> None:
    """Upgrade the database at ``url`` to the newest schema (creating it if empty).

    In one write transaction of the store's (the writer lock: two daemons starting on
    one PostgreSQL database migrate one after the other). A database that already
    records the scripts' head is left as it is without loading Alembic
    (:mod:`dispatcher.store.revision`): its version row is written only by a finished
    upgrade's commit. An empty SQLite database is given the chain's recorded result
    (:mod:`dispatcher.store.sqlite_head`) when that is of the head, unless not
    ``recorded``: then Alembic runs the chain (``scripts/sqlite-head``, tests)."""
    backend = backend_for(url)
    engine = backend.engine(write=True, migrating=True)
    try:
        scripts = migrations_dir()
        head = revision.head_revision(scripts)
        with engine.connect() as conn:  # a restart: nothing to do, and Alembic not loaded
            if revision.at_head(conn, head):
                return
        sqlite = recorded and backend.name == "sqlite"
        made_by = sqlite_head.statements(scripts, head) if sqlite else None
        if made_by is not None:  # a new SQLite database: the chain's result at once
            with engine.begin() as conn:
                if sqlite_head.make(conn, made_by):
                    return
        from alembic import command
        from alembic.config import Config

        with engine.connect() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(scripts))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()


_Row = TypeVar("_Row", Job, Repo)
_Table = TypeVar("_Table", Job, Repo, Event, Issue, Worker)


def _get(s: Session, table: type[_Table], row_id: int) -> _Table:
    """The row with ``row_id``, or NotFound ("no job with id 7")."""
    row = s.get(table, row_id)
    if row is None:
        raise NotFound(f"no {table.__name__.lower()} with id {row_id}")
    return row


def _get_job(s: Session, job_id: int) -> Job:
    return _get(s, Job, job_id)


def _check_guard(job: Job, guard: Guard | None) -> None:
    """Inside the caller's write: raise TakenOver unless ``job`` is ``guard``'s claim."""
    if guard is not None and not guard.holds(job.worker_id, job.attempt):
        assert job.id is not None
        raise taken_over(job.id, guard, job.worker_id, job.attempt)


def _save(s: Session, row: _Row, fields: dict[str, Any]) -> _Row:
    """Set ``fields`` on ``row`` and write it (inside the caller's transaction)."""
    for key, value in fields.items():
        setattr(row, key, value)
    s.add(row)
    s.flush()  # no refresh: no column has a value only the database computes
    return row


class AlreadyMade(Exception):
    """The ``Idempotency-Key`` of a creating write already made ``resource_id``
    (a request that raced this one, or one the daemon stopped before answering);
    nothing was written."""

    def __init__(self, resource_id: int) -> None:
        super().__init__(resource_id)
        self.resource_id = resource_id


def _idempotent_row(s: Session, idem: IdempotencyKey) -> IdempotentRequest | None:
    """The live row of ``idem`` (an expired one is deleted, inside the caller's write)."""
    row = s.get(IdempotentRequest, (idem.key, idem.method, idem.path))
    if row is not None and row.created_at < idem.not_before:
        s.delete(row)
        s.flush()
        return None
    return row


def _check_key(s: Session, idem: IdempotencyKey | None, kind: str) -> None:
    """Inside a creating write: raise :class:`AlreadyMade` if ``idem`` made its
    ``kind`` resource already (or refuse a key used for something else)."""
    if idem is None:
        return
    row = _idempotent_row(s, idem)
    if row is None:
        return
    if row.resource_kind == kind and row.resource_id is not None:
        if row.request_hash != idem.request_hash:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        raise AlreadyMade(row.resource_id)
    raise IdempotencyKeyReused("this Idempotency-Key was already used")


def _record_key(s: Session, idem: IdempotencyKey | None, kind: str, resource_id: int) -> None:
    """Inside the creating write: ``idem`` made ``resource_id``; no answer yet."""
    if idem is not None:
        s.add(
            IdempotentRequest(
                key=idem.key, method=idem.method, path=idem.path,
                request_hash=idem.request_hash, resource_kind=kind, resource_id=resource_id,
            )
        )  # fmt: skip
        s.flush()


def _name_taken(named: Repo, new: Repo, *, mine: bool) -> str:
    """Why ``new`` cannot be registered under the name of ``named`` (one line)."""
    if mine:
        return f"a repo named {named.name!r} is already registered on this node; pass --name"
    if named.remote_key is None or new.remote_key is None:
        return (
            f"a repo named {named.name!r} is already registered (with no remote to match"
            " clones by); pass --name"
        )
    return (
        f"a repo named {named.name!r} is already registered for another remote"
        f" ({named.remote_key}, not {new.remote_key}); pass --name"
    )


@dataclass(frozen=True)
class Claimed:
    """A job just claimed: its row as moved to ``preparing``, and its repo's."""

    job: Job
    repo: Repo

    @property
    def job_id(self) -> int:
        assert self.job.id is not None
        return self.job.id

    @property
    def repo_id(self) -> int:
        return self.job.repo_id


def _job_id(claimed: Claimed) -> int:
    return claimed.job_id


@dataclass(frozen=True)
class ClaimPass:
    """What one claim took, and whether queued jobs were left (that a slot freed
    later, a group's job ending or time passing may let run)."""

    claimed: list[Claimed]
    waiting: bool


class Transactions:
    """How many read and write transactions a :class:`Store` has run (a session or,
    on the job path, a bare connection each): the round trips per job that tests bound
    and ``/metrics`` shows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0
        self.writes = 0

    def count(self, *, write: bool) -> None:
        with self._lock:
            if write:
                self.writes += 1
            else:
                self.reads += 1

    def total(self) -> int:
        with self._lock:
            return self.reads + self.writes


class Store:
    """All database access. Sessions are short; objects are returned detached."""

    def __init__(self, url: str, *, node: str | None = None) -> None:
        self.url = url
        # This daemon's node (dispatcher/cluster/node.py): the repos it sees are those it
        # has a clone of, each with its clone's path. None: the clones with no node (a
        # store not run by a daemon, and clones from before migration 0022).
        self.node = node
        self.backend: Backend = backend_for(url)
        self._read = self.backend.engine(write=False)
        self._write = self.backend.engine(write=True)
        self._hold: Hold | None = None
        self.transactions = Transactions()
        # Every repo row, read once and kept until this store writes a repo (the
        # daemon is the only writer: see docs/design.md, "The store's round trips").
        self._repos_lock = threading.Lock()
        self._repos: list[Repo] | None = None
        self._repos_generation = 0
        self._changes: RepoChanges | None = None

    def hold_database(self) -> None:
        """Hold the database for this daemon's node until :meth:`close` (DispatcherError
        if another daemon of the node has it): see
        :meth:`~dispatcher.store.backends.Backend.hold`."""
        self._hold = self.backend.hold(self.node)

    def check_hold(self) -> bool:
        """Whether this daemon still holds its database (True without a hold); a hold
        whose connection the server dropped is taken again (see
        :meth:`~dispatcher.store.backends.Hold.check`)."""
        return self._hold.check() if self._hold is not None else True

    def close(self) -> None:
        if self._changes is not None:
            self._changes.stop()
            self._changes = None
        if self._hold is not None:
            self._hold.release()
            self._hold = None
        self._read.dispose()
        self._write.dispose()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        self.transactions.count(write=False)
        with self._connect(self._read) as conn, Session(conn, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One write transaction, the only writer while it runs (``BEGIN IMMEDIATE``;
        PostgreSQL's writer lock), committed on success."""
        self.transactions.count(write=True)
        with (
            self._connect(self._write) as conn,
            Session(conn, expire_on_commit=False) as session,
            session.begin(),
        ):
            faults.reach("store.in-write")  # a test drops the connection here
            yield session

    @contextmanager
    def connecting(self) -> Iterator[sa.Connection]:
        """:meth:`writing` on a bare connection, for Core statements (the job path's:
        :mod:`~dispatcher.store.jobpath`): the same transaction, without a session."""
        self.transactions.count(write=True)
        with self._connect(self._write) as conn, conn.begin():
            faults.reach("store.in-write")
            yield conn

    def _connect(self, engine: sa.Engine) -> sa.Connection:
        """A connection of ``engine``'s, made before any statement: while the server
        cannot be reached (PostgreSQL restarting) it is tried again, for up to the
        backend's ``reconnect_s``, so a transaction is never begun on a connection that is
        not there. Nothing has been sent yet, so trying again cannot apply anything twice;
        a connection lost in the middle of a transaction still fails it."""
        deadline: float | None = None
        pause = 0.05
        while True:
            try:
                return engine.connect()
            except sa.exc.OperationalError as exc:
                now = time.monotonic()
                if deadline is None:
                    if self.backend.reconnect_s <= 0 or not _unreachable(exc):
                        raise  # a wrong password or database name will not mend
                    deadline = now + self.backend.reconnect_s
                    log.warning(
                        "the database cannot be reached (%s); trying again for up to %.0f s",
                        first_line(exc), self.backend.reconnect_s,
                    )  # fmt: skip
                if now >= deadline:
                    raise
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 2.0)

    # ------------------------------------------------------------ repos

    @contextmanager
    def _writing_repos(self) -> Iterator[Session]:
        """A write that may change repo rows: the cached rows are dropped once it has
        committed (or failed), so that no read can cache the rows from before it."""
        try:
            with self.writing() as s:
                yield s
                self.backend.repos_changed(s.connection())  # other nodes drop theirs
        finally:
            self._drop_repos()

    def _drop_repos(self) -> None:
        with self._repos_lock:
            self._repos = None
            self._repos_generation += 1

    def hear_repo_changes(self, *, queued: Callable[[], None] | None = None) -> RepoChanges | None:
        """Drop the repo cache whenever any node writes a repo, and call ``queued``
        whenever any node queues a job, until :meth:`close` (PostgreSQL:
        :mod:`~dispatcher.store.repochanges`); None on SQLite, where this store is the
        only writer."""
        conninfo = self.backend.queue_conninfo()
        if conninfo is None or self._changes is not None:
            return self._changes
        handlers = {CHANNEL: self._drop_repos}
        if queued is not None:
            handlers[QUEUED_CHANNEL] = queued
        self._changes = RepoChanges(conninfo, handlers)
        self._changes.start()
        return self._changes

    def _here(self, node: Any) -> sa.ColumnElement[bool]:
        """``node`` (a clone's node column) is this store's node."""
        cond: sa.ColumnElement[bool] = node.is_(None) if self.node is None else node == self.node
        return cond

    def _local(self, query: Any) -> Any:
        """``query`` of (Repo, Clone.path) narrowed to this node's clones."""
        return query.join(Clone, col(Clone.repo_id) == col(Repo.id)).where(
            self._here(col(Clone.node))
        )

    @staticmethod
    def _with_paths(s: Session, rows: Sequence[tuple[Repo, str]]) -> list[Repo]:
        """The repos of ``rows``, taken out of ``s`` (so that no flush writes the path
        back), each carrying its clone's path."""
        repos = []
        for repo, path in rows:
            s.expunge(repo)
            repo.path = path  # this node's clone, not the column's first path
            repos.append(repo)
        return repos

    def _repo_rows(self) -> list[Repo]:
        """This node's repos (those it has a clone of, each with its clone's path), by
        name: the cached rows (read-only: shared by every caller), or one read that fills
        the cache unless a repo write ran meanwhile."""
        with self._repos_lock:
            cached, generation = self._repos, self._repos_generation
        if cached is not None:
            return cached
        with self.reading() as s:
            rows = self._with_paths(s, s.exec(self._local(select(Repo, Clone.path))).all())
        # By name in code points on either database (a PostgreSQL collation may differ).
        rows.sort(key=lambda r: r.name)
        with self._repos_lock:
            if self._repos_generation == generation:
                self._repos = rows
        return rows

    def add_repo(
        self, repo: Repo, *, idem: IdempotencyKey | None = None, any_name: bool = False
    ) -> Repo:
        """Register ``repo`` on this node: its row and this node's clone at ``repo.path``
        (with ``idem``'s row, in one transaction: see :class:`AlreadyMade`); returned
        with this node's path.

        When ``repo.remote_key`` is that of a repo this node has no clone of yet, named
        as ``repo`` is (``any_name``: or named otherwise, the oldest such), only this
        node's clone of that repo is added: the repo and its settings are the cluster's
        (docs/cluster.md, "Clones per node"). AlreadyExists (one line) when this node has
        a clone at the path, or another repo has the name."""
        with self._writing_repos() as s:
            _check_key(s, idem, "repo")
            here = self._here(col(Clone.node))
            taken = s.exec(
                self._local(select(Repo.name)).where(col(Clone.path) == repo.path)
            ).first()
            if taken is not None:
                raise AlreadyExists(f"{repo.path} is already registered (repo {taken!r})")
            named = s.exec(select(Repo).where(col(Repo.name) == repo.name)).first()
            joined = self._joinable(s, repo, named, any_name, here)
            if joined is None:
                if named is not None:
                    raise AlreadyExists(_name_taken(named, repo, mine=self._has_clone(s, named)))
                s.add(repo)
                s.flush()
                joined = repo
            assert joined.id is not None
            s.add(Clone(repo_id=joined.id, node=self.node, path=repo.path))
            s.flush()
            s.refresh(joined)
            _record_key(s, idem, "repo", joined.id)
            return self._with_paths(s, [(joined, repo.path)])[0]

    def _has_clone(self, s: Session, repo: Repo) -> bool:
        found = s.exec(
            select(Clone.id).where(Clone.repo_id == repo.id, self._here(col(Clone.node)))
        ).first()
        return found is not None

    def _joinable(
        self, s: Session, repo: Repo, named: Repo | None, any_name: bool, here: Any
    ) -> Repo | None:
        """The repo whose clone ``repo`` is (see :meth:`add_repo`), or None."""
        if repo.remote_key is None:
            return None
        if named is not None:
            if named.remote_key == repo.remote_key and not self._has_clone(s, named):
                return named
            return None
        if not any_name:
            return None
        cloned_here = select(Clone.repo_id).where(here)
        return s.exec(
            select(Repo)
            .where(col(Repo.remote_key) == repo.remote_key, col(Repo.id).not_in(cloned_here))
            .order_by(col(Repo.id))
        ).first()

    def adopt_clones(self) -> int:
        """Make the clones with no node (from before migration 0022: the database's one
        daemon's) this node's, but those of a repo or path this node has a clone of
        already; how many. A daemon calls it at its start, before it reads its repos.
        On a database with no queue (SQLite: the state dir's own, one daemon) every
        clone is this node's: a state dir whose ``node-id`` was deleted is a new node
        with the same repos, not one with none."""
        if self.node is None:
            return 0
        mine = sa.alias(Clone.__table__, "mine")  # type: ignore[attr-defined]
        table = Clone.__table__  # type: ignore[attr-defined]
        clash = sa.exists().where(
            mine.c.node == self.node,
            sa.or_(mine.c.repo_id == table.c.repo_id, mine.c.path == table.c.path),
        )
        theirs = table.c.node.is_(None)
        if self.backend.queue_conninfo() is None:
            theirs = sa.or_(theirs, table.c.node != self.node)
        with self._writing_repos() as s:
            done = s.connection().execute(
                sa.update(table).where(theirs, ~clash).values(node=self.node)
            )
            return int(done.rowcount or 0)

    def clones(self, repo_id: int | None = None) -> dict[int, list[Clone]]:
        """Every node's clones (of one repo, or of all), per repo id, oldest first: one
        read, not cached (``GET /repos``)."""
        query = select(Clone).order_by(col(Clone.id))
        if repo_id is not None:
            query = query.where(col(Clone.repo_id) == repo_id)
        out: dict[int, list[Clone]] = {}
        with self.reading() as s:
            for clone in s.exec(query).all():
                out.setdefault(clone.repo_id, []).append(clone)
        return out

    def repo_by_name(self, name: str) -> Repo:
        for repo in self._repo_rows():
            if repo.name == name:
                return repo
        if self._elsewhere(col(Repo.name) == name):
            raise NotFound(
                f"repo {name!r} has no clone on this node (only on others); register this "
                "node's clone with `dispatcher repo add`"
            )
        raise NotFound(f"no repo named {name!r}; see `dispatcher repo list`")

    def _elsewhere(self, where: sa.ColumnElement[bool]) -> bool:
        """Whether a repo matching ``where`` exists (one read: on a miss of this node's)."""
        with self.reading() as s:
            return s.exec(select(Repo.id).where(where)).first() is not None

    def find_repo(self, *, name: str | None = None, path: str | None = None) -> Repo | None:
        """This node's repo named ``name`` or cloned at ``path`` (a read, not the cache)."""
        with self.reading() as s:
            q = self._local(select(Repo, Clone.path))
            q = q.where(Repo.name == name) if name is not None else q.where(Clone.path == path)
            found = self._with_paths(s, s.exec(q).all())
        return found[0] if found else None

    def repo(self, repo_id: int) -> Repo:
        for repo in self._repo_rows():
            if repo.id == repo_id:
                return repo
        if self._elsewhere(col(Repo.id) == repo_id):
            raise NotFound(f"repo {repo_id} has no clone on this node (only on others)")
        raise NotFound(f"no repo with id {repo_id}")

    def repos(self) -> list[Repo]:
        """This node's repos, by name (from the cache: treat the rows as read-only)."""
        return list(self._repo_rows())

    def repo_names(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        with self.reading() as s:
            rows = s.exec(select(Repo.id, Repo.name).where(col(Repo.id).in_(set(ids)))).all()
        return {rid: name for rid, name in rows if rid is not None}

    def remove_repo(
        self, repo_id: int, *, before_delete: Callable[[Repo, list[Job]], None] | None = None
    ) -> bool:
        """Remove this node's clone of the repo and, when it was the repo's last clone,
        the repo with its job rows; refused while any of the repo's jobs is active.
        Whether the repo went.

        ``before_delete`` runs inside the write transaction (so no job can be
        submitted meanwhile) with the repo (this node's path) and its jobs; if it
        raises, nothing is deleted.
        """
        with self._writing_repos() as s:
            active = s.exec(
                select(func.count())
                .select_from(Job)
                .where(Job.repo_id == repo_id, col(Job.state).in_(list(ACTIVE)))
            ).one()
            if active:
                raise InvalidState(
                    f"the repo has {active} active job(s); cancel or discard them first"
                )
            if before_delete is not None:
                found = self._with_paths(
                    s, s.exec(self._local(select(Repo, Clone.path)).where(Repo.id == repo_id)).all()
                )
                jobs = list(s.exec(select(Job).where(Job.repo_id == repo_id)).all())
                if found:
                    before_delete(found[0], jobs)
            s.exec(
                sa.delete(Clone).where(col(Clone.repo_id) == repo_id, self._here(col(Clone.node)))
            )
            others = s.exec(select(Clone.id).where(col(Clone.repo_id) == repo_id)).first()
            if others is not None:  # other nodes' clones: the repo stays theirs
                return False
            job_ids = select(Job.id).where(col(Job.repo_id) == repo_id)
            s.exec(sa.delete(Delivery).where(col(Delivery.job_id).in_(job_ids)))
            s.exec(sa.delete(PrAction).where(col(PrAction.repo_id) == repo_id))
            s.exec(sa.delete(Job).where(col(Job.repo_id) == repo_id))
            s.exec(sa.delete(Issue).where(col(Issue.repo_id) == repo_id))
            s.exec(sa.delete(Event).where(col(Event.repo_id) == repo_id))
            s.exec(sa.delete(Repo).where(col(Repo.id) == repo_id))
            return True

    def job_counts(self, repo_id: int | None = None) -> dict[int, dict[str, int]]:
        """Job counts by state, per repo (one repo, or all of them in one query)."""
        query = select(Job.repo_id, Job.state, func.count()).group_by(
            col(Job.repo_id), col(Job.state)
        )
        if repo_id is not None:
            query = query.where(Job.repo_id == repo_id)
        counts: dict[int, dict[str, int]] = {}
        with self.reading() as s:
            for rid, state, n in s.exec(query).all():
                counts.setdefault(rid, {})[str(state)] = n
        return counts

    # ------------------------------------------------------------ jobs

    def add_job(self, job: Job, *, branch_for: Any, idem: IdempotencyKey | None = None) -> Job:
        """Insert ``job`` and name its branch from its new id, in one transaction (with
        ``idem``'s row: see :class:`AlreadyMade`).

        An event makes at most one job per trigger (a unique index); a second
        attempt returns the first job, even one racing the first: its insert hits
        the index, and the winner is read back.
        """
        event_id, trigger = job.event_id, job.trigger
        if event_id is not None and trigger is not None:
            existing = self.job_for_event(event_id, trigger)
            if existing is not None:
                return existing
        try:
            if idem is None:  # the common case: two Core statements, no session
                with self.connecting() as conn:
                    jobpath.insert_job(conn, job, branch_for)
                return jobpath.detached(job)
            with self.writing() as s:
                _check_key(s, idem, "job")
                jobpath.insert_job(s.connection(), job, branch_for)
                assert job.id is not None
                _record_key(s, idem, "job", job.id)
            return jobpath.detached(job)
        except IntegrityError:
            winner = None
            if event_id is not None and trigger is not None:
                winner = self.job_for_event(event_id, trigger)
            if winner is None:  # another constraint failed: not ours to hide
                raise
            return winner

    def add_followup(self, parent_id: int, job: Job, *, idem: IdempotencyKey | None = None) -> Job:
        """Insert follow-up ``job`` and hand it the parent's worktree and branch, in one
        transaction (with ``idem``'s row): the parent must be finished, hold its
        worktree, and have no follow-up yet (else InvalidState naming why)."""
        with self.writing() as s:
            _check_key(s, idem, "job")
            parent = _get_job(s, parent_id)
            if parent.followed_by is not None:
                raise InvalidState(
                    f"job {parent_id} was already continued by job {parent.followed_by}; "
                    f"follow up on that one"
                )
            if parent.state not in FINISHED:
                raise InvalidState(
                    f"job {parent_id} is {parent.state.value}; a follow-up needs a finished job "
                    "that still has its worktree",
                    details={"state": parent.state.value},
                )
            if parent.worktree is None:
                raise InvalidState(f"job {parent_id} no longer has a worktree to continue in")
            job.followup_of = parent_id
            job.branch = parent.branch
            job.worktree = parent.worktree
            s.add(job)
            s.flush()
            assert job.id is not None
            _save(s, parent, {"followed_by": job.id, "worktree": None})
            s.refresh(job)
            _record_key(s, idem, "job", job.id)
            return job

    def job(self, job_id: int) -> Job:
        return self.row(Job, job_id)

    def row(self, table: type[_Table], row_id: int) -> _Table:
        """The row of ``table`` with ``row_id`` (detached), or NotFound ("no worker with
        id 7"), in one snapshot read."""
        with self.reading() as s:
            return _get(s, table, row_id)

    def chain(self, job_id: int) -> list[Job]:
        """Every run of ``job_id``'s chain of follow-ups, oldest first, read in one
        snapshot (``followup_of`` back to the first, ``followed_by`` on to the newest);
        NotFound for an unknown id."""
        with self.reading() as s:
            job = _get_job(s, job_id)
            while job.followup_of is not None and (prev := s.get(Job, job.followup_of)):
                job = prev
            chain = [job]
            while chain[-1].followed_by is not None and (nxt := s.get(Job, chain[-1].followed_by)):
                chain.append(nxt)
            return chain

    def jobs(
        self,
        *,
        repo_id: int | None = None,
        state: JobState | None = None,
        before: int | None = None,
        limit: int = 50,
        parent_id: int | None = None,
    ) -> list[Job]:
        """Newest first, keyset-paginated on id (no OFFSET scans); ``parent_id``: only the
        jobs that job created (through the MCP server)."""
        q = select(Job)
        if repo_id is not None:
            q = q.where(Job.repo_id == repo_id)
        if parent_id is not None:
            q = q.where(Job.parent_id == parent_id)
        if state is not None:
            q = q.where(Job.state == state)
        if before is not None:
            q = q.where(col(Job.id) < before)
        q = q.order_by(col(Job.id).desc()).limit(limit)
        with self.reading() as s:
            return list(s.exec(q).all())

    def jobs_holding_worktrees(self, node: str | None = None) -> list[Job]:
        """Jobs that have a worktree or may still make one (active): what a sweep needs,
        without loading a long history of closed jobs. ``node``: only that node's
        (:func:`~dispatcher.store.owners.node_jobs`), and the queued ones of any node."""
        mine = sa.or_(node_jobs(node), col(Job.state) == JobState.QUEUED)
        with self.reading() as s:
            return list(
                s.exec(
                    select(Job)
                    .where(sa.or_(col(Job.worktree).is_not(None), col(Job.state).in_(list(ACTIVE))))
                    .where(mine)
                    .order_by(col(Job.id))  # no ORDER BY: PostgreSQL's order is the heap's
                ).all()
            )

    def jobs_in(self, states: Sequence[JobState], node: str | None = None) -> list[Job]:
        """The jobs in ``states``, oldest first; ``node``: only that node's
        (:func:`~dispatcher.store.owners.node_jobs`)."""
        with self.reading() as s:
            query = (
                select(Job)
                .where(col(Job.state).in_(list(states)), node_jobs(node))
                .order_by(col(Job.id))
            )
            return list(s.exec(query).all())

    def jobs_of_workers(self, worker_ids: Sequence[int], states: Sequence[JobState]) -> list[Job]:
        """The jobs in ``states`` that the workers ``worker_ids`` claimed, oldest first."""
        if not worker_ids:
            return []
        with self.reading() as s:
            query = (
                select(Job)
                .where(col(Job.state).in_(list(states)), col(Job.worker_id).in_(list(worker_ids)))
                .order_by(col(Job.id))
            )
            return list(s.exec(query).all())

    def holds(self, job_id: int, guard: Guard) -> bool:
        """Is the job still the claim ``guard`` names (not taken over)?"""
        with self.reading() as s:
            job = _get_job(s, job_id)
            return guard.holds(job.worker_id, job.attempt)

    def finished_with_commits(self, node: str | None = None) -> list[Job]:
        """Finished jobs (not closed) whose recorded head differs from their base;
        ``node``: only that node's."""
        with self.reading() as s:
            query = select(Job).where(
                col(Job.state).in_(list(FINISHED)),
                col(Job.head_sha).is_not(None),
                col(Job.head_sha) != col(Job.base_sha),
                node_jobs(node),
            )
            return list(s.exec(query.order_by(col(Job.id))).all())

    def retry_of(self, job_id: int) -> Job | None:
        with self.reading() as s:
            return s.exec(select(Job).where(Job.retry_of == job_id).order_by(col(Job.id))).first()

    def count_children(self, parent_id: int) -> int:
        """How many jobs ``parent_id`` created (its children; their retries and
        follow-ups, which keep the parent, not counted)."""
        with self.reading() as s:
            return s.exec(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.parent_id == parent_id,
                    col(Job.retry_of).is_(None),
                    col(Job.followup_of).is_(None),
                )
            ).one()

    def count_active(self) -> int:
        with self.reading() as s:
            return s.exec(
                select(func.count()).select_from(Job).where(col(Job.state).in_(list(ACTIVE)))
            ).one()

    def move(
        self,
        job_id: int,
        expected: JobState | set[JobState],
        target: JobState,
        *,
        guard: Guard | None = None,
        **fields: Any,
    ) -> Job:
        """Compare-and-set: move the job to ``target`` only if it is in ``expected``
        (and, with ``guard``, still the claim it names).

        Raises :class:`InvalidState` (naming the actual state) when it is not,
        or when the transition table forbids the move;
        :class:`~dispatcher.store.owners.TakenOver` when ``guard`` no longer holds.
        """
        allowed = {expected} if isinstance(expected, JobState) else set(expected)
        with self.writing() as s:
            job = _get_job(s, job_id)
            _check_guard(job, guard)
            if job.state not in allowed:
                raise InvalidState(
                    f"job {job_id} is {job.state.value}, not "
                    + " or ".join(sorted(a.value for a in allowed)),
                    details={"state": job.state.value},
                )
            transition(job.state, target)
            return _save(s, job, {"state": target, **fields})

    def update(self, job_id: int, *, guard: Guard | None = None, **fields: Any) -> Job:
        """Set fields that are not the state (paths, pids, stats); with ``guard``, only
        while the job is the claim it names (else
        :class:`~dispatcher.store.owners.TakenOver`, nothing written)."""
        assert "state" not in fields, "state changes go through move() (or claim())"
        with self.writing() as s:
            job = _get_job(s, job_id)
            _check_guard(job, guard)
            return _save(s, job, fields)

    def claim(
        self,
        *,
        max_parallel: int,
        per_repo_default: int,
        limit: int | None = None,
        start: StartBlocks | None = None,
    ) -> list[Claimed]:
        """The jobs :meth:`claim_pass` claims."""
        return self.claim_pass(
            max_parallel=max_parallel, per_repo_default=per_repo_default, limit=limit,
            start=start,
        ).claimed  # fmt: skip

    def claim_pass(
        self,
        *,
        max_parallel: int,
        per_repo_default: int,
        limit: int | None = None,
        start: StartBlocks | None = None,
        worker_id: int | None = None,
    ) -> ClaimPass:
        """Move the oldest queued jobs to ``preparing`` within the parallelism limits,
        and return them (their rows as moved, returned by the move itself, and their
        repos': the runner reads neither again), and whether queued jobs were left.
        ``start`` (the runner's): each job taken is also given its port block and its
        spawn nonce in the same write (:class:`~dispatcher.store.jobpath.StartBlocks`;
        its ``port`` None when every block is held). ``worker_id``: the claiming
        worker's (docs/cluster.md), written on each job taken.

        One write transaction (the only writer while it runs, on either database:
        see :mod:`dispatcher.store.backends`): no two claimers can take the same job,
        nor both count the same free slot or port block. FIFO across the whole queue; a
        repo at its limit is skipped, so a long backlog in one repo never blocks another
        repo's jobs: each open repo's oldest queued jobs, up to its free slots, are the
        candidates (an index range per repo, so a claim costs the same with 10 or
        100,000 jobs queued). ``limit`` caps how many one call takes. The move is
        checked by :func:`~dispatcher.lifecycle.transition` like every other, and is a
        compare-and-set on ``queued`` like :meth:`move`'s, for all of them at once.
        Core statements on one connection (:mod:`~dispatcher.store.jobpath`): the busy
        rows with the queued repos, each open repo's candidates, and the move.
        """
        now = utcnow()
        repos = {r.id: r for r in self._repo_rows() if r.id is not None}
        with self.connecting() as conn:
            # Busy jobs per repo and concurrency group, the ports they hold, and the
            # repos with queued jobs: one read.
            busy: dict[int, int] = {}
            # A concurrency group runs one job at a time: queued jobs of a busy
            # group wait, without holding up anything else.
            busy_groups: set[tuple[int, str]] = set()
            held: set[int] = set()
            queued_repos: list[int] = []
            # Queued jobs only of the repos this node has a clone of (docs/cluster.md).
            busy_and_queued = jobpath.busy_and_queued(self.node is None)
            node = {} if self.node is None else {"node": self.node}
            # This node's slots: max_parallel less the jobs its workers run (a repo's
            # limit and a group count every node's).
            running_here = 0
            for rid, group, port, is_busy, mine in conn.execute(busy_and_queued, node):
                if not is_busy:
                    queued_repos.append(rid)
                    continue
                busy[rid] = busy.get(rid, 0) + 1
                running_here += bool(mine)
                if group is not None:
                    busy_groups.add((rid, group))
                if port is not None:
                    held.add(port)
            queued_repos.sort()  # as the index gave them, on either database
            free = max_parallel - running_here
            if limit is not None:
                free = min(free, limit)
            if free <= 0:
                return ClaimPass([], waiting=True)
            # The repo's own setting, else its trigger file's max-parallel, else the default.
            slots = {
                rid: (r.max_parallel or r.triggers_max_parallel or per_repo_default)
                - busy.get(rid, 0)
                for rid, r in repos.items()
            }
            if not any(n > 0 for n in slots.values()):
                return ClaimPass([], waiting=True)
            # Each open repo's oldest queued jobs, up to its free slots: an index range
            # scan per repo (state, repo_id, id), never a pass over the whole queue.
            # Queued jobs left after this claim (a freed slot may let them run): in a
            # repo at its limit, beyond what was fetched, or in a busy group. (A backoff
            # ends with time: the runner claims at least once a second.)
            waiting = any(slots.get(rid, 0) <= 0 for rid in queued_repos)
            candidates: list[tuple[int, int, str | None]] = []
            for rid in queued_repos:
                if slots.get(rid, 0) <= 0:
                    continue
                groups = sorted(group for r, group in busy_groups if r == rid)
                params: dict[str, Any] = {"repo": rid, "now": now, **node}
                if groups:
                    waiting = True
                    params["groups"] = groups
                fetch = min(slots[rid], free)
                params["n"] = fetch + 1  # one more: are there more than it may take?
                found = conn.execute(
                    jobpath.candidates(bool(groups), self.node is None), params
                ).all()
                waiting = waiting or len(found) > fetch
                candidates += [(jid, rid, g) for jid, g in found[:fetch]]
            candidates.sort()  # FIFO across repos
            chosen: list[int] = []
            for job_id, repo_id, group in candidates:
                if free <= 0:
                    waiting = True
                    break
                if slots[repo_id] <= 0 or (group is not None and (repo_id, group) in busy_groups):
                    waiting = True
                    continue
                if group is not None:
                    busy_groups.add((repo_id, group))
                slots[repo_id] -= 1
                free -= 1
                chosen.append(job_id)
            if not chosen:
                return ClaimPass([], waiting=waiting)
            ports = None
            if start is not None:  # in id order, as they were queued
                ports = {job_id: start.first_free(held) for job_id in chosen}
            # The same check as move()'s, for many jobs in one statement: the table
            # allows the move, and the WHERE on the state is the compare-and-set.
            target = transition(JobState.QUEUED, JobState.PREPARING)
            moved = jobpath.claim(conn, chosen, target, now, ports, worker_id)
            claimed = sorted((Claimed(job, repos[job.repo_id]) for job in moved), key=_job_id)
            return ClaimPass(claimed, waiting=waiting)

    # ------------------------------------------------------------ environments, budgets

    def advance(
        self,
        job_id: int,
        expected: JobState,
        target: JobState,
        *,
        guard: Guard | None = None,
        **fields: Any,
    ) -> bool:
        """:meth:`move` for a caller that holds the row and needs nothing back but whether
        a cancel was asked meanwhile (the runner's moves to ``running`` and to the end):
        one ``UPDATE ... RETURNING`` (Core, on a bare connection), the compare-and-set on
        the state (and ``guard``'s worker and attempt) in its WHERE, no read of the row.
        Raises what :meth:`move` raises."""
        transition(expected, target)
        with self.connecting() as conn:
            return jobpath.advance(conn, job_id, expected, {"state": target, **fields}, guard)

    def cost_since(self, repo_id: int, since: datetime) -> float:
        """Sum of the agents' reported cost of the repo's jobs finished since ``since``."""
        return self.costs_since(since, repo_id).get(repo_id, 0.0)

    def costs_since(self, since: datetime, repo_id: int | None = None) -> dict[int, float]:
        """Reported cost of jobs finished since ``since``, per repo (those with any)."""
        query = (
            select(Job.repo_id, func.sum(Job.cost_usd))
            .where(col(Job.finished_at) >= since, col(Job.cost_usd).is_not(None))
            .group_by(col(Job.repo_id))
        )
        if repo_id is not None:
            query = query.where(col(Job.repo_id) == repo_id)
        with self.reading() as s:
            return {rid: float(total or 0.0) for rid, total in s.exec(query).all()}

    def owe_notice(self, job_id: int, state: str) -> None:
        """Mark ``state``'s notifications of the job as owed (until :meth:`settle_notice`)."""
        with self.writing() as s:
            s.exec(sa.update(Job).where(col(Job.id) == job_id).values(notice_pending=state))

    def settle_notice(self, job_id: int, state: str) -> None:
        """Every notification of ``state`` has a final outcome: nothing owed (unless a
        later state's are, meanwhile)."""
        with self.writing() as s:
            s.exec(
                sa.update(Job)
                .where(col(Job.id) == job_id, col(Job.notice_pending) == state)
                .values(notice_pending=None)
            )

    def jobs_owed_notices(self, node: str | None = None) -> list[Job]:
        """Jobs that owe notices; ``node``: only that node's."""
        with self.reading() as s:
            return list(
                s.exec(
                    select(Job)
                    .where(col(Job.notice_pending).is_not(None), node_jobs(node))
                    .order_by(col(Job.id))
                ).all()
            )

    def add_delivery(self, row: Delivery) -> None:
        with self.writing() as s:
            s.add(row)

    def deliveries(self, job_id: int) -> list[Delivery]:
        with self.reading() as s:
            return list(
                s.exec(
                    select(Delivery)
                    .where(col(Delivery.job_id) == job_id)
                    .order_by(col(Delivery.id))
                ).all()
            )

    def inbox(self, limit: int, *, parent_id: int | None = None) -> list[Job]:
        """Jobs with commits that await review (not merged, discarded or continued by a
        follow-up), newest first: succeeded, failed or timed out (their work may be worth
        keeping). ``parent_id``: only the jobs that job created."""
        q = select(Job).where(
            col(Job.state).in_(IN_INBOX),
            col(Job.commits_ahead) > 0,
            col(Job.followed_by).is_(None),
        )
        if parent_id is not None:
            q = q.where(Job.parent_id == parent_id)
        with self.reading() as s:
            return list(s.exec(q.order_by(col(Job.id).desc()).limit(limit)).all())

    # ------------------------------------------------------------ the dashboard's board

    def board_jobs(
        self, column: str, where: JobFilter, *, limit: int = 50
    ) -> tuple[list[Job], int]:
        """One column of the dashboard's board (``queued``, ``running``, ``review``,
        ``done``: see :data:`BOARD_COLUMNS`), newest first, and how many jobs it holds
        (counted up to :data:`BOARD_COUNT_CAP` + 1: "more than" past that); ``where``
        narrows both. Bounded work at any store size: one query per state, each walking
        the (state, id) index from the newest and stopping at ``limit`` matches."""
        filters = _job_filter(where)
        rows: list[Job] = []
        with self.reading() as s:
            for state in _BOARD_STATES[column]:
                query = (
                    select(Job)
                    .where(col(Job.state) == state, *_board_extra(column, state), *filters)
                    .order_by(col(Job.id).desc())
                    .limit(limit)
                )
                rows.extend(s.exec(query).all())
            capped = (
                select(col(Job.id))
                .where(_board_column(column), *filters)
                .limit(BOARD_COUNT_CAP + 1)
                .subquery()
            )
            count = s.exec(select(func.count()).select_from(capped)).one()
        rows.sort(key=lambda j: j.id or 0, reverse=True)
        return rows[:limit], int(count)

    def recent_deliveries(self, *, before: int | None = None, limit: int = 50) -> list[Delivery]:
        """Every job's notification deliveries, newest first."""
        query = select(Delivery)
        if before is not None:
            query = query.where(col(Delivery.id) < before)
        with self.reading() as s:
            return list(s.exec(query.order_by(col(Delivery.id).desc()).limit(limit)).all())

    # ------------------------------------------------------------ repos (triggers)

    def update_repo(self, repo_id: int, **fields: Any) -> Repo:
        """Change the repo's settings (the cluster's: every node's clone has them);
        returned with this node's path (NotFound if this node has no clone of it)."""
        with self._writing_repos() as s:
            path = s.exec(
                select(Clone.path).where(Clone.repo_id == repo_id, self._here(col(Clone.node)))
            ).first()
            if path is None:
                raise NotFound(f"no repo with id {repo_id}")
            repo = _save(s, _get(s, Repo, repo_id), fields)
            return self._with_paths(s, [(repo, path)])[0]

    def repos_by_forge_name(self, forge_name: str) -> list[Repo]:
        """This node's repos whose forge name is ``forge_name`` (any case)."""
        with self.reading() as s:
            return self._with_paths(
                s,
                s.exec(
                    self._local(select(Repo, Clone.path))
                    .where(func.lower(Repo.forge_name) == forge_name.lower())
                    .order_by(col(Repo.id))
                ).all(),
            )

    def ref_state(self, repo_id: int) -> dict[str, str]:
        """The last seen refs of this node's clone of the repo (none: nothing seen)."""
        with self.reading() as s:
            refs = s.exec(
                select(Clone.refs).where(Clone.repo_id == repo_id, self._here(col(Clone.node)))
            ).first()
        return dict(refs or {})

    def save_ref_state(self, repo_id: int, refs: dict[str, str]) -> None:
        """Replace the last seen refs of this node's clone of the repo with ``refs``."""
        with self.writing() as s:
            s.exec(
                sa.update(Clone)
                .where(col(Clone.repo_id) == repo_id, self._here(col(Clone.node)))
                .values(refs=dict(refs))
            )

    # ------------------------------------------------------------ events

    def add_event(self, event: Event, *, idem: IdempotencyKey | None = None) -> Event | None:
        """Store ``event`` (with ``idem``'s row: see :class:`AlreadyMade`); None if its
        dedup key was seen before (nothing is stored)."""
        try:
            with self.writing() as s:
                _check_key(s, idem, "event")
                seen = s.exec(select(Event.id).where(Event.dedup_key == event.dedup_key)).first()
                if seen is not None:
                    return None
                s.add(event)
                s.flush()
                s.refresh(event)
                assert event.id is not None
                _record_key(s, idem, "event", event.id)
                return event
        except IntegrityError:
            return None

    def note_event(
        self,
        event_id: int,
        *,
        note: str | None = None,
        decided: str | None = None,
    ) -> None:
        """Record on the event a note, and that one matched trigger's outcome is recorded
        (``decided``, with the note that says it, in the same write). The matched and
        pending triggers are written with the event itself."""
        with self.writing() as s:
            event = s.get(Event, event_id)
            if event is None:
                return
            if note:
                event.notes = [*event.notes, note]
            if decided is not None:
                event.pending_triggers = [n for n in event.pending_triggers if n != decided]
            s.add(event)

    def events_with_pending_triggers(self) -> list[Event]:
        """Events with a matched trigger whose outcome was never recorded (the daemon
        stopped first), oldest first. Few rows: an outcome clears its trigger's name."""
        with self.reading() as s:
            rows = s.exec(
                select(Event)
                .where(sa.cast(Event.pending_triggers, sa.String) != "[]")
                .order_by(col(Event.id))
            ).all()
        return list(rows)

    def event(self, event_id: int) -> Event:
        with self.reading() as s:
            return _get(s, Event, event_id)

    def event_by_key(self, dedup_key: str) -> Event | None:
        with self.reading() as s:
            return s.exec(select(Event).where(Event.dedup_key == dedup_key)).first()

    def last_schedule_fires(self, repo_id: int) -> dict[str, datetime]:
        """The latest stored fire time of each of the repo's cron lines (the daemon's own
        schedule events, not ones posted to ``POST /events``)."""
        cron = Event.facts["schedule"].as_string()
        latest = (
            select(func.max(Event.id))
            .where(Event.repo_id == repo_id, Event.kind == "schedule", Event.source == "local")
            .group_by(cron)
        )
        with self.reading() as s:
            rows = s.exec(select(Event).where(col(Event.id).in_(latest))).all()
        return {
            row.facts["schedule"]: datetime.fromisoformat(row.payload["fired_at"]) for row in rows
        }

    def events(
        self, *, repo_id: int | None = None, before: int | None = None, limit: int = 50
    ) -> list[Event]:
        q = select(Event)
        if repo_id is not None:
            q = q.where(Event.repo_id == repo_id)
        if before is not None:
            q = q.where(col(Event.id) < before)
        with self.reading() as s:
            return list(s.exec(q.order_by(col(Event.id).desc()).limit(limit)).all())

    def job_ids_for_events(self, event_ids: Sequence[int]) -> dict[int, list[int]]:
        if not event_ids:
            return {}
        with self.reading() as s:
            rows = s.exec(
                select(Job.event_id, Job.id)
                .where(col(Job.event_id).in_(list(event_ids)))
                .order_by(col(Job.id))
            ).all()
        out: dict[int, list[int]] = {}
        for event_id, job_id in rows:
            if event_id is not None and job_id is not None:
                out.setdefault(event_id, []).append(job_id)
        return out

    def job_for_event(self, event_id: int, trigger: str) -> Job | None:
        with self.reading() as s:
            return s.exec(
                select(Job).where(Job.event_id == event_id, Job.trigger == trigger)
            ).first()

    def active_in_group(self, repo_id: int, group: str) -> list[Job]:
        with self.reading() as s:
            return list(
                s.exec(
                    select(Job)
                    .where(
                        Job.repo_id == repo_id,
                        Job.concurrency_group == group,
                        col(Job.state).in_(list(ACTIVE)),
                    )
                    .order_by(col(Job.id))
                ).all()
            )

    # ------------------------------------------------------------ issues

    def add_issue(self, issue: Issue, *, idem: IdempotencyKey | None = None) -> Issue:
        """Insert with the repo's next issue number (and ``idem``'s row: see
        :class:`AlreadyMade`)."""
        with self.writing() as s:
            _check_key(s, idem, "issue")
            last = s.exec(
                select(func.max(Issue.number)).where(Issue.repo_id == issue.repo_id)
            ).one()
            issue.number = (last or 0) + 1
            s.add(issue)
            s.flush()
            s.refresh(issue)
            assert issue.id is not None
            _record_key(s, idem, "issue", issue.id)
            return issue

    def set_issue_event(self, issue_id: int, event_id: int) -> None:
        with self.writing() as s:
            issue = s.get(Issue, issue_id)
            if issue is not None:
                issue.event_id = event_id
                s.add(issue)

    def issue(self, issue_id: int) -> Issue:
        with self.reading() as s:
            return _get(s, Issue, issue_id)

    def issues(self, repo_id: int) -> list[Issue]:
        with self.reading() as s:
            return list(
                s.exec(
                    select(Issue).where(Issue.repo_id == repo_id).order_by(col(Issue.number).desc())
                ).all()
            )

    # ------------------------------------------------------------ idempotency

    def idempotent_get(self, idem: IdempotencyKey) -> IdempotentRequest | None:
        """``idem``'s row unless it expired: an answer to replay, or (``status`` None)
        what the request made before the daemon could answer."""
        with self.reading() as s:
            row = s.get(IdempotentRequest, (idem.key, idem.method, idem.path))
        return row if row is not None and row.created_at >= idem.not_before else None

    def made_by(self, idem: IdempotencyKey | None, kind: str) -> int | None:
        """The id of the ``kind`` resource ``idem`` made already, if any."""
        row = self.idempotent_get(idem) if idem is not None else None
        if row is None or row.resource_kind != kind:
            return None
        return row.resource_id

    def idempotent_answer(
        self, idem: IdempotencyKey, status: int, body: bytes, content_type: str
    ) -> None:
        """Store the answer to ``idem``: on the row its resource was made with, else a
        new row (the first answer wins); drop rows that expired."""
        with self.writing() as s:
            s.exec(
                sa.delete(IdempotentRequest).where(
                    col(IdempotentRequest.created_at) < idem.not_before
                )
            )
            row = s.get(IdempotentRequest, (idem.key, idem.method, idem.path))
            if row is None:
                row = IdempotentRequest(
                    key=idem.key, method=idem.method, path=idem.path,
                    request_hash=idem.request_hash,
                )  # fmt: skip
            elif row.status is not None or row.request_hash != idem.request_hash:
                return
            row.status, row.body, row.content_type = status, body, content_type
            s.add(row)


BOARD_COLUMNS = ("queued", "running", "review", "done")
"""The dashboard board's columns: queued; preparing or running; succeeded with commits
awaiting review; and every other finished or closed job (failed and timed-out ones with
commits too: ``inbox`` lists those, the board's Done column shows them)."""
_BOARD_REVIEW = (JobState.SUCCEEDED,)
BOARD_COUNT_CAP = 1000
"""A board column counts its jobs up to this many (and one more, to say "more than")."""
_BOARD_STATES: dict[str, list[JobState]] = {
    "queued": [JobState.QUEUED],
    "running": [JobState.PREPARING, JobState.RUNNING],
    "review": list(_BOARD_REVIEW),
    "done": sorted(set(JobState) - ACTIVE),
}


@dataclass(frozen=True)
class JobFilter:
    """What the board shows: one repo, trigger or agent, and text in the prompt or branch."""

    repo_id: int | None = None
    trigger: str | None = None
    agent: str | None = None
    text: str | None = None


def _in_review() -> sa.ColumnElement[bool]:
    return sa.and_(
        col(Job.state).in_(_BOARD_REVIEW),
        func.coalesce(col(Job.commits_ahead), 0) > 0,  # NULL would make NOT(...) NULL
        col(Job.followed_by).is_(None),
    )


def _board_extra(column: str, state: JobState) -> list[sa.ColumnElement[bool]]:
    """What, beside its state, puts a job of ``state`` in ``column``."""
    if column == "review":
        return [_in_review()]
    if column == "done" and state in _BOARD_REVIEW:
        return [sa.not_(_in_review())]
    return []


def _board_column(column: str) -> sa.ColumnElement[bool]:
    if column == "queued":
        return col(Job.state) == JobState.QUEUED
    if column == "running":
        return col(Job.state).in_([JobState.PREPARING, JobState.RUNNING])
    if column == "review":
        return _in_review()
    if column == "done":
        return sa.and_(col(Job.state).not_in(list(ACTIVE)), sa.not_(_in_review()))
    raise ValueError(f"no board column {column!r}")


def _job_filter(where: JobFilter) -> list[sa.ColumnElement[bool]]:
    cond: list[sa.ColumnElement[bool]] = []
    if where.repo_id is not None:
        cond.append(col(Job.repo_id) == where.repo_id)
    if where.trigger:
        cond.append(col(Job.trigger) == where.trigger)
    if where.agent:
        cond.append(col(Job.agent) == where.agent)
    if where.text:
        pattern = (
            "%" + where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        cond.append(
            sa.or_(
                # ILIKE: PostgreSQL's LIKE minds case, SQLite's (ASCII) does not.
                col(Job.prompt).ilike(pattern, escape="\\"),
                col(Job.branch).ilike(pattern, escape="\\"),
            )
        )
    return cond

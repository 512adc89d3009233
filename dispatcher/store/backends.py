"""The databases the store runs on: SQLite (embedded, the default) and PostgreSQL.

One store (:class:`~dispatcher.store.database.Store`, with
:class:`~dispatcher.store.teams.TeamStore` and :mod:`~dispatcher.store.stats`) is written
once, in SQLAlchemy's expression language, over the same SQLModel tables and the same
Alembic migrations; a :class:`Backend` holds all that differs between the two databases,
as huey's storages do behind ``BaseStorage``: how connections are made and set up, how a
write transaction becomes the only writer, and the few SQL expressions with no common
spelling. :func:`backend_for` picks one from the URL's scheme. (The migrations'
``batch_alter_table`` copies a table only on SQLite, which cannot alter one; on
PostgreSQL it is plain ``ALTER TABLE``.)

Both give the store the same guarantees, which its queries rely on:

- **One writer at a time.** Every write transaction waits for the previous ones to end
  and then sees all they committed, so a read-then-write inside one (the claim's free
  slots, a port block, the next issue number, a message lease) needs no more care.
  SQLite: ``BEGIN IMMEDIATE``. PostgreSQL: the first statement of every write takes one
  transaction-scoped advisory lock (:data:`WRITER_LOCK`) in ``READ COMMITTED``, where
  each later statement sees what was committed while it waited.
- **Reads see one snapshot and never block a writer.** SQLite: a deferred transaction in
  WAL mode. PostgreSQL: ``REPEATABLE READ``, read-only.
- **A busy database makes a writer wait, up to** :data:`BUSY_TIMEOUT_MS`, then fail
  (SQLite's ``busy_timeout``; PostgreSQL's ``lock_timeout``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from dispatcher.config import normalize_database_url
from dispatcher.errors import DispatcherError

BUSY_TIMEOUT_MS = 10_000
RECONNECT_S = 60.0
"""How long a PostgreSQL store tries again to connect while the server cannot be reached
(restarting, failing over) before a write or read fails."""

WRITER_LOCK = 0x7774_6469_7370_0001
"""The advisory lock key of the store's writes on PostgreSQL ("wtdisp" 1). Advisory locks
are per database, so two daemons' databases in one cluster never wait for each other."""

log = logging.getLogger(__name__)

DAEMON_LOCK = 0x7774_6469_7370_0002
"""The advisory lock a daemon with no node id holds on its PostgreSQL database while it
runs (the whole database); a daemon with a node holds :func:`node_lock` of it instead."""


def node_lock(node: str | None) -> int:
    """The advisory lock a daemon holds while it runs on a PostgreSQL database: one per
    node (docs/cluster.md), so daemons of different nodes share the database, and two of
    one node (its state dir copied to another machine, or its lock file on a shared
    mount that does not lock) cannot. A signed 64-bit key from the node id."""
    if node is None:
        return DAEMON_LOCK
    digest = hashlib.sha256(b"worktree-dispatcher node " + node.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


NUL_REPLACEMENT = "\ufffd"
"""What a NUL (``\\x00``) in a string written to the store becomes, on every backend:
PostgreSQL's text refuses NUL, SQLite's keeps it; the store writes the same on both
(:func:`no_nul`)."""


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    return value


def _scrub_params(params: Any) -> Any:
    if isinstance(params, dict):
        return {k: _scrubbed(v) for k, v in params.items()}
    if isinstance(params, tuple):
        return tuple(_scrubbed(v) for v in params)
    if isinstance(params, list):  # executemany: a list of parameter sets
        return [_scrub_params(p) for p in params]
    return params


def no_nul(engine: Engine) -> None:
    """Every string parameter ``engine`` sends has its NULs replaced with U+FFFD
    (:data:`NUL_REPLACEMENT`): an agent's summary or a prompt with a NUL is stored the
    same on SQLite and PostgreSQL, never a failed write. (JSON values are serialized
    with NUL escaped as ``\\u0000``, which both keep.)"""

    @sa.event.listens_for(engine, "before_cursor_execute", retval=True)
    def _before(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> tuple[str, Any]:
        return statement, _scrub_params(parameters)


class Backend:
    """What the store needs from a database; one subclass per database."""

    name: str  # the SQLAlchemy dialect name: "sqlite", "postgresql"
    # Seconds a connection that cannot be made (the server restarting) is tried again
    # for (Store._connect); 0 where a failed connect will not mend (a local file).
    reconnect_s: float = 0.0
    materialized_ctes: bool  # ``WITH x AS MATERIALIZED`` is understood

    def __init__(self, url: URL) -> None:
        self.url = url

    def engine(self, *, write: bool, migrating: bool = False) -> Engine:
        """A new engine: for short write transactions (``write``), or for reads;
        ``migrating``: for :func:`~dispatcher.store.database.migrate`'s schema changes."""
        raise NotImplementedError

    def seconds(self, start: Any, end: Any) -> sa.ColumnElement[Any]:
        """``end - start`` (two timestamp columns) in seconds, to the millisecond."""
        raise NotImplementedError

    def describe(self) -> str:
        """The URL without its password: for logs and errors."""
        return self.url.render_as_string(hide_password=True)

    def hold(self, node: str | None) -> Hold | None:
        """Take the database for the daemon of ``node`` (DispatcherError when another
        daemon of that node has it), and return the hold (to check and let go); None
        where the state dir's lock is enough (SQLite: the database file is the state
        dir's unless DISPATCHER_DATABASE_URL says otherwise)."""
        return None

    def heartbeats(self, conn: sa.Connection) -> dict[int, datetime]:
        """The last heartbeat (UTC) of each live queue worker, by its id: nothing
        where there is no queue (SQLite: one daemon, its row says whether it runs)."""
        return {}

    def queue_conninfo(self) -> str | None:
        """The libpq connection string of the job queue (procrastinate's), or None where
        there is none (SQLite)."""
        return None

    def repos_changed(self, conn: sa.Connection) -> None:
        """Inside a write that changed repo rows: tell the other daemons on the database
        (:mod:`~dispatcher.store.repochanges`), when it commits; nothing on SQLite."""


class Hold:
    """A daemon's hold on its database (:meth:`Backend.hold`)."""

    def check(self) -> bool:
        """Whether it is still held; a hold whose connection was dropped is taken again
        when it can be (else a loud log line). Never raises."""
        return True

    def release(self) -> None:
        raise NotImplementedError


class SqliteBackend(Backend):
    """SQLite in WAL mode, ``synchronous=NORMAL``, foreign keys on; writes are
    ``BEGIN IMMEDIATE`` (datasette's single-writer habit), reads deferred."""

    name = "sqlite"

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        import sqlite3

        self.materialized_ctes = sqlite3.sqlite_version_info >= (3, 35)  # a syntax error before

    def engine(self, *, write: bool, migrating: bool = False) -> Engine:
        engine = sa.create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=8,
            max_overflow=16,
        )
        no_nul(engine)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED and late).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # A migration that alters a table copies it, drops the old one and renames the
            # copy (Alembic's batch mode): with foreign keys on, the drop fails while any
            # row points at the table (a retry at its job). Off for the migration's
            # connections only (the pragma is a no-op inside a transaction, so here, at
            # connect); migrations/env.py runs `foreign_key_check` before it commits.
            cur.execute(f"PRAGMA foreign_keys={'OFF' if migrating else 'ON'}")
            cur.close()

        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    def seconds(self, start: Any, end: Any) -> sa.ColumnElement[Any]:
        # A Julian day number as a double is exact to about 50 microseconds: unrounded,
        # 0.25 s could land past a 0.25 bound.
        days = sa.func.julianday(end) - sa.func.julianday(start)
        return sa.func.round(days * 86400, 3)


class PostgresBackend(Backend):
    """PostgreSQL through psycopg 3: writes in ``READ COMMITTED`` behind
    :data:`WRITER_LOCK`, reads ``REPEATABLE READ`` and read-only."""

    name = "postgresql"
    materialized_ctes = True  # PostgreSQL 12 and later
    reconnect_s = RECONNECT_S

    def engine(self, *, write: bool, migrating: bool = False) -> Engine:
        engine = sa.create_engine(
            self.url,
            isolation_level="READ COMMITTED" if write else "REPEATABLE READ",
            connect_args=self._connect_args(),
            pool_size=8,
            max_overflow=16,
            # A pooled connection the server dropped (a restart, pg_terminate_backend,
            # an idle timeout) is found at checkout and replaced, not handed to a query.
            pool_pre_ping=True,
        )
        no_nul(engine)
        if write:

            @sa.event.listens_for(engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                # psycopg begins the transaction with this statement; the lock is held
                # until it commits or rolls back.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")

        else:

            @sa.event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.read_only = True

        return engine

    @staticmethod
    def _connect_args() -> dict[str, Any]:
        # The server probes an idle TCP client after 30 s (PostgreSQL's default is the
        # system's, two hours), so a daemon whose machine died lets go of the database
        # (its hold) within about a minute; a unix socket ignores these.
        keepalive = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10"
        return {
            "connect_timeout": 10,
            "application_name": "worktree-dispatcher",
            "options": f"-c lock_timeout={BUSY_TIMEOUT_MS} -c timezone=UTC {keepalive}"
            " -c tcp_keepalives_count=3",
        }

    def hold(self, node: str | None) -> Hold | None:
        # A session-level advisory lock on a connection of its own, held while the daemon
        # runs: gone with the connection, so a killed daemon never keeps it. One per node:
        # the daemons of other nodes share the database (docs/cluster.md).
        hold = _PgHold(self, node_lock(node))
        if not hold.take():
            hold.release()
            if node is None:
                raise DispatcherError(
                    f"another daemon is already using the database {self.describe()}"
                )
            raise DispatcherError(
                f"another daemon of this node ({node}, its state dir's node-id) is already "
                f"using the database {self.describe()}"
            )
        return hold

    def seconds(self, start: Any, end: Any) -> sa.ColumnElement[Any]:
        # EXTRACT gives numeric (exact); round(numeric, 3) as SQLite's is rounded.
        return sa.func.round(sa.extract("epoch", end - start), 3)

    def heartbeats(self, conn: sa.Connection) -> dict[int, datetime]:
        rows = conn.exec_driver_sql(
            "SELECT id, last_heartbeat AT TIME ZONE 'UTC' FROM procrastinate_workers"
        )
        return {int(wid): at.replace(tzinfo=UTC) for wid, at in rows}

    def repos_changed(self, conn: sa.Connection) -> None:
        from dispatcher.store.repochanges import CHANNEL

        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")

    def queue_conninfo(self) -> str | None:
        # procrastinate connects with psycopg itself: the same URL without SQLAlchemy's
        # driver name (the password stays in it: this string is never logged).
        # The store's own connection options too: a bounded connect, TCP keepalives (a
        # heartbeat on a half-open connection would otherwise wait for the kernel).
        options = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30",
                   "keepalives_interval": "10", "keepalives_count": "3"}  # fmt: skip
        url = self.url.set(drivername="postgresql").update_query_dict(options)
        return url.render_as_string(hide_password=False)


class _PgHold(Hold):
    """The node's advisory lock (:func:`node_lock`) on a connection of its own (NullPool:
    never a stale one)."""

    def __init__(self, backend: PostgresBackend, key: int) -> None:
        self.backend = backend
        self.key = key
        self.engine = sa.create_engine(
            backend.url, poolclass=sa.pool.NullPool, connect_args=backend._connect_args()
        )
        self.conn: sa.Connection | None = None

    def take(self) -> bool:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return bool(self.conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({self.key})").scalar())

    def check(self) -> bool:
        with contextlib.suppress(Exception):
            assert self.conn is not None
            self.conn.exec_driver_sql("SELECT 1")
            return True
        where = self.backend.describe()
        try:
            taken = self.take()
        except Exception as exc:
            log.error("the daemon's hold on the database %s was lost and cannot be taken "
                      "again yet: %s", where, type(exc).__name__)  # fmt: skip
            return False
        if taken:
            log.warning("the daemon's hold on the database %s was lost (its connection "
                        "was dropped) and is taken again", where)  # fmt: skip
        else:
            log.error("the daemon's hold on the database %s was lost and ANOTHER DAEMON OF "
                      "THIS NODE HOLDS IT NOW: two daemons of one node may be using it",
                      where)  # fmt: skip
        return taken

    def release(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
        self.engine.dispose()


_SCHEMES = {"sqlite": SqliteBackend, "postgresql": PostgresBackend}


def normalize_url(url: str) -> URL:
    """``url`` parsed, as the store opens it (see
    :func:`~dispatcher.config.normalize_database_url`; ValueError for other databases)."""
    return make_url(normalize_database_url(url))


def backend_for(url: str) -> Backend:
    """The backend of the database ``url`` names (ValueError for any other)."""
    parsed = normalize_url(url)
    return _SCHEMES[parsed.get_backend_name()](parsed)

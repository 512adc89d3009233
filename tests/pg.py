"""A real PostgreSQL for the tests: Debian's ``postgresql`` package, one cluster per test
process (per xdist worker), a database per test.

``initdb`` makes the cluster in a temp dir and ``pg_ctl`` starts it listening on a unix
socket in that dir only (no TCP port). The dir records the test process that made it; a
cluster whose test process is gone (a killed pytest: the postmaster is detached) is
stopped and removed when the next one starts (:func:`reap_stale`). PostgreSQL refuses to run as root, so as root the
cluster belongs to an unprivileged user (``postgres`` where the package made it, else
``nobody``) and its programs run as that user; as anyone else they run as you. Nothing is
skipped: when PostgreSQL cannot start, every test that asked for it fails, saying why.

The fixtures: ``pg_cluster`` (the session's cluster), ``pg_url`` (an empty database of
the test's own), ``pg_migrated_url`` (one already at the newest schema, copied from a
template migrated once per session) and ``db_url`` (the same test on SQLite and on
PostgreSQL: an empty database of each).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "postgres"  # the cluster's superuser (initdb -U); unix-socket trust auth
TEMPLATE = "dispatcher_head"  # migrated to head once per session; tests' databases copy it


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be found or started; the message says what to do."""


def bin_dir() -> Path:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are: Debian's newest
    ``/usr/lib/postgresql/<version>/bin``, else ``pg_config --bindir``, else PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin, pg_config or "
        "PATH): `apt-get install -y --no-install-recommends postgresql` (.ci/run does)"
    )


def _owner() -> pwd.struct_passwd | None:
    """The user the cluster runs as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root, and neither a postgres nor a nobody user exists")


@dataclass
class PgCluster:
    """A running cluster: its data dir, socket dir and the user it runs as."""

    root: Path
    bindir: Path
    owner: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def _run(self, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL program, as the cluster's owner; raises with its output on failure."""
        kwargs: dict[str, object] = {}
        if self.owner is not None:
            kwargs = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PGTZ": "UTC", "HOME": str(self.root)}
        proc = subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root, check=False,
            **kwargs,  # type: ignore[call-overload]
        )  # fmt: skip
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{argv[0]} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}\n"
                f"server log ({self.log}):\n{log}"
            )
        return proc

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        self.serve()

    def serve(self) -> None:
        """Start the server on the cluster made by :meth:`start`."""
        # Fast and private: no TCP, a socket in our dir, no fsync (a test database is
        # thrown away), room for the tests' many short-lived engines.
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=32MB -c timezone=UTC"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "180", "start")  # fmt: skip

    def stop(self) -> None:
        """Stop the server (nothing when it is not running: stopping twice is fine)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        """Stop the server at once (every connection dropped) and start it again."""
        self.stop()
        self.serve()

    def admin(self, sql: str) -> None:
        """Run ``sql`` on the maintenance database, outside a transaction (CREATE DATABASE)."""
        import psycopg

        with psycopg.connect(
            dbname="postgres", user=SUPERUSER, host=str(self.socket_dir), autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, template: str = "template0") -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


PREFIX = "dispatcher-pg-"
OWNER_FILE = "pytest.pid"  # "<pid> <start time>" of the test process whose cluster it is


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (None: no such process, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def _owner_alive(root: Path) -> bool:
    """Whether the test process that made cluster dir ``root`` still runs (a dir
    without the file is being made right now: alive)."""
    try:
        pid, started = (root / OWNER_FILE).read_text().split()
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return _start_time(int(pid)) == started


def reap_stale(parent: Path) -> list[Path]:
    """Stop and remove the clusters under ``parent`` whose test process is gone (a
    killed pytest leaves its postmaster running: ``pg_ctl start`` detaches it); the
    dirs removed. Clusters of live test processes are left alone."""
    reaped = []
    for root in sorted(parent.glob(f"{PREFIX}*")):
        if not root.is_dir() or _owner_alive(root):
            continue
        pidfile = root / "data" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int(pidfile.read_text().splitlines()[0])
            cmdline = Path(f"/proc/{postmaster}/cmdline").read_bytes()
            if b"postgres" in cmdline and str(root).encode() in cmdline:  # ours, not reused
                os.kill(postmaster, signal.SIGQUIT)  # an immediate shutdown
                deadline = time.monotonic() + 30
                while _start_time(postmaster) is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


def start_cluster(parent: Path | None = None) -> PgCluster:
    """A new cluster in a temp dir under ``parent`` (the temp dir), after stale ones
    there are reaped (:func:`reap_stale`); the dir records this test process as its owner."""
    bindir = bin_dir()
    owner = _owner()
    parent = parent or Path(tempfile.gettempdir())
    reap_stale(parent)
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    me = _start_time(os.getpid())
    (root / OWNER_FILE).write_text(f"{os.getpid()} {me}\n")
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = PgCluster(root=root, bindir=bindir, owner=owner)
    try:
        cluster.start()
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


# Started in the background as soon as collection shows a test that needs it, so that
# initdb (10 s and more on a busy machine) overlaps other tests instead of counting in the
# first PostgreSQL test's time limit.
_USERS = {"pg_cluster", "pg_url", "pg_migrated_url", "db_url", "migrated_db_url"}
_early: list[Future[PgCluster]] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(_USERS & set(getattr(item, "fixturenames", ())) for item in session.items):
        _early.append(ThreadPoolExecutor(1, thread_name_prefix="pg").submit(start_cluster))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop a cluster started early that no test asked for (the fixture stops its own)."""
    for future in _early:
        if future.done() or future.running():
            with contextlib.suppress(Exception):
                _discard(future.result(timeout=300))


def _discard(cluster: PgCluster) -> None:
    try:
        cluster.stop()
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """This test process's PostgreSQL; a failure to start fails the test that asked."""
    try:
        cluster = _early[0].result(timeout=300) if _early else start_cluster()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        _discard(cluster)


@pytest.fixture(scope="session")
def _pg_template(pg_cluster: PgCluster) -> str:
    """A database migrated to head once per session: each test's copy costs a file copy."""
    from dispatcher.store.database import migrate

    pg_cluster.admin(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
    migrate(pg_cluster.url(TEMPLATE))
    return TEMPLATE


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (dropped after it)."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_migrated_url(pg_cluster: PgCluster, _pg_template: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, at the newest schema."""
    name = pg_cluster.create_database(_pg_template)
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: the test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db.sqlite"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=BACKENDS)
def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind at the newest schema: the test runs on both."""
    if request.param == "sqlite":
        from dispatcher.store.database import migrate

        url = f"sqlite:///{tmp_path}/db.sqlite"
        migrate(url)
        return url
    return str(request.getfixturevalue("pg_migrated_url"))

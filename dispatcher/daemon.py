"""Composition root: settings -> store -> runner -> service -> API -> uvicorn.

Nothing here runs at import time; :func:`serve` is called by ``dispatcher serve``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from typing import IO

from dispatcher import faults, logctx
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError

log = logging.getLogger(__name__)


class _AccessFields(logging.Filter):
    """uvicorn's access lines: the request's client, method, path and status as fields
    of their own (JSON logs), beside the usual message."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            record.client, record.method, record.path, _, record.status = args
        return True


def configure_logging(settings: Settings) -> None:
    """The daemon's log on stderr: text lines (the ids a line is about appended), or one
    JSON object per line (python-json-logger; the ids as fields: docs/observability.md).
    Every logger goes through this one handler: uvicorn's too (its ``log_config`` is
    None) and Python's warnings."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's ANSI copy
            )
        )
        handler.addFilter(_AccessFields())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s%(ids)s")
        )
    handler.addFilter(logctx.IdsFilter(suffix=settings.log_format == "text"))
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per job added/removed
    logging.getLogger("mcp").setLevel(logging.WARNING)  # the SDK: lines per request


def load_or_create_token(settings: Settings) -> str:
    """The API token: DISPATCHER_TOKEN, else ``<state dir>/token`` (created 0600 on first start)."""
    if settings.token:
        return settings.token
    path = settings.token_file
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if not token:
            raise DispatcherError(
                f"token file {path} is empty; delete it to make a new one"
            ) from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIN_REMOTE_TOKEN = 32


def check_exposure(settings: Settings, token: str) -> None:
    """Every route but /health and the signed webhooks needs the token; refuse to
    listen beyond loopback with a token short enough to guess, or with /metrics open."""
    if not token.strip():
        raise DispatcherError("the API token is empty; unset DISPATCHER_TOKEN to generate one")
    if not is_loopback(settings.host):
        if len(token) < MIN_REMOTE_TOKEN:
            raise DispatcherError(
                f"refusing to listen on {settings.host} (not loopback) with a token shorter "
                f"than {MIN_REMOTE_TOKEN} characters; unset DISPATCHER_TOKEN to use a generated one"
            )
        log.warning(
            "listening on %s: reachable from other machines (token required)", settings.host
        )
    if settings.metrics_open:
        if not is_loopback(settings.host):
            raise DispatcherError(
                f"refusing to serve /metrics without the token on {settings.host} (not "
                "loopback): unset DISPATCHER_METRICS_OPEN, or listen on 127.0.0.1"
            )
        log.info("GET /metrics is open (no token): DISPATCHER_METRICS_OPEN, on loopback")


@contextlib.contextmanager
def single_instance(settings: Settings) -> Iterator[IO[str]]:
    """Hold an exclusive lock on the state dir: one daemon per state dir."""
    fh = open(settings.lock_file, "a+")  # noqa: SIM115
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            other = fh.read().strip() or "?"
            raise DispatcherError(
                f"another daemon (pid {other}) is already using {settings.state_dir}"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield fh
    finally:
        fh.close()


def _server_class() -> type:
    import signal
    import threading
    from collections.abc import Generator

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill
        the process before our own shutdown runs; stop gracefully and exit 0 instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            # uvicorn.Server.serve runs inside this; uvicorn's own version ends by
            # re-raising the signals it caught, ours does not.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


def local_checks(settings: Settings) -> list[dict[str, object]]:
    """``dispatcher doctor``'s checks that need no daemon (git, the state dir), made
    here for the CLI when no daemon answers: the CLI reaches git only through this."""
    from dispatcher.service import doctor

    return [line.model_dump() for line in doctor.local_checks(settings)]


def serve(settings: Settings) -> None:
    import uvicorn

    from dispatcher.api.app import create_app
    from dispatcher.events import checks
    from dispatcher.events.sources import Sources
    from dispatcher.events.trigger_files import TriggerFiles
    from dispatcher.jobs.pool import WorktreePool
    from dispatcher.jobs.runner import Runner
    from dispatcher.jobs.tokens import JobTokens
    from dispatcher.mcp.endpoint import McpEndpoint
    from dispatcher.service import Service
    from dispatcher.store.database import Store, migrate
    from dispatcher.store.models import Repo

    configure_logging(settings)
    from dispatcher.git import version

    version.require()  # git merge-tree --write-tree: 2.38 or later, or no start
    faults.configure(settings.fault_dir)
    settings.ensure_dirs()
    with single_instance(settings):
        from dispatcher.git import cmd

        pinned = cmd.pin_global_config()
        log.info("the daemon's git reads global config from %s", pinned or "its usual files")
        from dispatcher.cluster.node import node_id

        # The store sees this node's clones only, each repo with its own clone's path.
        store = Store(settings.db_url, node=node_id(settings.node_id_file))
        store.hold_database()  # one daemon per node on a database, before migrating
        migrate(settings.db_url)
        adopted = store.adopt_clones()  # the clones from before 0022: the one daemon's
        if adopted:
            log.info("this node (%s) took the %d clone(s) recorded before it", store.node, adopted)
        token = load_or_create_token(settings)
        check_exposure(settings, token)
        trigger_files = TriggerFiles(store)

        def keep_for(repo: Repo) -> list[str]:
            active = trigger_files.active(repo.id) if repo.id else None
            return list(active.keep) if active else []

        # Always there, even when no repo keeps warm trees: `repo update --pool-size` turns
        # it on for a repo without a restart (with size 0 it only removes released trees).
        pool = WorktreePool(settings, store.repos, keep_for)
        runner = Runner(settings, store, pool, job_tokens=JobTokens(token))
        service = Service(
            settings, store, runner, trigger_files=trigger_files, pool=pool, token=token
        )
        sources = Sources(
            settings, store, trigger_files, service.intake.ingest,
            on_default_moved=pool.refresh,
        )  # fmt: skip
        service.repos.listener = sources
        service.repos.note_remotes()  # so that other nodes' clones of them match
        from dispatcher.notify.delivery import Notifier

        notifier = Notifier(
            service.notices.targets,
            service.notices.record,
            settled=service.notices.settled,
            attempts=settings.notify_attempts,
        )
        service.notices.notifier = notifier

        # This start as a worker (and on PostgreSQL its queue worker's heartbeats), before
        # anything claims: the jobs it claims carry its id.
        # Other nodes' repo writes drop this store's repo cache (it drops it as it starts
        # to listen, too); a job queued by any node wakes the claim (PostgreSQL).
        store.hear_repo_changes(queued=runner.wake)
        runner.worker_id = service.workers.join()
        # Its node's rows are its own (docs/cluster.md): what it resumes, sweeps, makes.
        node = runner.node = service.sweeper.node = service.hubs.node = service.workers.owner
        service.teams.node = service.workers.node  # written on the teams it makes
        runner.on_finished = service.job_ended
        runner.on_taken_over = service.job_taken_over
        runner.before_end = service.hubs.before_end  # a hub repo's branch there first
        runner.on_worktree_ready = service.metrics.worktree_ready
        app = create_app(
            service, token, public_docs=settings.public_api_docs,
            open_metrics=settings.metrics_open, mcp=McpEndpoint(service),
        )  # fmt: skip
        checks.clear_leftovers(settings)
        for repo in store.repos():  # last good trigger files (notify targets) before any job ends
            trigger_files.restore(repo)
        notifier.start()
        service.notices.resume(node)  # what the last daemon still owed, before new jobs end
        service.control.recover_merges(node)  # a crashed merge finished or undone, before jobs run
        service.teams.resume(node)  # half-made team steps finished: no task started twice
        runner.start()  # this node's running jobs re-adopted or re-queued; dead nodes' taken over
        service.forges.resume(node)  # on-success pushes and PRs the last daemon still owed
        service.hubs.resume(node)  # job branches the last daemon still owed its repos' hubs
        service.fixloop.resume(node)  # PR actions queued or half-done: no fix lost or made twice
        # Both in the background (docs/design.md, "Start-up"): the API answers and takes
        # jobs while the repos are caught up and their idle pool trees checked.
        sources.start(then=service.intake.resume_pending)  # what a stopped daemon left undecided
        pool.start()
        service.disk_use.start()  # GET /repos' worktree bytes, off the request path
        stop_sweeping = threading.Event()
        threading.Thread(
            target=service.hubs.loop, args=(stop_sweeping,), name="hub-attempts", daemon=True
        ).start()  # running jobs' work in progress to their repos' hubs
        sweeper = service.sweeper  # the one `prune` tidies with: one sweep at a time
        threading.Thread(
            target=sweeper.loop,
            args=(stop_sweeping, settings.sweep_interval_minutes * 60),
            name="sweeper",
            daemon=True,
        ).start()
        log.info(
            "state dir %s; database %s; listening on %s",
            settings.state_dir, store.backend.describe(), settings.api_url,
        )  # fmt: skip
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=settings.access_log,
            timeout_graceful_shutdown=3,
        )
        try:
            _server_class()(config).run()
        finally:
            stop_sweeping.set()
            service.disk_use.stop()
            sources.stop()
            pool.stop()
            service.intake.close()
            service.fixloop.close()
            runner.stop()
            service.workers.leave()
            notifier.stop(timeout=2)
            store.close()
        log.info("stopped cleanly; agents still running are re-adopted at the next start")

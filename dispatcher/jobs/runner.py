"""Runs jobs: claim -> prepare -> spawn and record -> supervise -> finish, like rq's worker.

Ownership rule: once a job is claimed (``preparing``) or ``running``, only the
runner moves it to another state. Others ask: they set ``cancel_requested``
and call :meth:`Runner.cancel`, and the runner ends the job as ``canceled``.

One job's life, as rq's worker lives it (``prepare_job_execution``,
``perform_job``, ``handle_job_success``/``handle_job_failure``):

1. :meth:`Runner._prepare` makes the worktree, the prompt and the agent's argv
   (:mod:`dispatcher.jobs.invocation`) and what its processes get
   (:mod:`dispatcher.jobs.isolation`);
2. :meth:`Runner._spawn` starts the agent, :meth:`Runner._record_running`
   records it ``running``;
3. :meth:`Runner._watch` hands it to the watcher (:mod:`dispatcher.jobs.supervise`),
   which watches every running agent from one thread; at its deadline
   :meth:`Runner._timed_out` kills its tree, and once it has ended
   :meth:`Runner._after_exit` kills what it left;
4. :meth:`Runner._finish` records how it ended (:mod:`dispatcher.jobs.result`,
   :mod:`dispatcher.jobs.report`).

Steps 1-2 and 4 run on a pool of worker threads (:mod:`dispatcher.jobs.workers`),
as many as the job slots (``max_parallel``) but started only as needed: a running
agent holds no thread. A job holds its slot from its claim to its end.

A job that fails before its agent starts is undone by
:meth:`Runner._fail_before_start`.

At start :meth:`Runner.recover` brings back the jobs a previous start of this node left
(:mod:`dispatcher.jobs.recovery`: re-adopted, recorded or re-queued, each spawn
exactly once), and takes over those of dead workers of other nodes
(:mod:`dispatcher.jobs.takeover`).

Every write about a job the runner holds is guarded on its claim (the worker and attempt:
:class:`~dispatcher.store.owners.Guard`), in the write's own WHERE. A job taken over
meanwhile (another worker, a newer attempt) fails the guard: the write changes nothing,
and the runner drops the job (:meth:`Runner._drop`: one log line, its agent killed, no
hook called, nothing of it written or removed).

Each agent runs in a cgroup of its own where the machine allows
(:mod:`dispatcher.jobs.job_cgroups`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dispatcher import faults, logctx
from dispatcher.agents import output, profiles
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidInput
from dispatcher.git import worktrees
from dispatcher.jobs import (
    budget,
    invocation,
    isolation,
    recovery,
    report,
    result,
    takeover,
    workspace,
)
from dispatcher.jobs.cleanup import remove_worktree, run_cleanup
from dispatcher.jobs.files import JobFiles, job_files, note_job, worktree_path
from dispatcher.jobs.job_cgroups import JobCgroups
from dispatcher.jobs.pool import WorktreePool
from dispatcher.jobs.supervise import Watcher
from dispatcher.jobs.tokens import JobTokens
from dispatcher.jobs.workers import Workers
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import JobState
from dispatcher.process import forks, proc, sandbox
from dispatcher.store.database import Claimed, Store, database_gone, first_line
from dispatcher.store.jobpath import StartBlocks
from dispatcher.store.models import Job, Repo, utcnow
from dispatcher.store.owners import Guard, TakenOver
from dispatcher.store.workers import WorkerStore

log = logging.getLogger(__name__)


def _set(job: Job, **fields: object) -> Job:
    """``job`` (a detached row the runner holds) with ``fields`` as just written."""
    for key, value in fields.items():
        setattr(job, key, value)
    return job


@dataclass
class _Attempt:
    """One run of a job's agent while the runner prepares it. ``job`` is the row as last
    read or written: a failure undoes what its latest fields name (the spawn's cgroup)."""

    job: Job
    repo: Repo
    files: JobFiles
    worktree: Path
    ws: Workspace
    # What the prepare made (the worktree's path, how it was made), written with the
    # move to ``running``.
    written: dict[str, object] = field(default_factory=dict)

    @property
    def continuing(self) -> bool:
        """A follow-up: it runs in its parent's worktree, which holds the earlier runs' work."""
        return self.job.followup_of is not None

    @property
    def repo_path(self) -> Path:
        return Path(self.repo.path)


@dataclass(frozen=True)
class _Launch:
    """A prepared agent, ready to spawn: its argv (unboxed), environment and sandbox."""

    argv: list[str]
    env: dict[str, str]
    box: sandbox.Sandbox
    view: sandbox.View
    stdin_prompt: bool


class Runner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        pool: WorktreePool | None = None,
        job_tokens: JobTokens | None = None,
    ) -> None:
        """``job_tokens``: mints each agent's DISPATCHER_JOB_TOKEN for the MCP server (None:
        agents get no token)."""
        self.settings = settings
        self.store = store
        self.pool = pool
        self.job_tokens = job_tokens
        self._wake = threading.Event()
        # The claim loop's fallback: it claims at least this often (re-queued jobs'
        # backoffs end; a wake-up missed). Tests lengthen it to prove a wake-up is sent.
        self.claim_fallback_s = 1.0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._children: dict[int, proc.Spawned] = {}
        # The jobs the runner holds (a slot each), each with an event set when it lets go.
        self._active: dict[int, threading.Event] = {}
        self._repos: dict[int, str] = {}  # the repo of each watched agent's job, for logs
        self._rows: dict[int, Job] = {}  # each watched agent's job, as recorded running
        # Jobs a cancel was asked for while the runner held them: their rows are read
        # again at the end (cancel_requested), the others' are not.
        self._cancels: set[int] = set()
        # Set by wake(): something new may be claimable (a job queued, a repo changed),
        # unlike a freed slot, which matters only when the last claim left jobs queued.
        self._news = threading.Event()
        self._current = threading.local()  # the job a worker thread is busy with
        self._workers = Workers(settings.max_parallel, "job")
        # Each claimed job's ports and spawn nonce, given by the claim's own write.
        self._start_blocks = StartBlocks(
            base=settings.job_port_base, count=settings.job_port_count,
            block=settings.job_ports, usable=isolation.port_is_free,
        )  # fmt: skip
        self._watcher = Watcher(self._exited, self._timed_out)
        self._loop: threading.Thread | None = None
        # A job the runner held is let go of: (its id, its row as the runner recorded its
        # end, or None when it did not: the hook reads it if it needs it).
        self.on_finished: Callable[[int, Job | None], None] | None = None
        # Told of a job's end before it is recorded, with the fields to be written (its
        # head, commits): more fields to write with them. Set by the daemon to
        # Hubs.before_end (a hub repo's branch pushed first: docs/cluster.md). Must not raise.
        self.before_end: Callable[[Job, dict[str, object]], dict[str, object]] | None = None
        # A dead node's job this runner ended when it took it over (it never ran here: no
        # worktree, branch or team step of this node's to follow): only who waits hears.
        self.on_taken_over: Callable[[int], None] | None = None
        self._ended: dict[int, Job] = {}  # each job's row as its end was recorded
        # A job's worktree is ready: (repo, "pool" or "fresh", seconds it took); for /metrics.
        self.on_worktree_ready: Callable[[str, str, float], None] | None = None
        self.cgroups = JobCgroups(settings)
        # This daemon's worker row (dispatcher.cluster.membership): the jobs it claims
        # carry it. None: claims leave worker_id unset (tests' runners without a daemon).
        self.worker_id: int | None = None
        # This daemon's node: recover() takes its rows (and dead nodes' busy jobs). None:
        # every row is its own (tests' runners without a daemon).
        self.node: str | None = None
        # The claim (worker, attempt) of each job the runner holds: its writes' guard.
        self._guards: dict[int, Guard] = {}
        self._dropped: set[int] = set()  # held jobs found taken over: let go without hooks
        # Forks each agent's log writer (no Python start-up per spawn); started with the runner.
        self.forks = forks.ForkServer()

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self.cgroups.setup()
        self.forks.start()  # it starts up while the runner recovers
        self._watcher.start()
        self.recover()
        self._loop = threading.Thread(target=self._claim_loop, name="runner", daemon=True)
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming. Running agents are left running, to be re-adopted on restart."""
        self._stopping.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join(timeout)
        self._watcher.stop(timeout)
        self.forks.close()  # the writers it forked run on, like the agents
        self.cgroups.release()

    def wake(self) -> None:
        """Something new may be claimable: a job was queued (or a repo changed)."""
        self._news.set()
        self._wake.set()

    def cancel(self, job_id: int) -> None:
        """Kill the job's agent tree if it runs here (the supervisor records ``canceled``)."""
        with self._lock:
            child = self._children.get(job_id)
            # Before it is held (the instant between the claim's commit and the hold), the
            # cancel is seen by the move to running, which ends the agent it just started.
            if job_id in self._active:
                self._cancels.add(job_id)  # dropped when the runner lets go of the job
        if child is not None:
            self._kill_in_background(child)

    def _kill_in_background(
        self, child: proc.Spawned, note: Callable[[], None] | None = None
    ) -> None:
        """:func:`proc.kill_tree` on a thread of its own (after ``note``): it waits out
        the grace period."""

        def kill() -> None:
            if note is not None:
                with contextlib.suppress(Exception):  # the kill comes whatever the note does
                    note()
            proc.kill_tree(
                child.pid, child.start_time, grace=self.settings.kill_grace_seconds,
                cgroup=child.cgroup,
            )  # fmt: skip

        threading.Thread(target=kill, name="kill", daemon=True).start()

    def join(self, job_id: int, timeout: float) -> None:
        """Wait until the runner has let go of ``job_id`` (or ``timeout`` passes)."""
        with self._lock:
            done = self._active.get(job_id)
        if done is not None and getattr(self._current, "job_id", None) != job_id:
            done.wait(timeout)

    # ------------------------------------------------------------ loop

    def _claim_loop(self) -> None:
        """Claim when a claim may find something: after :meth:`wake` (a job queued), a
        freed slot while jobs were left queued, and a second after the last claim at the
        latest (re-queued jobs' backoffs end; anything else missed). No query while
        every slot is busy, nor when a job ends with nothing queued. With nodes
        (PostgreSQL), every heartbeat interval it also takes over the busy jobs of other
        nodes that have died meanwhile (:meth:`_take_over_dead`), as a start does."""
        due, waiting, last = True, True, 0.0
        looked = time.monotonic()  # recover() took over the dead at start
        while not self._stopping.is_set():
            if self.node is not None and (
                time.monotonic() - looked >= self.settings.worker_heartbeat_seconds
            ):
                looked = time.monotonic()
                try:
                    self._take_over_dead()
                except Exception:
                    log.exception("taking over the jobs of dead nodes failed")
            with self._lock:
                free = self.settings.max_parallel - len(self._active)
            if free > 0 and (due or time.monotonic() - last >= self.claim_fallback_s):
                self._news.clear()
                last = time.monotonic()
                try:
                    taken = self.store.claim_pass(
                        max_parallel=self.settings.max_parallel,
                        per_repo_default=self.settings.max_parallel_per_repo,
                        limit=free,
                        start=self._start_blocks,
                        worker_id=self.worker_id,
                    )
                    claimed, waiting = taken.claimed, taken.waiting
                except Exception:
                    log.exception("claiming jobs failed")
                    claimed, waiting = [], True
                for c in claimed:
                    self._hold(c.job_id, Guard.of(c.job))
                    self._on_worker(c.job_id, self._run, c)
                if len(claimed) == free:  # took all it could: claim again once a slot frees
                    continue
            woken = self._wake.wait(self.claim_fallback_s)
            self._wake.clear()
            due = not woken or self._news.is_set() or waiting

    def _hold(self, job_id: int, guard: Guard) -> None:
        """The job is the runner's (a slot) until :meth:`_let_go`; ``guard``: its claim."""
        with self._lock:
            self._active.setdefault(job_id, threading.Event())
            self._guards[job_id] = guard

    def _guard(self, job_id: int, job: Job | None = None) -> Guard:
        """The claim the runner holds ``job_id`` for (or ``job``'s row records)."""
        with self._lock:
            held = self._guards.get(job_id)
        if held is not None:
            return held
        assert job is not None, f"job {job_id} is not held"
        return Guard.of(job)

    def _drop(self, job_id: int, exc: TakenOver) -> None:
        """The job was taken over (another worker or a newer attempt holds it): nothing was
        written. Kill its agent if it still runs here, and let go of it without a hook:
        its worktree and branch are left as they are, the row is the new holder's."""
        log.warning("job %s: dropped: %s", job_id, exc.message)
        with self._lock:
            child = self._children.get(job_id)
            if job_id in self._active:
                self._dropped.add(job_id)
        if child is not None:
            self._kill_in_background(child)

    def _on_worker(
        self, job_id: int, step: Callable[..., bool], *args: object, repo: str | None = None
    ) -> None:
        """Run a step of the job's life on a worker; unless it returns True (the job goes
        on: its agent is being watched), the runner lets go of the job after it."""

        def task() -> None:
            self._current.job_id = job_id
            going_on = False
            try:
                with logctx.bound(job_id=job_id, repo=repo):  # the step's lines are the job's
                    going_on = step(*args)
            except TakenOver as exc:
                self._drop(job_id, exc)
            except Exception as exc:
                if database_gone(exc):
                    going_on = self._recover_after_outage(job_id, exc)
                else:
                    log.exception("job %s: supervisor crashed", job_id)
                    self._fail_if_stuck(job_id, "internal error in the supervisor; see daemon log")
            finally:
                self._current.job_id = None
                if not going_on:
                    self._let_go(job_id)

        self._workers.submit(task)

    def _let_go(self, job_id: int) -> None:
        with self._lock:
            done = self._active.pop(job_id, None)
            self._children.pop(job_id, None)
            self._repos.pop(job_id, None)
            self._rows.pop(job_id, None)
            self._cancels.discard(job_id)
            self._guards.pop(job_id, None)
            ended = self._ended.pop(job_id, None)
            dropped = job_id in self._dropped
            self._dropped.discard(job_id)
        if done is not None:
            done.set()
        self._wake.set()
        if self.on_finished is not None and not dropped:
            self.on_finished(job_id, ended)

    def _recover_after_outage(self, job_id: int, exc: BaseException) -> bool:
        """The database went away in the middle of one of the job's steps (PostgreSQL
        restarting): what the step wrote may or may not have landed. The job is taken up
        as a restarted daemon takes up what it finds (:meth:`_recover_one`), once the
        database answers again: its agent re-adopted if it runs, its end recorded from
        its exit file, or the job queued again. True when its agent is watched again."""
        log.warning(
            "job %s: the database went away during a step (%s); taking the job up again as "
            "after a restart", job_id, first_line(exc),
        )  # fmt: skip
        for _ in range(3):
            try:
                job = self.store.job(job_id)
                held = self._guard(job_id, job)
                if not held.holds(job.worker_id, job.attempt):  # taken over meanwhile
                    raise TakenOver(
                        f"job {job_id} is attempt {job.attempt} of worker {job.worker_id} now"
                    )
                if job.state not in (JobState.PREPARING, JobState.RUNNING):
                    return False  # the step's write had landed: the job has ended
                with self._lock:
                    self._children.pop(job_id, None)  # re-adopted from its row, if it runs
                self._recover_one(job, "the database came back")
            except TakenOver as taken:  # another worker's now
                self._drop(job_id, taken)
                return False
            except Exception as again:
                if database_gone(again):
                    continue  # gone again (the store already waited for it): once more
                log.exception("job %s: recovery after the database came back failed", job_id)
                self._fail_if_stuck(job_id, "could not be recovered after the database came back")
                return False
            with self._lock:
                return job_id in self._children
        log.error("job %s: the database did not come back; the job is taken up at the next "
                  "start", job_id)  # fmt: skip
        return False

    def _fail_if_stuck(self, job_id: int, reason: str, held: Job | None = None) -> None:
        """Fail the job if it is still busy and still the runner's claim (``held``: the
        row recovery read, for a job not held)."""
        try:
            job = self.store.job(job_id)
            guard = self._guard(job_id, held or job)
            if job.state in (JobState.PREPARING, JobState.RUNNING):
                self.store.move(
                    job_id, job.state, JobState.FAILED, guard=guard, error=reason,
                    finished_at=utcnow(),
                )  # fmt: skip
        except TakenOver as exc:
            log.warning("job %s: not marked failed: %s", job_id, exc.message)
        except Exception:
            log.exception("job %s: could not mark failed", job_id)

    # ------------------------------------------------------------ one job

    def note(self, job_id: int, text: str) -> None:
        """Append a daemon line to the job's log (see :func:`note_job`)."""
        note_job(self.settings, job_id, text)

    def _run(self, claimed: Claimed) -> bool:
        """A claimed job's start: prepare, spawn and record, then watch (True: the agent
        runs and is watched; the rest of its life is :meth:`_after_exit`)."""
        attempt = self._attempt(claimed.job, claimed.repo)
        try:
            launch = self._prepare(attempt)
            if launch is None:  # canceled before the agent started
                return False
            child = self._spawn(attempt, launch)
        except TakenOver:
            raise  # dropped by _on_worker
        except (DispatcherError, OSError) as exc:
            self._fail_before_start(attempt, exc)
            return False
        except Exception:
            self._keep_written(attempt)  # the supervisor's crash handler fails the job
            raise
        try:
            job = self._record_running(attempt, child)
        except Exception:
            self._keep_written(attempt)
            raise
        if job is None:
            return False
        self._watch(job, child, attempt.repo.name)
        return True

    def _keep_written(self, a: _Attempt) -> None:
        """On an unexpected error, store what the prepare made (written otherwise only with
        the move to ``running``), so the job that is failed for it keeps its worktree."""
        if a.written and a.job.id is not None:
            try:
                self.store.update(a.job.id, guard=self._guard(a.job.id), **a.written)
            except Exception:
                log.exception("job %s: could not record its worktree", a.job.id)

    def _attempt(self, job: Job, repo: Repo) -> _Attempt:
        """The claimed job (its row as claimed), its repo, and where its worktree goes
        (no I/O)."""
        assert job.id is not None
        job_id = job.id
        logctx.bind(repo=repo.name)
        continuing = job.followup_of is not None  # a follow-up runs in its parent's worktree
        worktree = Path(job.worktree) if continuing and job.worktree else None
        return _Attempt(
            job=job,
            repo=repo,
            files=job_files(self.settings, job_id),
            worktree=worktree or worktree_path(self.settings, repo, job_id),
            ws=Workspace.model_validate(job.workspace or {}),
        )

    def _prepare(self, a: _Attempt) -> _Launch | None:
        """Everything before the spawn (rq's ``prepare_job_execution``): the worktree,
        the job's ports, the prompt with its conventions, the sandbox, ``setup:``, the
        agent's argv. None when the job was canceled meanwhile (it is then ``canceled``)."""
        profile = invocation.job_profile(self.settings, a.job)
        box = sandbox.sandbox_for(self.settings.sandbox, self.settings.sandbox_bwrap)
        # Before anything is made for it:
        opted_in = invocation.check_can_start(profile, boxed=box.active)
        self._prepare_worktree(a)
        job, files, worktree, ws = a.job, a.files, a.worktree, a.ws
        assert job.id is not None
        if opted_in:
            self.note(job.id, opted_in)
        env = isolation.agent_env(self.settings, job, files.prompt, worktree, job.port)
        reach = isolation.mcp_env(self.settings, job, self.job_tokens, profile.name)
        wired = invocation.give_mcp(self.settings, job.id, profile, {**env, **reach}, files)
        prompt = invocation.prompt_for(job, profile, a.repo_path, ws)
        files.prompt.write_text(prompt.text, encoding="utf-8")
        checkouts = [Path(r.path) for r in self.store.repos()]
        seen = [files.prompt, *(files.root / f.name for f in wired.files)]
        view = isolation.sandbox_view(self.settings, checkouts, worktree, ws, seen)
        self.note(job.id, box.note(view))
        if ws.setup and not a.continuing:
            workspace.run_script(
                "setup", ws.setup, worktree=worktree, env=env, log_path=files.log,
                exit_file=files.root / "setup.exit", timeout=ws.setup_timeout_s,
                grace=self.settings.kill_grace_seconds,
                wrap=lambda argv: box.wrap(argv, view, env=env),
            )  # fmt: skip
            self.note(job.id, "setup: done")
            # Setup took a while: was it canceled? (What the prepare made is not stored yet.)
            job = a.job = _set(self.store.job(job.id), **a.written)
        assert job.id is not None
        with self._lock:  # asked since the claim (its row has what came before)
            asked = job.id in self._cancels
        if job.cancel_requested or asked:
            # With what the prepare made: the canceled job keeps (and discard removes) it.
            self.store.move(
                job.id, JobState.PREPARING, JobState.CANCELED, guard=self._guard(job.id),
                finished_at=utcnow(), **a.written,
            )  # fmt: skip
            self.note(job.id, "canceled before the agent started")
            return None
        resume = invocation.resume_session(self.settings, self.store, job, profile)
        argv = profiles.build_argv(
            profile, prompt_file=files.prompt, workdir=worktree, resume_session=resume,
            system_prompt=prompt.system_prompt, max_cost_usd=job.max_cost_usd,
            summary_file=files.summary,
        ) + list(wired.argv)  # fmt: skip
        files.summary.unlink(missing_ok=True)  # an earlier attempt's is not this one's
        shown = [arg if arg != prompt.conventions else "<conventions>" for arg in argv]
        self.note(job.id, output.agent_start(job.agent, shown))
        if prompt.conventions:
            flag = profile.system_prompt_flag
            how = f"with {flag}" if prompt.via_flag else "in the prompt file"
            self.note(job.id, f"conventions: {len(prompt.conventions)} characters, {how}")
        agent_env = {  # the agent's own settings and its way to the MCP server: not setup's
            **env, **dict(profile.env), **reach, **dict(wired.env),
        }  # fmt: skip
        return _Launch(argv, agent_env, box, view, stdin_prompt=profile.stdin_prompt)

    def _prepare_worktree(self, a: _Attempt) -> None:
        """The job's worktree (made, or a follow-up's taken over), after checking the claim
        gave it a port block (and its spawn nonce); its path and how it was made go into
        ``a.written``, for the move to ``running`` (no write here)."""
        job, worktree, repo_path = a.job, a.worktree, a.repo_path
        assert job.id is not None
        a.files.root.mkdir(parents=True, exist_ok=True)
        if not (repo_path / ".git").exists():
            raise InvalidInput(f"repo path {a.repo.path} no longer holds a git repository")
        budget.check_daily(self.settings, self.store, a.repo)
        if job.port is None:  # the claim gave it its ports and its spawn nonce, or no ports
            raise InvalidInput(
                "no free block of ports for DISPATCHER_PORT: raise "
                "DISPATCHER_JOB_PORT_COUNT or lower max-parallel"
            )
        self.note(job.id, f"job {job.id}: worktree {worktree} on {job.branch} at {job.base_sha}")
        made: dict[str, object] = {}
        if a.continuing:
            self._take_over(job, repo_path, worktree)
        else:
            made = self._make_worktree(job, a.repo, worktree)
            for line in workspace.bring_files(a.ws, repo_path, worktree):
                self.note(job.id, line)
        # Recorded with the move to ``running`` (no write of its own: until then, the
        # sweeper counts the job's directory as its, and a restart finds it by its id).
        a.written = {"worktree": str(worktree), **made}
        _set(job, **a.written)

    def _spawn(self, a: _Attempt, launch: _Launch) -> proc.Spawned:
        """Start the agent in its cgroup and sandbox (the first half of rq's
        ``perform_job``); its wrapper claims the spawn before it runs the agent."""
        job, files = a.job, a.files
        assert job.spawn_nonce is not None
        cgroup = self.cgroups.make(job)
        files.timed_out.unlink(missing_ok=True)  # an earlier attempt's
        faults.reach("runner.before-spawn")
        child = proc.spawn(
            launch.box.wrap(launch.argv, launch.view.with_files(files.summary), env=launch.env),
            cwd=a.worktree,
            env=launch.env,
            stdin_path=files.prompt if launch.stdin_prompt else None,
            log_path=files.log,
            exit_file=files.exit,
            limits=isolation.limits(self.settings),
            claim_file=files.claim(job.spawn_nonce),
            cgroup=cgroup,
            log_cap=proc.LogCap(
                self.settings.max_log_bytes, self.settings.log_keep, output.HEAD_MAX_BYTES,
            ),
            fork_server=self.forks,
        )  # fmt: skip
        faults.reach("runner.after-spawn")
        return child

    def _record_running(self, a: _Attempt, child: proc.Spawned) -> Job | None:
        """The agent runs: record it (``running``, its pid and start time), refill the
        pool behind it, and pass on a cancel that came while it was spawning. None: the
        job was taken over meanwhile (dropped, its agent killed)."""
        assert a.job.id is not None
        job_id = a.job.id
        with self._lock:
            self._children[job_id] = child
        if self.pool is not None and not a.continuing:
            self.pool.fill(a.repo)  # refill behind the running agent, off the spawn path
        started = {"pid": child.pid, "pid_start": child.start_time, "started_at": utcnow()}
        try:
            canceled = self.store.advance(
                job_id, JobState.PREPARING, JobState.RUNNING, guard=self._guard(job_id),
                **a.written, **started,
            )  # fmt: skip
        except TakenOver as exc:  # the agent just started is killed: the job is another's
            self._drop(job_id, exc)
            return None
        # The row as recorded (the store does not read it back).
        job = _set(a.job, state=JobState.RUNNING, cancel_requested=canceled, **started)
        log.info("job %s: agent %s started, pid %s", job_id, job.agent, child.pid)
        if job.cancel_requested:  # canceled while we were spawning
            self.cancel(job_id)
        return job

    def _fail_before_start(self, a: _Attempt, exc: DispatcherError | OSError) -> None:
        """No agent ran: fail the job, undoing the worktree unless a follow-up's (which
        holds the earlier runs' work)."""
        job = a.job
        assert job.id is not None
        self.cgroups.end(job)
        reason = exc.message if isinstance(exc, DispatcherError) else str(exc)
        self.note(job.id, f"failed before the agent started: {reason}")
        log.info("job %s: failed before the agent started: %s", job.id, reason)
        guard = self._guard(job.id)
        if a.continuing:  # the worktree holds the earlier runs' work: keep it
            self.store.move(
                job.id, JobState.PREPARING, JobState.FAILED, guard=guard, error=reason,
                finished_at=utcnow(),
            )  # fmt: skip
            return
        if not self.store.holds(job.id, guard):  # taken over: its branch is not ours to undo
            raise TakenOver(f"job {job.id} was taken over before it could be failed")
        checkouts = [Path(r.path) for r in self.store.repos()]
        run_cleanup(self.settings, job.id, a.ws, a.worktree, checkouts=checkouts)
        remove_worktree(a.repo_path, a.worktree, job.branch)  # nothing ran: undo it all
        self.store.move(
            job.id,
            JobState.PREPARING,
            JobState.FAILED,
            guard=guard,
            error=reason,
            worktree=None,
            finished_at=utcnow(),
        )

    def _make_worktree(self, job: Job, repo: Repo, worktree: Path) -> dict[str, object]:
        """A warm tree from the pool if there is one, else a fresh checkout; locked,
        so that ``git worktree prune`` never drops it while the job owns it. (Its path
        is recorded with the move to ``running``, with the fields returned: how it was
        made, ``pool``, ``cold`` or ``fresh``, and how long it took.)"""
        assert job.id is not None
        job_id = job.id
        repo_path = Path(repo.path)
        worktree.parent.mkdir(parents=True, exist_ok=True)
        reason = f"dispatcher job {job_id}"
        pool = None if job.sparse else self.pool  # a sparse tree is made, never recycled
        asked = time.monotonic()
        if pool is not None and pool.take(repo, worktree, job.branch, job.base_sha):
            worktrees.lock(repo_path, worktree, reason, new=True)
            self.note(job_id, "worktree: recycled from the warm pool")
            return self._worktree_ready(repo, "pool", asked)
        worktrees.add(
            repo_path, worktree, job.branch, job.base_sha, lock_reason=reason,
            sparse=job.sparse or (),
        )  # fmt: skip
        # Cold: the job wanted a warm tree and waited for a checkout instead.
        cold = pool is not None and pool.size_for(repo) > 0
        what = f"sparse checkout of {', '.join(job.sparse)}" if job.sparse else "checkout"
        waited = time.monotonic() - asked
        if cold:
            self.note(job_id, f"worktree: cold {what} ({waited:.1f}s; the warm pool had none idle)")
        else:
            self.note(job_id, f"worktree: fresh {what}")
        return self._worktree_ready(repo, "cold" if cold else "fresh", asked)

    def _worktree_ready(self, repo: Repo, source: str, asked: float) -> dict[str, object]:
        """The job's worktree is ready: its figure for /metrics (a cold checkout counts as
        ``fresh`` there), and the fields that record it on the job."""
        seconds = time.monotonic() - asked
        if self.on_worktree_ready is not None:
            try:
                self.on_worktree_ready(repo.name, "pool" if source == "pool" else "fresh", seconds)
            except Exception:  # a figure never fails a job
                log.exception("job worktree: the metrics hook failed")
        return {"worktree_source": source, "worktree_wait_s": round(seconds, 3)}

    def _take_over(self, job: Job, repo_path: Path, worktree: Path) -> None:
        """A follow-up continues in its parent's worktree: check it is still there and
        still on the job's branch (the parent's agent may have left it elsewhere)."""
        assert job.id is not None
        if not worktrees.is_valid(worktree, repo_path):
            raise InvalidInput(f"the worktree {worktree} of job {job.followup_of} is gone")
        branch = worktrees.current_branch(worktree)
        if branch != job.branch:
            raise InvalidInput(
                f"the worktree {worktree} is on {branch or 'a detached HEAD'}, not {job.branch}"
            )
        self.note(job.id, f"follow-up of job {job.followup_of}: continuing in its worktree")

    # ------------------------------------------------------------ supervise and finish

    def _watch(self, job: Job, child: proc.Spawned, repo: str) -> None:
        """Hand the running agent to the watcher, with what is left of its time (counted
        from ``started_at``)."""
        assert job.id is not None
        with self._lock:
            self._repos[job.id] = repo
            self._rows[job.id] = job
        started = job.started_at or utcnow()
        left = job.timeout_s - (utcnow() - started).total_seconds()
        grace = self.settings.kill_grace_seconds
        self._watcher.watch(job.id, child, left, after_kill_s=2 * grace + 10)

    def _timed_out(self, job_id: int) -> None:
        """The watcher's call at the job's deadline: kill the agent's tree (it then ends,
        and :meth:`_after_exit` records the timeout)."""
        with self._lock:
            child = self._children.get(job_id)
        if child is None:
            return

        with self._lock:
            row = self._rows.get(job_id)
        timeout_s = row.timeout_s if row is not None else None

        def note() -> None:  # no store read here: a failed read must not skip the kill
            after = f" after {timeout_s:g}s" if timeout_s is not None else ""
            self.note(job_id, f"timed out{after}: killing the process tree")

        # Marked before the kill: an end read later from the exit file alone is a timeout.
        try:
            job_files(self.settings, job_id).timed_out.touch()
        except OSError as exc:
            log.warning("job %s: cannot mark its timeout (%s); killing it anyway", job_id, exc)
        self._kill_in_background(child, note)

    def _exited(self, job_id: int, timed_out: bool) -> None:
        """The watcher's call when the agent has ended (or would not, after its kill)."""
        self._on_worker(job_id, self._after_exit, job_id, timed_out, repo=self._repos.get(job_id))

    def _after_exit(self, job_id: int, timed_out: bool) -> bool:
        """The agent is gone: kill what it left in its session and its cgroup, then record
        how it ended."""
        with self._lock:
            child = self._children.get(job_id)
        assert child is not None
        code = proc.wait(child, timeout=0)  # None: it would not end, even killed
        grace = self.settings.kill_grace_seconds
        proc.kill_tree(child.pid, None, grace=grace, cgroup=child.cgroup)
        with self._lock:
            row = self._rows.get(job_id)
            asked = job_id in self._cancels
        # The row as recorded ``running`` holds all the end needs, but a cancel asked since.
        job = self.store.job(job_id) if asked or row is None else row
        self.cgroups.end(job)  # and nothing that left its session (setsid)
        with self._lock:
            self._children.pop(job_id, None)
        self._finish(job, code, timed_out=timed_out)
        return False

    def _finish(self, job: Job, code: int | None, *, timed_out: bool, lost: str = "") -> None:
        """Record how the job's agent ended (rq's ``handle_job_success``/``_failure``): its
        leftovers committed, its branch measured, its report, and the state it ends in.
        ``job``: its row as last read (the move at the end reads it afresh)."""
        assert job.id is not None
        job_id = job.id
        fields: dict[str, object] = {"finished_at": utcnow(), "pid": None}
        fields.update(
            exit_code=code if code is None or code >= 0 else None, signal=proc.signal_of(code)
        )
        problem = lost
        try:
            repo_path = Path(self.store.repo(job.repo_id).path)
            stats, collect_problem = result.collect(
                self.settings, job, repo_path, timed_out=timed_out
            )
            fields.update(stats)
            problem = problem or collect_problem
        except DispatcherError as exc:
            problem = problem or f"could not record the result: {exc.message}"
        kind = invocation.report_kind(self.settings, job)
        reported = report.agent_report(self.settings, job, kind)
        agent_error = reported.pop("agent_error", None)
        fields.update(reported)
        cost = reported.get("cost_usd")
        if job.max_cost_usd is not None and cost is not None and cost > job.max_cost_usd:
            problem = problem or (
                f"the agent reported ${cost:.4f}, over the job's budget of "
                f"${job.max_cost_usd:.4f}; its work is kept on the branch"
            )
        if agent_error is not None:  # even with exit 0 (Claude's is_error result)
            problem = problem or f"the agent reported an error: {agent_error}"
        state, error = result.outcome(job, code, timed_out=timed_out, problem=problem)
        if self.before_end is not None:
            fields.update(self.before_end(job, fields))
        with faults.scope("job-end"):
            self.store.advance(
                job_id, JobState.RUNNING, state, guard=self._guard(job_id, job), error=error,
                **fields,
            )  # fmt: skip
        with self._lock:  # the ended row, for the hooks once the runner lets go of it
            if job_id in self._active:
                self._ended[job_id] = _set(job, state=state, error=error, **fields)
        ended = f"job {job_id} {state.value}" + (f": {error}" if error else "")
        self.note(job_id, ended)
        log.info("%s", ended)

    # ------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Bring back under supervision the jobs earlier starts of this node left (and
        those of no worker), after taking over the busy jobs of dead workers of other
        nodes (docs/cluster.md). Busy jobs of other nodes that are alive are theirs."""
        self._take_over_dead()
        for job in self.store.jobs_in(takeover.BUSY, node=self.node):
            assert job.id is not None
            try:
                with logctx.bound(job_id=job.id):
                    self._recover_one(job)
            except TakenOver as exc:  # between the read and the write: another's now
                log.warning("job %s: dropped: %s", job.id, exc.message)
                self._kill_lost(job)
                continue
            except Exception:
                log.exception("job %s: recovery failed", job.id, extra={"job_id": job.id})
                self._fail_if_stuck(
                    job.id, "could not be recovered after a daemon restart", held=job
                )
            with self._lock:
                supervised = job.id in self._active
            if not supervised and self.on_finished is not None:
                self.on_finished(job.id, None)  # ended while we were down: announce it
        self.cgroups.sweep(self.store, node=self.node)

    def _take_over_dead(self) -> None:
        """The busy jobs of dead workers of other nodes: re-queued or ended
        (:mod:`dispatcher.jobs.takeover`), announced when ended."""
        if self.node is None:
            return  # no node: every row is this runner's own
        timeout = timedelta(seconds=self.settings.worker_timeout_seconds)
        grace = timedelta(seconds=self.settings.worker_stopped_grace_seconds)
        dead = WorkerStore(self.store).dead(self.node, timeout, grace)
        for taken in takeover.take_over(self.settings, self.store, self.worker_id, dead):
            if taken.state is JobState.QUEUED:
                self.wake()
            elif self.on_taken_over is not None:
                self.on_taken_over(taken.job_id)

    def _kill_lost(self, job: Job) -> None:
        """The agent of a job found taken over at recovery, if it still runs here."""
        pid, start = job.pid, job.pid_start
        if (
            job.id is not None
            and pid is not None
            and start is not None
            and proc.is_alive(pid, start)
        ):
            exit_file = job_files(self.settings, job.id).exit
            self._kill_in_background(
                proc.Spawned(pid, start, exit_file, None, self.cgroups.of(job))
            )

    def _recover_one(self, job: Job, why: str = "daemon restarted") -> None:
        """Re-adopt the job's agent if it still runs; else record how it ended, or
        queue the job again (see :mod:`dispatcher.jobs.recovery`). ``why`` starts the
        log's line."""
        assert job.id is not None
        repo = self.store.repo(job.repo_id)
        logctx.bind(repo=repo.name)  # inside recover()'s block for this job
        files = job_files(self.settings, job.id)
        if job.state is JobState.PREPARING:
            started = recovery.spawn_started(self.settings, self.store, job)
            if started is None:
                recovery.undo_preparing(self.settings, self.store, self.cgroups, job, repo)
                return
            job = started
        assert job.id is not None
        job_id, pid, pid_start = job.id, job.pid, job.pid_start
        if pid is not None and pid_start is not None and proc.is_alive(pid, pid_start):
            if self.worker_id is not None and job.worker_id != self.worker_id:
                # The job is this start's now: guarded on the claim it was left with.
                self.store.update(job_id, guard=Guard.of(job), worker_id=self.worker_id)
                job = _set(job, worker_id=self.worker_id)
            child = proc.Spawned(pid, pid_start, files.exit, None, self.cgroups.of(job))
            with self._lock:
                self._children[job_id] = child
            self._hold(job_id, Guard.of(job))
            self.note(job_id, f"{why}: re-adopted agent pid {pid}")
            self._watch(job, child, repo.name)
            return
        self.cgroups.end(job)  # the agent has ended: so does all it left behind
        code = proc.read_exit_file(files.exit)
        if code is not None:
            timed_out = files.timed_out.exists()  # killed at its deadline (before the end)
            how = " (killed at its deadline)" if timed_out else ""
            self.note(job_id, f"{why}: agent had ended with {proc.describe_status(code)}{how}")
            self._finish(job, code, timed_out=timed_out)
            return
        lost = (
            "the agent was lost: it was not running after a daemon restart and left no exit status"
        )
        # A follow-up is not re-run from scratch: that would reset the earlier runs' work.
        if job.attempt < job.max_attempts and not job.cancel_requested and not job.followup_of:
            recovery.requeue(self.settings, self.store, job, repo, lost)
            self.wake()
        else:
            self._finish(job, None, timed_out=False, lost=lost)

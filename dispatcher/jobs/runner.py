"""Runs jobs: claim -> worktree -> agent -> record. Supervises agents like rq.

Ownership rule: once a job is claimed (``preparing``) or ``running``, only the
runner moves it to another state. Others ask: they set ``cancel_requested``
and call :meth:`Runner.cancel`, and the runner ends the job as ``canceled``.

Agents run in their own session (see :mod:`dispatcher.process.proc`), so they outlive
a daemon crash. At start :meth:`Runner.recover` re-adopts the ones still alive
(pid + kernel start time), records how the others ended (from the exit-status
file their wrapper writes), and re-queues jobs caught while preparing.

Exactly once: each spawn has a nonce, recorded on the job before the agent is
spawned. The agent's wrapper claims ``jobs/<id>/spawn-<nonce>`` (an exclusive
create) before it runs the agent; a daemon that finds the job still
``preparing`` after a crash claims the same file itself. Whoever creates it
first wins: if the daemon does, that agent can never run and the job is
re-queued; if the wrapper did, its agent is adopted as running.

Each agent runs in a cgroup (v2) of its own where the machine allows
(:mod:`dispatcher.process.cgroups`), killed whole when the job ends, so that processes
that left the agent's session (``setsid``) end with it; else only its process
group is killed, and the job log says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher import faults
from dispatcher.agents import output, profiles
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidInput
from dispatcher.git import cmd, commits, dotgit, refs, worktrees
from dispatcher.jobs import budget, conventions, workspace
from dispatcher.jobs.pool import WorktreePool, left_out_note
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import JobState
from dispatcher.process import cgroups, proc, sandbox
from dispatcher.store.database import Store
from dispatcher.store.models import Job, Repo, utcnow

log = logging.getLogger(__name__)

_SLUG_RE = re.compile(r"[^a-z0-9]+")


def branch_name(job_id: int, text: str) -> str:
    """``dispatcher/<id>-<slug>``: the slug is made of [a-z0-9-] only, whatever the text."""
    slug = _SLUG_RE.sub("-", text.lower()).strip("-")[:40].strip("-") or "job"
    return f"dispatcher/{job_id}-{slug}"


@dataclass(frozen=True)
class JobFiles:
    """Files the daemon keeps per job, outside the worktree (never committed)."""

    root: Path

    @property
    def prompt(self) -> Path:
        return self.root / "prompt.md"

    @property
    def log(self) -> Path:
        return self.root / "agent.log"

    @property
    def exit(self) -> Path:
        return self.root / "exit"

    def claim(self, nonce: str) -> Path:
        """The claim file of the spawn with this nonce (see the module docstring)."""
        return self.root / f"spawn-{nonce}"

    @property
    def summary(self) -> Path:
        """Where an agent that can (Codex's ``-o``) writes its final message."""
        return self.root / "summary.md"


_MIB = 1024 * 1024


def _mb(size: float) -> str:
    """``size`` bytes in MB (MiB), one decimal where it matters: "200 MB", "50.5 MB"
    (KB below one MB)."""
    if size < _MIB:
        return f"{size / 1024:.1f}".removesuffix(".0") + " KB"
    return f"{size / _MIB:.1f}".removesuffix(".0") + " MB"


def _listed(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def job_files(settings: Settings, job_id: int) -> JobFiles:
    return JobFiles(settings.jobs_dir / str(job_id))


def worktree_path(settings: Settings, repo: Repo, job_id: int) -> Path:
    return settings.worktrees_dir / repo.name / str(job_id)


def _port_is_free(port: int) -> bool:
    """True if nothing listens on ``port`` (loopback) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _env_without_daemon_secrets() -> dict[str, str]:
    """The daemon's environment for a child it starts in a worktree: cleaned of
    ``GIT_*`` redirections (:func:`dispatcher.git.cmd.clean_env`) and of every
    ``DISPATCHER_*`` variable, so the token and webhook secrets never reach it."""
    return {k: v for k, v in cmd.clean_env().items() if not k.startswith("DISPATCHER_")}


def sandbox_view(
    settings: Settings, checkouts: Sequence[Path], worktree: Path, ws: Workspace,
    read_only: Sequence[Path] = (),
) -> sandbox.View:  # fmt: skip
    """What a job's processes (setup, agent, cleanup) see in the sandbox: the state dir,
    the database and every registered checkout hidden; the worktree, its git dir and its
    ``link:`` targets given back, and ``read_only`` (see dispatcher/process/sandbox.py)."""
    dirs = dotgit.git_dirs(worktree)  # from its .git file: no process on the spawn path
    git_dir, admin = (dirs.common, dirs.gitdir) if dirs else (None, None)  # None: broken
    return sandbox.job_view(
        state_dir=settings.state_dir, checkouts=checkouts, worktree=worktree, git_dir=git_dir,
        admin_dir=admin if admin != git_dir else None, read_only=read_only,
        links=workspace.link_targets(ws, worktree, checkouts), database=settings.sqlite_file,
    )  # fmt: skip


def note_job(settings: Settings, job_id: int, text: str) -> None:
    """Append a daemon line to a job's log (best effort: a full disk loses the note,
    which then goes to the daemon log)."""
    files = job_files(settings, job_id)
    try:
        files.root.mkdir(parents=True, exist_ok=True)
        with open(files.log, "a", encoding="utf-8") as fh:
            fh.write(f"[dispatcher] {text}\n")
    except OSError as exc:
        log.warning("job %s: cannot write its log (%s): %s", job_id, exc, text)


def run_cleanup(
    settings: Settings, job_id: int, ws: Workspace, worktree: Path, *, checkouts: Sequence[Path]
) -> None:
    """Run a job's ``cleanup:`` in its worktree before the worktree goes; its output goes
    to the job log. Best effort: a failure is noted there and never stops the removal.
    It runs in the job's sandbox: the worktree holds the agent's edits (``checkouts``:
    every registered repo's path, hidden from it)."""
    if not ws.cleanup or not worktree.is_dir():
        return
    files = job_files(settings, job_id)
    try:
        files.root.mkdir(parents=True, exist_ok=True)
        env = _env_without_daemon_secrets()
        env.update(DISPATCHER_JOB_ID=str(job_id), DISPATCHER_WORKTREE=str(worktree))
        box = sandbox.sandbox_for(settings.sandbox, settings.sandbox_bwrap)
        view = sandbox_view(settings, checkouts, worktree, ws)
        workspace.run_script(
            "cleanup", ws.cleanup, worktree=worktree, env=env, log_path=files.log,
            exit_file=files.root / "cleanup.exit", timeout=ws.setup_timeout_s,
            grace=settings.kill_grace_seconds, wrap=lambda argv: box.wrap(argv, view, env=env),
        )  # fmt: skip
    except (DispatcherError, OSError) as exc:
        reason = exc.message if isinstance(exc, DispatcherError) else str(exc)
        log.warning("job %s: cleanup: %s", job_id, reason)
        with contextlib.suppress(OSError), open(files.log, "a", encoding="utf-8") as fh:
            fh.write(f"[dispatcher] cleanup: {reason}; the worktree is removed anyway\n")


class Runner:
    def __init__(self, settings: Settings, store: Store, pool: WorktreePool | None = None) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._children: dict[int, proc.Spawned] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._loop: threading.Thread | None = None
        self.on_finished: Callable[[int], None] | None = None
        self.cgroup_parent: Path | None = None  # where job cgroups go; None: not used
        self.cgroup_problem = "not probed yet"  # why not, when cgroup_parent is None

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self.setup_cgroups()
        self.recover()
        self._loop = threading.Thread(target=self._claim_loop, name="runner", daemon=True)
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming. Running agents are left running, to be re-adopted on restart."""
        self._stopping.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join(timeout)
        if self.cgroup_parent is not None and self.settings.cgroup_parent is None:
            with contextlib.suppress(OSError):  # still holds the agents left running
                self.cgroup_parent.rmdir()

    def wake(self) -> None:
        self._wake.set()

    def setup_cgroups(self) -> None:
        """Find and probe where job cgroups go; say once in the daemon log if they cannot."""
        digest = hashlib.sha256(str(self.settings.state_dir).encode()).hexdigest()[:12]
        try:
            if self.settings.cgroups == "off":
                raise cgroups.Unavailable("DISPATCHER_CGROUPS=off")
            parent = self.settings.cgroup_parent or cgroups.find_parent(f"dispatcher-{digest}")
            cgroups.probe(parent)
        except cgroups.Unavailable as exc:
            self.cgroup_parent, self.cgroup_problem = None, str(exc)
            log.log(
                logging.INFO if self.settings.cgroups == "off" else logging.WARNING,
                "cgroups are unavailable (%s): a job's end kills only its agent's process "
                "group, which processes that call setsid leave",
                exc,
            )
            return
        self.cgroup_parent, self.cgroup_problem = parent, ""
        log.info("agents run in cgroups under %s", parent)

    def _cgroup_of(self, job: Job) -> Path | None:
        if self.cgroup_parent is None or job.spawn_nonce is None:
            return None
        return self.cgroup_parent / f"job-{job.id}-{job.spawn_nonce}"

    def _make_cgroup(self, job: Job) -> Path | None:
        """The job's cgroup, made for the spawn about to start; None (noted in the job
        log) where there is none."""
        assert job.id is not None
        path = self._cgroup_of(job)
        if path is not None:
            try:
                cgroups.create(path)
                return path
            except OSError as exc:
                problem = f"cannot create {path}: {exc.strerror}"
        else:
            problem = self.cgroup_problem
        self.note(
            job.id,
            f"warning: cgroups are unavailable ({problem}): the job's end kills only the "
            "agent's process group, which processes that call setsid leave",
        )
        return None

    def _end_cgroup(self, job: Job) -> None:
        """Kill whatever is left in the job's cgroup and remove it (best effort)."""
        path = self._cgroup_of(job)
        if path is None:
            return
        try:
            cgroups.remove(path)
        except OSError as exc:
            log.warning("job %s: cannot remove its cgroup %s: %s", job.id, path, exc)

    def cancel(self, job_id: int) -> None:
        """Kill the job's agent tree if it runs here (the supervisor records ``canceled``)."""
        with self._lock:
            child = self._children.get(job_id)
        if child is not None:
            threading.Thread(
                target=proc.kill_tree,
                args=(child.pid, child.start_time),
                kwargs={"grace": self.settings.kill_grace_seconds},
                daemon=True,
            ).start()

    def join(self, job_id: int, timeout: float) -> None:
        """Wait until the runner has let go of ``job_id`` (or ``timeout`` passes)."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------ loop

    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                full = len(self._threads) >= self.settings.max_parallel
            if full:  # every slot is ours and busy: no query until one frees (it wakes us)
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                claimed = self.store.claim(
                    max_parallel=self.settings.max_parallel,
                    per_repo_default=self.settings.max_parallel_per_repo,
                )
            except Exception:
                log.exception("claiming jobs failed")
                claimed = []
            for c in claimed:
                self._start_thread(c.job_id, self._run, c.job_id)
            if not claimed:
                self._wake.wait(1.0)
                self._wake.clear()

    def _start_thread(self, job_id: int, target: Callable[..., None], *args: object) -> None:
        def body() -> None:
            try:
                target(*args)
            except Exception:
                log.exception("job %s: supervisor crashed", job_id)
                self._fail_if_stuck(job_id, "internal error in the supervisor; see daemon log")
            finally:
                with self._lock:
                    self._threads.pop(job_id, None)
                    self._children.pop(job_id, None)
                self._wake.set()
                if self.on_finished is not None:
                    self.on_finished(job_id)

        thread = threading.Thread(target=body, name=f"job-{job_id}", daemon=True)
        with self._lock:
            self._threads[job_id] = thread
        thread.start()

    def _fail_if_stuck(self, job_id: int, reason: str) -> None:
        try:
            job = self.store.job(job_id)
            if job.state in (JobState.PREPARING, JobState.RUNNING):
                self.store.move(
                    job_id, job.state, JobState.FAILED, error=reason, finished_at=utcnow()
                )
        except Exception:
            log.exception("job %s: could not mark failed", job_id)

    # ------------------------------------------------------------ one job

    def note(self, job_id: int, text: str) -> None:
        """Append a daemon line to the job's log (see :func:`note_job`)."""
        note_job(self.settings, job_id, text)

    def _run(self, job_id: int) -> None:
        job = self.store.job(job_id)
        repo = self.store.repo(job.repo_id)
        files = job_files(self.settings, job_id)
        continuing = job.followup_of is not None  # a follow-up runs in its parent's worktree
        worktree = Path(job.worktree) if continuing and job.worktree else None
        worktree = worktree or worktree_path(self.settings, repo, job_id)
        repo_path = Path(repo.path)
        ws = Workspace.model_validate(job.workspace or {})
        try:
            files.root.mkdir(parents=True, exist_ok=True)
            if not (repo_path / ".git").exists():
                raise InvalidInput(f"repo path {repo.path} no longer holds a git repository")
            budget.check_daily(self.settings, self.store, repo)
            self.note(
                job_id, f"job {job_id}: worktree {worktree} on {job.branch} at {job.base_sha}"
            )
            if continuing:
                self._take_over(job, repo_path, worktree)
            else:
                self._make_worktree(job, repo, worktree)
                for line in workspace.bring_files(ws, repo_path, worktree):
                    self.note(job_id, line)
            with_port = self.store.allocate_port(
                job_id,
                base=self.settings.job_port_base,
                count=self.settings.job_port_count,
                block=self.settings.job_ports,
                usable=_port_is_free,
                worktree=str(worktree),
                spawn_nonce=secrets.token_hex(6),  # this run's claim file and cgroup
            )
            if with_port is None:
                raise InvalidInput(
                    "no free block of ports for DISPATCHER_PORT: raise "
                    "DISPATCHER_JOB_PORT_COUNT or lower max-parallel"
                )
            job = with_port
            env = self._agent_env(job, files.prompt, worktree, job.port)
            profile = self._profile(job)
            text = self._conventions(job, repo_path, profile, ws)
            via_flag = bool(
                text and profile.system_prompt_flag and len(text) <= conventions.MAX_SYSTEM_PROMPT
            )
            prompt = (
                job.prompt if via_flag or not text else f"{text}\n\n# Your task\n\n{job.prompt}"
            )
            files.prompt.write_text(prompt, encoding="utf-8")
            box = sandbox.sandbox_for(self.settings.sandbox, self.settings.sandbox_bwrap)
            checkouts = [Path(r.path) for r in self.store.repos()]
            view = sandbox_view(self.settings, checkouts, worktree, ws, [files.prompt])
            self.note(job_id, box.note(view))
            if ws.setup and not continuing:
                workspace.run_script(
                    "setup", ws.setup, worktree=worktree, env=env, log_path=files.log,
                    exit_file=files.root / "setup.exit", timeout=ws.setup_timeout_s,
                    grace=self.settings.kill_grace_seconds,
                    wrap=lambda argv: box.wrap(argv, view, env=env),
                )  # fmt: skip
                self.note(job_id, "setup: done")
                job = self.store.job(job_id)  # setup took a while: was it canceled meanwhile?
            if job.cancel_requested:
                self.store.move(job_id, JobState.PREPARING, JobState.CANCELED, finished_at=utcnow())
                self.note(job_id, "canceled before the agent started")
                return
            resume = self._resume_session(job, profile)
            argv = profiles.build_argv(
                profile, prompt_file=files.prompt, workdir=worktree, resume_session=resume,
                system_prompt=text if via_flag else None, max_cost_usd=job.max_cost_usd,
                summary_file=files.summary,
            )  # fmt: skip
            files.summary.unlink(missing_ok=True)  # an earlier attempt's is not this one's
            shown = [a if a != text else "<conventions>" for a in argv]
            self.note(job_id, f"agent {job.agent}: {shown!r}")
            if text:
                how = f"with {profile.system_prompt_flag}" if via_flag else "in the prompt file"
                self.note(job_id, f"conventions: {len(text)} characters, {how}")
            assert job.spawn_nonce is not None
            cgroup = self._make_cgroup(job)
            faults.reach("runner.before-spawn")
            child = proc.spawn(
                box.wrap(argv, view.with_files(files.summary), env=env),
                cwd=worktree,
                env=env,
                stdin_path=files.prompt if profile.stdin_prompt else None,
                log_path=files.log,
                exit_file=files.exit,
                limits=self._limits(),
                claim_file=files.claim(job.spawn_nonce),
                cgroup=cgroup,
                log_cap=proc.LogCap(
                    self.settings.max_log_bytes, self.settings.log_keep,
                    output.HEAD_MAX_BYTES,
                ),
            )  # fmt: skip
            faults.reach("runner.after-spawn")
        except (DispatcherError, OSError) as exc:
            self._end_cgroup(job)
            reason = exc.message if isinstance(exc, DispatcherError) else str(exc)
            self.note(job_id, f"failed before the agent started: {reason}")
            if continuing:  # the worktree holds the earlier runs' work: keep it
                self.store.move(
                    job_id, JobState.PREPARING, JobState.FAILED, error=reason,
                    finished_at=utcnow(),
                )  # fmt: skip
                return
            run_cleanup(
                self.settings,
                job_id,
                ws,
                worktree,
                checkouts=[Path(r.path) for r in self.store.repos()],
            )
            self._remove_worktree(repo_path, worktree, job.branch)  # nothing ran: undo it all
            self.store.move(
                job_id,
                JobState.PREPARING,
                JobState.FAILED,
                error=reason,
                worktree=None,
                finished_at=utcnow(),
            )
            return
        with self._lock:
            self._children[job_id] = child
        if self.pool is not None and not continuing:
            self.pool.fill(repo)  # refill behind the running agent, off the spawn path
        job = self.store.move(
            job_id,
            JobState.PREPARING,
            JobState.RUNNING,
            pid=child.pid,
            pid_start=child.start_time,
            started_at=utcnow(),
        )
        if job.cancel_requested:  # canceled while we were spawning
            self.cancel(job_id)
        self._supervise(job_id, child, job)

    def _make_worktree(self, job: Job, repo: Repo, worktree: Path) -> None:
        """A warm tree from the pool if there is one, else a fresh checkout; locked,
        so that ``git worktree prune`` never drops it while the job owns it. (Its path
        is recorded with the job's port, in one write.)"""
        assert job.id is not None
        job_id = job.id
        repo_path = Path(repo.path)
        worktree.parent.mkdir(parents=True, exist_ok=True)
        reason = f"dispatcher job {job_id}"
        pool = None if job.sparse else self.pool  # a sparse tree is made, never recycled
        if pool is not None and pool.take(repo, worktree, job.branch, job.base_sha):
            worktrees.lock(repo_path, worktree, reason, new=True)
            self.note(job_id, "worktree: recycled from the warm pool")
            return
        worktrees.add(
            repo_path, worktree, job.branch, job.base_sha, lock_reason=reason,
            sparse=job.sparse or (),
        )  # fmt: skip
        what = f"sparse checkout of {', '.join(job.sparse)}" if job.sparse else "checkout"
        self.note(job_id, f"worktree: fresh {what}")

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

    def _resume_session(self, job: Job, profile: profiles.AgentProfile) -> str | None:
        """The session a follow-up resumes: its parent's, when the agent can resume."""
        if job.followup_of is None or job.id is None:
            return None
        parent = self.store.job(job.followup_of)
        if parent.session_id and profile.resume_argv is not None:
            self.note(job.id, f"resuming agent session {parent.session_id}")
            return parent.session_id
        why = "no session was recorded" if not parent.session_id else "the agent cannot resume"
        self.note(job.id, f"{why}: a new session with the follow-up prompt")
        return None

    def _conventions(
        self, job: Job, repo_path: Path, profile: profiles.AgentProfile, ws: Workspace
    ) -> str:
        """The conventions text for this job's agent. A one-off ``--command`` gets its
        prompt verbatim (it may not be a model at all) unless the job selected skills."""
        if profile.name == profiles.COMMAND and not ws.skills:
            return ""
        conv = conventions.load(repo_path, job.base_sha)
        conventions.check_selected(conv, ws.skills)
        return conventions.render(conv, ws.skills, include_agents_md=not profile.reads_agents_md)

    def _profile(self, job: Job) -> profiles.AgentProfile:
        if job.profile is not None:  # resolved when the job was submitted
            return profiles.AgentProfile.model_validate(job.profile)
        if job.command:
            return profiles.command_profile(job.command)
        return profiles.resolve_profile(job.agent, self.settings.agents)

    def _agent_env(
        self, job: Job, prompt_file: Path, worktree: Path, port: int | None = None
    ) -> dict[str, str]:
        assert job.id is not None
        env = _env_without_daemon_secrets()
        env.update(
            DISPATCHER_JOB_ID=str(job.id),
            DISPATCHER_API=self.settings.api_url,
            DISPATCHER_PROMPT_FILE=str(prompt_file),
            DISPATCHER_WORKTREE=str(worktree),
            DISPATCHER_BRANCH=job.branch,
            DISPATCHER_BASE=job.base_sha,
        )
        if port is not None:  # the job's own ports: parallel dev servers never collide
            last = port + self.settings.job_ports - 1
            env.update(DISPATCHER_PORT=str(port), DISPATCHER_PORTS=f"{port}-{last}", PORT=str(port))
        return env

    def _limits(self) -> proc.Limits | None:
        memory = self.settings.agent_memory_mb
        cpu = self.settings.agent_cpu_seconds
        if memory is None and cpu is None:
            return None
        return proc.Limits(memory_bytes=memory * 2**20 if memory else None, cpu_seconds=cpu)

    def _supervise(self, job_id: int, child: proc.Spawned, job: Job | None = None) -> None:
        """Wait for the agent (killing it at its deadline), then record how it ended.
        ``job``: the row as the caller last saw it (read here if not given)."""
        job = job or self.store.job(job_id)
        started = job.started_at or utcnow()
        deadline = job.timeout_s - (utcnow() - started).total_seconds()
        # The log is capped as the agent writes, by its log writer (dispatcher/process/logpipe.py).
        code = proc.wait(child, timeout=max(0.0, deadline))
        timed_out = code is None
        if timed_out:
            self.note(job_id, f"timed out after {job.timeout_s:g}s: killing the process tree")
            proc.kill_tree(child.pid, child.start_time, grace=self.settings.kill_grace_seconds)
            code = proc.wait(child, timeout=self.settings.kill_grace_seconds + 10)
        else:
            # The agent is gone; make sure nothing it started in its session lingers.
            proc.kill_tree(child.pid, None, grace=self.settings.kill_grace_seconds)
        self._end_cgroup(job)  # and nothing that left its session (setsid)
        with self._lock:
            self._children.pop(job_id, None)
        self._finish(job_id, code, timed_out=timed_out)

    def _finish(self, job_id: int, code: int | None, *, timed_out: bool, lost: str = "") -> None:
        job = self.store.job(job_id)
        fields: dict[str, object] = {"finished_at": utcnow(), "pid": None}
        fields.update(
            exit_code=code if code is None or code >= 0 else None, signal=proc.signal_of(code)
        )
        problem = lost
        try:
            stats, collect_problem = self._collect(job)
            fields.update(stats)
            problem = problem or collect_problem
        except DispatcherError as exc:
            problem = problem or f"could not record the result: {exc.message}"
        reported = self._report(job)
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
        if job.cancel_requested:
            state, error = JobState.CANCELED, problem or "canceled on request"
        elif timed_out:
            state = JobState.TIMED_OUT
            error = f"timed out after {job.timeout_s:g}s; the agent's process tree was killed"
        elif problem:
            state, error = JobState.FAILED, problem
        elif code == 0:
            state, error = JobState.SUCCEEDED, None
        else:
            state, error = JobState.FAILED, f"agent ended with {proc.describe_status(code)}"
        self.store.move(job_id, JobState.RUNNING, state, error=error, **fields)
        self.note(job_id, f"job {job_id} {state.value}" + (f": {error}" if error else ""))

    def _report_kind(self, job: Job) -> str:
        """The output format the job's agent reports in ("text": none)."""
        try:
            return self._profile(job).reports or "text"
        except DispatcherError:
            return "text"

    def _report(self, job: Job) -> dict[str, Any]:
        """What the agent reported about itself (summary, cost, tokens, turns, session),
        parsed from its log; ``agent_error`` is set when it reported a failure."""
        assert job.id is not None
        kind = self._report_kind(job)
        files = job_files(self.settings, job.id)
        try:
            report = output.parse_log(kind, files.log)
            # Printed once at the start: in the head of a long log, or kept before a rotation.
            session = report.session_id or output.session_in_head(kind, files.log)
        except OSError as exc:  # an unreadable log costs the report, never the job's outcome
            log.warning("job %s: cannot read its log for the agent's report: %s", job.id, exc)
            report, session = output.EMPTY_REPORT, None
        session = session or job.session_id
        summary = report.summary
        with contextlib.suppress(OSError, UnicodeDecodeError):
            written = files.summary.read_text(encoding="utf-8").strip()
            summary = written[: output.SUMMARY_MAX] or summary  # the agent's own file
        fields: dict[str, Any] = {
            "summary": summary,
            "cost_usd": report.cost_usd,
            "input_tokens": report.input_tokens,
            "output_tokens": report.output_tokens,
            "turns": report.turns,
            "session_id": session or None,
        }
        if report.is_error:
            fields["agent_error"] = report.error or "no reason given"
        return fields

    def _collect(self, job: Job) -> tuple[dict[str, object], str]:
        """Commit what the agent left, then measure the branch against its base.

        Returns the result fields and a problem that fails the job ("" if none).
        """
        assert job.id is not None and job.worktree is not None
        repo_path = Path(self.store.repo(job.repo_id).path)
        worktree = Path(job.worktree)
        if not worktree.is_dir():
            raise InvalidInput(f"worktree {worktree} vanished while the agent ran")
        foreign = dotgit.foreign_worktree(worktree, repo_path)
        if foreign:
            raise InvalidInput(foreign)
        branch = worktrees.current_branch(worktree)
        problem = ""
        if branch == job.branch:
            problem = self._commit_leftovers(job, worktree)
        else:
            where = branch or "a detached HEAD"
            problem = (
                f"the agent left its worktree on {where} instead of {job.branch}; "
                "its uncommitted changes were left in place, not committed"
            )
        head = refs.branch_head(repo_path, job.branch)
        if head is None:
            raise InvalidInput(f"the agent deleted its branch {job.branch}")
        stats = refs.branch_stats(repo_path, job.base_sha, head)
        fields: dict[str, object] = {
            "head_sha": head,
            "commits_ahead": stats.ahead,
            "files_changed": stats.diff.files,
            "insertions": stats.diff.insertions,
            "deletions": stats.diff.deletions,
        }
        if not problem and not stats.contains_base:
            problem = (
                f"the agent rewrote history: {job.branch} no longer contains its base "
                f"{job.base_sha[:12]}; the branch is kept as the agent left it"
            )
        return fields, problem

    def _commit_leftovers(self, job: Job, worktree: Path) -> str:
        """Commit what the agent left uncommitted on its branch; a problem that fails the
        job ("" if none) when files over the size limit had to be left out."""
        assert job.id is not None
        first_line = (job.prompt.strip().splitlines() or [""])[0][:200]
        ws = Workspace.model_validate(job.workspace or {})
        limit_mb, setting = self.settings.max_leftover_file_mb, "DISPATCHER_MAX_LEFTOVER_FILE_MB"
        if ws.max_leftover_file_mb is not None:
            limit_mb = ws.max_leftover_file_mb
            setting = "max-leftover-file-mb in the repo's .dispatcher/triggers.yml"
        limit = ws.max_leftover_bytes(self.settings.max_leftover_file_mb)
        done = commits.commit_leftovers(
            worktree,
            f"dispatcher: changes left uncommitted by job {job.id}\n\nPrompt: {first_line}",
            author_name=self.settings.commit_author_name,
            author_email=self.settings.commit_author_email,
            exclude=ws.never_commit(),
            max_file_bytes=limit,
        )
        if done.ignored:
            self.note(
                job.id,
                "not committed, though staged: files the repo's ignore rules match "
                f"(left in the worktree): {_listed(done.ignored)}",
            )
        if not done.too_big:
            return ""
        files = _listed([f"{path} ({_mb(size)})" for path, size in done.too_big])
        return (
            f"left uncommitted, over the {_mb(limit_mb * _MIB)} limit for automatic commits: "
            f"{files}; commit them yourself in the worktree or raise {setting}"
        )

    def _remove_worktree(self, repo_path: Path, worktree: Path, branch: str) -> None:
        try:
            worktrees.remove(repo_path, worktree)
            worktrees.delete_branch(repo_path, branch)
        except DispatcherError as exc:
            log.warning("cleanup of %s failed: %s", worktree, exc.message)

    # ------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Bring jobs left by a previous daemon back under supervision."""
        for job in self.store.jobs_in([JobState.PREPARING, JobState.RUNNING]):
            assert job.id is not None
            try:
                self._recover_one(job)
            except Exception:
                log.exception("job %s: recovery failed", job.id)
                self._fail_if_stuck(job.id, "could not be recovered after a daemon restart")
            with self._lock:
                supervised = job.id in self._threads
            if not supervised and self.on_finished is not None:
                self.on_finished(job.id)  # ended while we were down: announce it (if it did)
        self._sweep_cgroups()

    def _sweep_cgroups(self) -> None:
        """Kill and remove job cgroups under ours that no active job owns (left by a
        crash between making one and recording the job's end)."""
        if self.cgroup_parent is None:
            return
        owned = {
            path
            for job in self.store.jobs_in([JobState.PREPARING, JobState.RUNNING])
            if (path := self._cgroup_of(job)) is not None
        }
        for path in cgroups.children(self.cgroup_parent):
            if path.name.startswith("job-") and path not in owned:
                try:
                    cgroups.remove(path)
                except OSError as exc:
                    log.warning("cannot remove the stale cgroup %s: %s", path, exc)

    def _spawn_started(self, job: Job) -> Job | None:
        """For a job left ``preparing``: did its agent start? None if it never did and
        now never can (this daemon holds its claim); else the job, moved to ``running``
        with the agent's pid (None if it has ended already)."""
        assert job.id is not None
        if job.spawn_nonce is None:
            return None  # no spawn was about to start
        claim = job_files(self.settings, job.id).claim(job.spawn_nonce)
        claim.parent.mkdir(parents=True, exist_ok=True)
        if proc.take_claim(claim):
            return None
        pid = proc.claim_holder(claim)
        if pid is None:
            return None  # an earlier daemon's claim, or a wrapper that died claiming
        start = proc.runs_spawn(pid, claim)  # None: it has ended (or the pid is another's)
        started = datetime.fromtimestamp(claim.stat().st_mtime, UTC)
        how = f"it runs as pid {pid}: adopted" if start is not None else "it has ended"
        self.note(job.id, f"daemon restarted while the agent was starting; {how}")
        return self.store.move(
            job.id, JobState.PREPARING, JobState.RUNNING,
            pid=pid if start is not None else None, pid_start=start, started_at=started,
        )  # fmt: skip

    def _recover_one(self, job: Job) -> None:
        assert job.id is not None
        repo = self.store.repo(job.repo_id)
        files = job_files(self.settings, job.id)
        if job.state is JobState.PREPARING:
            started = self._spawn_started(job)
            if started is None:
                self._undo_preparing(job, repo)
                return
            job = started
        assert job.id is not None
        if (
            job.pid is not None
            and job.pid_start is not None
            and proc.is_alive(job.pid, job.pid_start)
        ):
            child = proc.Spawned(job.pid, job.pid_start, files.exit, None)
            with self._lock:
                self._children[job.id] = child
            self.note(job.id, f"daemon restarted: re-adopted agent pid {job.pid}")
            self._start_thread(job.id, self._supervise, job.id, child)
            return
        self._end_cgroup(job)  # the agent has ended: so does all it left behind
        code = proc.read_exit_file(files.exit)
        if code is not None:
            self.note(
                job.id, f"daemon restarted: agent had ended with {proc.describe_status(code)}"
            )
            self._finish(job.id, code, timed_out=False)
            return
        lost = (
            "the agent was lost: it was not running after a daemon restart and left no exit status"
        )
        # A follow-up is not re-run from scratch: that would reset the earlier runs' work.
        if job.attempt < job.max_attempts and not job.cancel_requested and not job.followup_of:
            self._requeue(job, repo, lost)
        else:
            self._finish(job.id, None, timed_out=False, lost=lost)

    def _undo_preparing(self, job: Job, repo: Repo) -> None:
        """No agent ran: queue the job again (undoing the half-made worktree)."""
        assert job.id is not None
        self._end_cgroup(job)  # a wrapper that lost its claim may still be in it
        if job.followup_of is not None:
            # A follow-up's worktree holds the earlier runs' work: keep it, run again.
            self.store.move(job.id, JobState.PREPARING, JobState.QUEUED, spawn_nonce=None)
        else:
            self._remove_worktree(
                Path(repo.path), worktree_path(self.settings, repo, job.id), job.branch
            )
            self.store.move(
                job.id, JobState.PREPARING, JobState.QUEUED, worktree=None, spawn_nonce=None
            )
        self.note(job.id, "daemon restarted while preparing: re-queued")

    def _requeue(self, job: Job, repo: Repo, reason: str) -> None:
        """Run a lost job again (attempt + 1, after a backoff), keeping what it had done.

        Its worktree state (commits and uncommitted files) is saved to
        ``refs/dispatcher/attempts/<id>/<attempt>``; then the worktree and branch
        are removed so the next attempt starts clean from the same base.
        """
        assert job.id is not None
        repo_path = Path(repo.path)
        ref = f"refs/dispatcher/attempts/{job.id}/{job.attempt}"
        worktree = Path(job.worktree) if job.worktree else None
        saved = None
        if (
            worktree is not None
            and worktree.is_dir()
            and not dotgit.foreign_worktree(worktree, repo_path)
            and worktrees.is_valid(worktree)
        ):
            ws = Workspace.model_validate(job.workspace or {})
            done = commits.snapshot_worktree(
                worktree,
                ref,
                f"dispatcher: job {job.id} attempt {job.attempt}, interrupted",
                author_name=self.settings.commit_author_name,
                author_email=self.settings.commit_author_email,
                exclude=ws.never_commit(),
                max_file_bytes=ws.max_leftover_bytes(self.settings.max_leftover_file_mb),
            )
            saved = done.sha
            if note := left_out_note(ref, done):
                self.note(job.id, note)
        if saved is None:  # nothing uncommitted: keep the branch's own commits, if any
            head = refs.branch_head(repo_path, job.branch)
            if head is not None and head != job.base_sha:
                commits.update_ref(repo_path, ref, head)
                saved = head
        if worktree is not None:
            self._remove_worktree(repo_path, worktree, job.branch)
        else:
            worktrees.delete_branch(repo_path, job.branch)
        delay = self.settings.retry_backoff_seconds * 2 ** (job.attempt - 1)
        where = f"; its work is saved at {ref}" if saved else ""
        self.store.move(
            job.id,
            JobState.RUNNING,
            JobState.QUEUED,
            attempt=job.attempt + 1,
            not_before=utcnow() + timedelta(seconds=delay),
            worktree=None,
            pid=None,
            pid_start=None,
            started_at=None,
            error=f"{reason}; re-queued as attempt {job.attempt + 1} of {job.max_attempts}{where}",
        )
        self.note(
            job.id,
            f"{reason}: re-queued (attempt {job.attempt + 1} of {job.max_attempts}, "
            f"in {delay:g}s){where}",
        )
        self.wake()

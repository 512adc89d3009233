"""The one path every event takes: route, store (dedup), match, check, submit.

Trigger sources (``triggers/``) only produce :class:`triggers.events.Event`
values; the API's ``POST /events``, the webhooks, the issue inbox, the local
ref and file watchers and the scheduler all hand them to :meth:`Intake.ingest`.

* One dedup key, one stored event: a redelivery changes nothing.
* One event, at most one job per trigger (a unique index on the job table).
* A trigger with ``check:`` runs the check first, in the background, in its
  own worktree at the event's commit; the agent is dispatched only if the
  check fails, with its output tail in the template context. The event lists
  the check as pending until it ends, so a check a stopped or crashed daemon
  left unfinished is run again by the next one (:meth:`Intake.resume_checks`).
* Templates substitute values, never evaluate; a missing value is recorded on
  the event as the reason no job was made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any, Protocol

from dispatcher import git
from dispatcher.checks import CheckInterrupted, CheckResult, run_check
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.models import Event as EventRow
from dispatcher.models import IngestResult, JobCreate, JobPublic, Repo
from dispatcher.store import Store
from dispatcher.trigger_files import TriggerFiles
from triggers.config import Trigger, TriggerFile
from triggers.events import Event
from triggers.match import matching

log = logging.getLogger(__name__)

_FACTS = (
    "forge_repo", "branch", "head_branch", "sha", "before", "paths", "labels",
    "added_label", "author", "text", "workflow", "conclusion", "schedule",
)  # fmt: skip


class Submitter(Protocol):
    """What the intake needs from the service."""

    def submit(
        self,
        req: JobCreate,
        *,
        event_id: int | None = None,
        concurrency_group: str | None = None,
        agent_overrides: dict[str, list[str] | str] | None = None,
        trigger: Trigger | None = None,
    ) -> JobPublic: ...

    def cancel_in_background(self, job_id: int) -> None: ...


class Intake:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        trigger_files: TriggerFiles,
        submitter: Submitter,
    ) -> None:
        self.settings = settings
        self.store = store
        self.trigger_files = trigger_files
        self.submitter = submitter
        self._checks = ThreadPoolExecutor(
            max_workers=settings.check_workers, thread_name_prefix="check"
        )
        self._group_lock = threading.Lock()
        self._stopping = threading.Event()
        self._futures: set[Future[None]] = set()
        self._futures_lock = threading.Lock()
        self._started: set[tuple[int, str]] = set()  # (event id, trigger): checks run by us
        self.on_check_done: Callable[[int], None] | None = None

    def close(self) -> None:
        """Stop running checks (killed; they stay pending on their events, for the next
        daemon) and drop queued ones (also still pending), waiting a bounded time."""
        self._stopping.set()
        self._checks.shutdown(wait=False, cancel_futures=True)
        with self._futures_lock:
            running = list(self._futures)
        wait_futures(running, timeout=self.settings.kill_grace_seconds + 5)

    def _start_check(
        self, repo: Repo, file: TriggerFile, trigger: Trigger, event: Event, event_id: int
    ) -> None:
        with self._futures_lock:
            self._started.add((event_id, trigger.name))
        try:
            future = self._checks.submit(
                self._check_then_dispatch, repo, file, trigger, event, event_id
            )
        except RuntimeError:  # shutting down: the event keeps it pending
            return
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(lambda done: self._forget(done, (event_id, trigger.name)))

    def _forget(self, future: Future[None], check: tuple[int, str]) -> None:
        with self._futures_lock:
            self._futures.discard(future)
            self._started.discard(check)

    # ------------------------------------------------------------ ingest

    def ingest(self, event: Event, repo: Repo | None = None) -> IngestResult:
        """Store ``event`` and dispatch what its repo's triggers say. Never raises for
        a trigger's problem: that is recorded on the event instead."""
        repo = repo or self._route(event)
        if repo is None:
            where = event.repo or event.forge_repo or "?"
            return IngestResult(event_id=None, ignored=f"no registered repo for {where!r}")
        assert repo.id is not None
        facts = {k: v for k, v in event.model_dump(include=set(_FACTS)).items() if v}
        row = self.store.add_event(
            EventRow(
                repo_id=repo.id,
                kind=event.kind,
                action=event.action,
                source=event.source,
                dedup_key=event.dedup_key,
                payload=event.payload,
                facts=facts,
            )
        )
        if row is None:
            seen = self.store.event_by_key(event.dedup_key)
            event_id = seen.id if seen else None
            jobs = self.store.job_ids_for_events([event_id]).get(event_id, []) if event_id else []
            return IngestResult(event_id=event_id, duplicate=True, jobs=jobs)
        assert row.id is not None
        result = IngestResult(event_id=row.id)
        file = self.trigger_files.active(repo.id)
        if file is None:
            self._note(row.id, result, "no active trigger file")
            return result
        triggers = matching(file, event)
        result.matched = [t.name for t in triggers]
        result.pending_checks = [t.name for t in triggers if t.check]
        self.store.note_event(row.id, matched=result.matched, pending_checks=result.pending_checks)
        if not triggers:
            self._note(row.id, result, "no trigger matched")
        for trigger in triggers:
            if trigger.check:
                self._start_check(repo, file, trigger, event, row.id)
            else:
                job_id = self._dispatch(repo, file, trigger, event, row.id, None, result)
                if job_id is not None:
                    result.jobs.append(job_id)
        return result

    def _route(self, event: Event) -> Repo | None:
        if event.repo:
            return self.store.find_repo(name=event.repo)
        if event.forge_repo:
            repos = self.store.repos_by_forge_name(event.forge_repo)
            return repos[0] if repos else None
        return None

    def _note(self, event_id: int, result: IngestResult | None, note: str) -> None:
        if result is not None:
            result.notes.append(note)
        self.store.note_event(event_id, note=note)

    # ------------------------------------------------------------ dispatch

    def _context(
        self, repo: Repo, trigger: Trigger, event: Event, check: CheckResult | None
    ) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "event": event.payload,
            "trigger": {"name": trigger.name},
            "repo": {"name": repo.name, "path": repo.path, "default_branch": repo.default_branch},
        }
        if check is not None:
            ctx["check"] = check.context()
        return ctx

    def _base(self, repo: Repo, trigger: Trigger, event: Event, ctx: dict[str, Any]) -> str:
        """Where the job starts: the trigger's ``base``, else the event's commit (or
        branch) when it exists locally, else the default branch."""
        rendered = trigger.render_base(ctx)
        if rendered:
            return rendered
        path = Path(repo.path)
        candidates: list[str | None] = []
        if event.kind in ("push", "pull_request", "workflow_run", "check_run"):
            candidates = [event.sha, event.head_branch, event.branch]
        for cand in candidates:
            if not cand or cand.startswith("-"):
                continue
            try:
                git.rev_parse(path, cand)
            except DispatcherError:
                continue
            return cand
        return repo.default_branch

    def _prompt(self, repo: Repo, trigger: Trigger, ctx: dict[str, Any]) -> str:
        """The rendered prompt; a ``prompt-file`` is read from the default branch head."""
        text = None
        if trigger.prompt_file is not None:
            text = git.read_file(Path(repo.path), repo.default_branch, trigger.prompt_file)
            if text is None:
                raise DispatcherError(
                    f"prompt-file {trigger.prompt_file} does not exist on {repo.default_branch}"
                )
        return trigger.render_prompt(ctx, prompt_file_text=text)

    def _dispatch(
        self,
        repo: Repo,
        file: TriggerFile,
        trigger: Trigger,
        event: Event,
        event_id: int,
        check: CheckResult | None,
        result: IngestResult | None,
    ) -> int | None:
        assert repo.id is not None
        ctx = self._context(repo, trigger, event, check)
        conc = trigger.concurrency
        try:
            prompt = self._prompt(repo, trigger, ctx)
            base = self._base(repo, trigger, event, ctx)
            group = trigger.concurrency_group(ctx)
            timeout = file.timeout_minutes_for(trigger)
            agent = file.agent_for(trigger)
            with self._group_lock:  # submit + cancel older ones of the group together
                job = self.submitter.submit(
                    JobCreate(
                        repo=repo.name, prompt=prompt, agent=agent, base=base,
                        timeout_minutes=timeout, trigger=trigger.name,
                        sparse=trigger.sparse or None,
                    ),
                    event_id=event_id,
                    concurrency_group=group,
                    agent_overrides=dict(file.agents or {}),
                    trigger=trigger,
                )  # fmt: skip
                if group is not None and conc is not None and conc.cancel_in_progress:
                    for other in self.store.active_in_group(repo.id, group):
                        if other.id is not None and other.id < job.id:
                            self._note(
                                event_id, result,
                                f"trigger {trigger.name}: canceling job {other.id} "
                                f"(concurrency group {group!r})",
                            )  # fmt: skip
                            self.submitter.cancel_in_background(other.id)
        except DispatcherError as exc:
            self._note(event_id, result, f"trigger {trigger.name}: no job: {exc.message}")
            return None
        self._note(event_id, result, f"trigger {trigger.name}: job {job.id}")
        return job.id

    def _check_then_dispatch(
        self, repo: Repo, file: TriggerFile, trigger: Trigger, event: Event, event_id: int
    ) -> None:
        assert trigger.check is not None
        note: str | None = None  # written with the check's end, in one write
        try:
            ctx = self._context(repo, trigger, event, None)
            rev = self._base(repo, trigger, event, ctx)
            timeout = (trigger.check_timeout_minutes or 10) * 60
            result = run_check(
                self.settings, Path(repo.path), rev, trigger.check, timeout_s=timeout,
                stop=self._stopping,
            )  # fmt: skip
            if result.failed:
                status = "timed out" if result.exit_code is None else f"exited {result.exit_code}"
                self._note(event_id, None, f"trigger {trigger.name}: check {status}")
                self._dispatch(repo, file, trigger, event, event_id, result, None)
            else:
                note = (
                    f"trigger {trigger.name}: check `{trigger.check}` passed at "
                    f"{result.sha[:12]}: no job"
                )
        except CheckInterrupted:
            log.info(
                "event %s: check of trigger %s stopped with the daemon", event_id, trigger.name
            )
            return  # still pending on the event: the next daemon runs it again
        except DispatcherError as exc:
            note = f"trigger {trigger.name}: check failed to run: {exc}"
        except Exception:
            log.exception("check of trigger %s crashed", trigger.name)
            note = f"trigger {trigger.name}: check crashed; see daemon log"
        self._check_ended(event_id, trigger.name, note)

    def _check_ended(self, event_id: int, trigger: str, note: str | None = None) -> None:
        try:
            self.store.note_event(event_id, note=note, check_ended=trigger)
        finally:
            if self.on_check_done is not None:
                self.on_check_done(event_id)

    def resume_checks(self) -> int:
        """Start again the checks that a stopped or crashed daemon left pending on their
        events (with the repo's trigger file as it is now); how many were started.

        A check whose job exists already is not run again (the daemon stopped between
        the job and the check's end); one whose trigger is gone or has no ``check:``
        any more is dropped with a note on the event. Checks this daemon started itself
        (events that came in since it started) are left alone.
        """
        started = 0
        for row in self.store.events_with_pending_checks():
            assert row.id is not None
            with self._futures_lock:
                names = [n for n in row.pending_checks if (row.id, n) not in self._started]
            if not names:
                continue
            try:
                repo = self.store.repo(row.repo_id)
            except DispatcherError:
                continue
            assert repo.id is not None
            file = self.trigger_files.active(repo.id)
            triggers = dict(file.triggers) if file is not None else {}
            event = Event(
                kind=row.kind, action=row.action, source=row.source,
                dedup_key=row.dedup_key, payload=row.payload, **row.facts,
            )  # fmt: skip
            for name in names:
                trigger = triggers.get(name)
                if self.store.job_for_event(row.id, name) is not None:
                    self._check_ended(row.id, name)
                elif file is None or trigger is None or not trigger.check:
                    self._note(
                        row.id, None,
                        f"trigger {name}: check not run again after a restart: "
                        "the trigger file no longer has it",
                    )  # fmt: skip
                    self._check_ended(row.id, name)
                else:
                    self._note(row.id, None, f"trigger {name}: check run again after a restart")
                    self._start_check(repo, file, trigger, event, row.id)
                    started += 1
        return started

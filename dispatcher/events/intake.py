"""The one path every event takes: route, store (dedup), match, check, submit.

Trigger sources (``triggers/``) only produce :class:`triggers.events.Event`
values; the API's ``POST /events``, the webhooks, the issue inbox, the local
ref and file watchers and the scheduler all hand them to :meth:`Intake.ingest`.

* One dedup key, one stored event: a redelivery changes nothing.
* One event, at most one job per trigger (a unique index on the job table).
* A trigger with ``check:`` runs the check first, in the background, in its
  own worktree at the event's commit; the agent is dispatched only if the
  check fails, with its output tail in the template context.
* Nothing is lost to a stop or a crash: the event lists each matched trigger as
  pending until its outcome (a job, why no job, a passing check) is recorded,
  in the same write; the next daemon takes up what is still pending
  (:meth:`Intake.resume_pending`), and the one-job-per-trigger index makes a
  second attempt harmless.
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

from dispatcher import logctx
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.events.checks import CheckInterrupted, CheckResult, run_check
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.git import blobs, refs
from dispatcher.store.database import Store
from dispatcher.store.models import Event as EventRow
from dispatcher.store.models import IdempotencyKey, IngestResult, JobCreate, JobPublic, Repo, utcnow
from triggers.config import Trigger, TriggerFile
from triggers.events import REF_DELETED, Event
from triggers.match import DELETED_REF_REASON, matching

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
        fetch_asked: float | None = None,
    ) -> JobPublic: ...

    def cancel_in_background(self, job_id: int) -> None: ...


class Prefetcher(Protocol):
    """The ``fetch: true`` fetches (:class:`dispatcher.service.fetches.Fetches`)."""

    def now(self) -> float: ...

    def fetch(self, repo: Repo, asked: float | None = None) -> str | None: ...


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
        # A `fetch: true` repo's fetch, run before the submit lock (set by the
        # composition root; None: the submit fetches by itself).
        self.prefetch: Prefetcher | None = None
        self._stopping = threading.Event()
        self._futures: set[Future[None]] = set()
        self._futures_lock = threading.Lock()
        # (event id, trigger) being decided by this daemon right now: not to be resumed.
        self._inflight: set[tuple[int, str]] = set()
        # Events stored from now on are decided by this daemon as they come, never by
        # resume_pending (which may run while they are being stored).
        self._started = utcnow()
        # An event not stored: (its source, "duplicate" or "no_repo"); for /metrics.
        self.on_dropped: Callable[[str, str], None] | None = None

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
        key = (event_id, trigger.name)
        try:
            future = self._checks.submit(
                self._check_then_dispatch, repo, file, trigger, event, event_id
            )
        except RuntimeError:  # shutting down: the event keeps it pending
            self._landed(key)
            return
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(lambda done: self._landed(key, done))

    def _take_off(self, event_id: int, names: list[str]) -> list[str]:
        """Mark these triggers of the event as being decided by us; those that were not."""
        with self._futures_lock:
            mine = [n for n in names if (event_id, n) not in self._inflight]
            self._inflight.update((event_id, n) for n in mine)
        return mine

    def _landed(self, key: tuple[int, str], future: Future[None] | None = None) -> None:
        with self._futures_lock:
            self._inflight.discard(key)
            if future is not None:
                self._futures.discard(future)

    # ------------------------------------------------------------ ingest

    def ingest(
        self, event: Event, repo: Repo | None = None, *, idem: IdempotencyKey | None = None
    ) -> IngestResult:
        """Store ``event`` and dispatch what its repo's triggers say. Never raises for
        a trigger's problem: that is recorded on the event instead. ``idem``: the
        request's ``Idempotency-Key``, stored with the event (see
        :class:`dispatcher.store.database.AlreadyMade`)."""
        arrived = self.prefetch.now() if self.prefetch is not None else None
        repo = repo or self._route(event)
        if repo is None:
            where = event.repo or event.forge_repo or "?"
            self.dropped(event, "no_repo")
            return IngestResult(event_id=None, ignored=f"no registered repo for {where!r}")
        assert repo.id is not None
        facts = {k: v for k, v in event.model_dump(include=set(_FACTS)).items() if v}
        file = self.trigger_files.active(repo.id)
        triggers = matching(file, event) if file is not None else []
        matched = [t.name for t in triggers]
        row = self.store.add_event(
            EventRow(
                repo_id=repo.id,
                kind=event.kind,
                action=event.action,
                source=event.source,
                dedup_key=event.dedup_key,
                payload=event.payload,
                facts=facts,
                matched=matched,
                pending_triggers=matched,  # in the event's own write: a crash loses none
            ),
            idem=idem,
        )
        if row is None:
            seen = self.store.event_by_key(event.dedup_key)
            event_id = seen.id if seen else None
            jobs = self.store.job_ids_for_events([event_id]).get(event_id, []) if event_id else []
            self.dropped(event, "duplicate")
            return IngestResult(event_id=event_id, duplicate=True, jobs=jobs)
        assert row.id is not None
        with logctx.bound(event_id=row.id, repo=repo.name):
            log.info(
                "event %s: %s%s from %s, triggers matched: %s", row.id, event.kind,
                f" {event.action}" if event.action else "", event.source,
                ", ".join(matched) or "none",
            )  # fmt: skip
            return self._decide_all(repo, file, triggers, event, row.id, arrived)

    def dropped(self, event: Event, reason: str) -> None:
        """Count an event that is not kept (a duplicate, or no registered repo: the metrics)."""
        if self.on_dropped is not None:
            self.on_dropped(event.source, reason)

    def _decide_all(
        self, repo: Repo, file: TriggerFile | None, triggers: list[Trigger], event: Event,
        event_id: int, arrived: float | None = None,
    ) -> IngestResult:  # fmt: skip
        """Decide each matched trigger of the stored event ``event_id``."""
        matched = [t.name for t in triggers]
        result = IngestResult(event_id=event_id, matched=matched)
        if file is None:
            self._note(event_id, result, "no active trigger file")
            return result
        result.pending_checks = [t.name for t in triggers if t.check]
        self._take_off(event_id, matched)
        if not triggers:
            self._note(event_id, result, _no_match_note(event))
        for trigger in triggers:
            try:
                self._decide(repo, file, trigger, event, event_id, result, arrived)
            except Exception:  # e.g. the database stayed locked: the others still go
                log.exception("event %s: trigger %s left pending", event_id, trigger.name)
                self._landed((event_id, trigger.name))  # the next start takes it up
        return result

    def _decide(
        self,
        repo: Repo,
        file: TriggerFile,
        trigger: Trigger,
        event: Event,
        event_id: int,
        result: IngestResult | None,
        arrived: float | None = None,
    ) -> None:
        """Start the trigger's check, or dispatch its job (taken off by the caller).
        ``arrived``: when the event came (the prefetcher's clock), for its fetch."""
        if trigger.check:
            self._start_check(repo, file, trigger, event, event_id)
            return
        try:
            job_id = self._dispatch(repo, file, trigger, event, event_id, None, result, arrived)
        finally:
            self._landed((event_id, trigger.name))
        if job_id is not None and result is not None:
            result.jobs.append(job_id)

    def _route(self, event: Event) -> Repo | None:
        if event.repo:
            return self.store.find_repo(name=event.repo)
        if event.forge_repo:
            repos = self.store.repos_by_forge_name(event.forge_repo)
            return repos[0] if repos else None
        return None

    def _note(
        self,
        event_id: int,
        result: IngestResult | None,
        note: str | None,
        *,
        decided: str | None = None,
    ) -> None:
        """Add ``note`` to the event; ``decided``: the trigger whose outcome it records."""
        if result is not None and note:
            result.notes.append(note)
        self.store.note_event(event_id, note=note, decided=decided)

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
                refs.rev_parse(path, cand)
            except DispatcherError:
                continue
            return cand
        return repo.default_branch

    def _prompt(self, repo: Repo, trigger: Trigger, ctx: dict[str, Any]) -> str:
        """The rendered prompt; a ``prompt-file`` is read from the default branch head."""
        text = None
        if trigger.prompt_file is not None:
            text = blobs.read_file(Path(repo.path), repo.default_branch, trigger.prompt_file)
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
        arrived: float | None = None,
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
            if self.prefetch is not None and repo.fetch:
                # Outside the lock: a remote that hangs holds up this repo's event only;
                # the submit shares this fetch (asked at the event's arrival).
                arrived = self.prefetch.now() if arrived is None else arrived
                self.prefetch.fetch(repo, arrived)
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
                    fetch_asked=arrived,
                )  # fmt: skip
                if group is not None and conc is not None and conc.cancel_in_progress:
                    for other in self.store.active_in_group(repo.id, group):
                        # Older jobs only, and never one of a newer event (a trigger
                        # taken up after a restart must not cancel what came later).
                        newer = other.event_id is not None and other.event_id > event_id
                        if other.id is not None and other.id < job.id and not newer:
                            self._note(
                                event_id, result,
                                f"trigger {trigger.name}: canceling job {other.id} "
                                f"(concurrency group {group!r})",
                            )  # fmt: skip
                            self.submitter.cancel_in_background(other.id)
        except DispatcherError as exc:
            self._note(
                event_id, result, f"trigger {trigger.name}: no job: {exc.message}",
                decided=trigger.name,
            )  # fmt: skip
            return None
        self._note(event_id, result, f"trigger {trigger.name}: job {job.id}", decided=trigger.name)
        return job.id

    def _check_then_dispatch(
        self, repo: Repo, file: TriggerFile, trigger: Trigger, event: Event, event_id: int
    ) -> None:
        with logctx.bound(event_id=event_id, repo=repo.name):  # a pool thread: unbound after
            self._check_and_note(repo, file, trigger, event, event_id)

    def _check_and_note(
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
                stop=self._stopping, checkouts=[Path(r.path) for r in self.store.repos()],
            )  # fmt: skip
            if result.failed:
                status = "timed out" if result.exit_code is None else f"exited {result.exit_code}"
                self._note(event_id, None, f"trigger {trigger.name}: check {status}")
                self._dispatch(repo, file, trigger, event, event_id, result, None)
                return  # its note records the outcome
            passed = f"check `{trigger.check}` passed at {result.sha[:12]}"
            note = f"trigger {trigger.name}: {passed}: no job"
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
        self._note(event_id, None, note, decided=trigger.name)

    def resume_pending(self) -> int:
        """Take up the triggers a stopped or crashed daemon left undecided on their
        events, with the repo's trigger file as it is now; how many were taken up.

        A trigger whose job exists already is only marked decided (the daemon stopped
        between the job and its note); one the trigger file no longer has is dropped
        with a note; a check runs again from the start; any other trigger is
        dispatched now. Events that came in since this daemon started are left alone:
        the path that stored each decides it (a trigger that failed there stays pending
        for the next start).
        """
        resumed = 0
        for row in self.store.events_with_pending_triggers():
            assert row.id is not None
            if row.created_at >= self._started:
                continue  # ours: decided, or being decided, by the path that stored it
            try:
                with logctx.bound(event_id=row.id):
                    resumed += self._resume_event(row)
            except Exception as exc:  # one bad row must not stop the daemon from starting
                log.exception("event %s: cannot take up its pending triggers", row.id)
                for name in row.pending_triggers:
                    self._note(
                        row.id, None, f"trigger {name}: not taken up after a restart: {exc}",
                        decided=name,
                    )  # fmt: skip
                    self._landed((row.id, name))
        return resumed

    def _resume_event(self, row: EventRow) -> int:
        """Take up one event's pending triggers; how many were dispatched or checked."""
        assert row.id is not None
        names = self._take_off(row.id, row.pending_triggers)
        try:
            repo = self.store.repo(row.repo_id)
            # Decided meanwhile by an event path of ours that has just finished?
            still = set(self.store.event(row.id).pending_triggers)
        except DispatcherError:  # the repo is gone, and its events with it
            still = set()
        for name in [n for n in names if n not in still]:
            self._landed((row.id, name))
        names = [n for n in names if n in still]
        if not names:
            return 0
        file = self.trigger_files.active(row.repo_id)
        event = Event(
            kind=row.kind, action=row.action, source=row.source,
            dedup_key=row.dedup_key, payload=row.payload, **row.facts,
        )  # fmt: skip
        triggers = {t.name: t for t in matching(file, event)} if file is not None else {}
        resumed = 0
        for name in names:
            trigger = triggers.get(name)
            if self.store.job_for_event(row.id, name) is not None:
                self._note(row.id, None, None, decided=name)
            elif file is None or trigger is None:
                self._note(
                    row.id, None,
                    f"trigger {name}: not taken up after a restart: the trigger file "
                    "no longer has it, or it no longer matches the event",
                    decided=name,
                )  # fmt: skip
            else:
                how = "check run again" if trigger.check else "taken up"
                try:
                    self._note(row.id, None, f"trigger {name}: {how} after a restart")
                    self._decide(repo, file, trigger, event, row.id, None)
                except Exception:  # stays pending, for the next start
                    log.exception("event %s: trigger %s not taken up", row.id, name)
                    self._landed((row.id, name))
                    continue
                resumed += 1
                continue
            self._landed((row.id, name))
        return resumed


def _no_match_note(event: Event) -> str:
    if event.kind == "push" and event.action == REF_DELETED:
        return f"no trigger matched ({DELETED_REF_REASON})"
    return "no trigger matched"

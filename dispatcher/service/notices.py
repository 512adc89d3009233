"""Notification bookkeeping: what a job owes, where it goes, and when it is settled.

A job that ends (or is merged or discarded) owes a notice about its state
(``Job.notice_pending``) until every delivery of it has a final outcome, so a
stopped or crashed daemon sends what it still owed at the next start. The
deliveries themselves are :class:`dispatcher.notify.delivery.Notifier`'s; their
outcomes are recorded here, per job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.lifecycle import ACTIVE, JobState
from dispatcher.notify.delivery import Delivery as NoticeDelivery
from dispatcher.notify.delivery import Notifier
from dispatcher.notify.notices import JobNotice
from dispatcher.notify.targets import Target, validate_target
from dispatcher.store.database import Store
from dispatcher.store.models import Delivery, Job

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Notices:
    """The notices jobs owe: queued to the notifier, settled by its outcomes."""

    settings: Settings
    store: Store
    trigger_files: TriggerFiles
    notifier: Notifier | None = None  # set by the daemon

    def job_ended(self, job_id: int) -> None:
        """The runner let go of a job: announce how it ended (never raises)."""
        if not self.settings.notify and not self.trigger_files.any_notify():
            return  # nowhere to send anything: not even a read
        try:
            job = self.store.job(job_id)
        except Exception:
            log.exception("job %s: cannot announce it", job_id)
            return
        self.announce(job)

    def announce(self, job: Job, *, state: str | None = None, skip: Iterable[str] = ()) -> None:
        """Queue notifications about ``job``'s state (or ``state``: an earlier one still
        owed), except the deliveries whose message id is in ``skip``; the job owes them
        until they settle.
        Never raises: a merge or discard that worked is not failed by its notice."""
        try:
            self._announce(job, state=state, skip=skip)
        except Exception:
            log.exception("job %s: cannot announce it", job.id)

    def _announce(self, job: Job, *, state: str | None, skip: Iterable[str]) -> None:
        if self.notifier is None or job.id is None:
            return
        state = state or job.state.value
        if JobState(state) in ACTIVE:
            return
        active = self.trigger_files.active(job.repo_id)
        if not self.settings.notify and not (active is not None and active.notify):
            if job.notice_pending is not None:  # owed, but nowhere to send it any more
                self.store.settle_notice(job.id, job.notice_pending)
            return  # nowhere to send it: skip building the notice
        repo = self.store.repo(job.repo_id)
        if job.notice_pending != state:
            self.store.owe_notice(job.id, state)  # settled when every delivery has an outcome
        self.notifier.notify(
            JobNotice(
                job_id=job.id, repo=repo.name, state=state, branch=job.branch,
                prompt=job.prompt, summary=job.summary, error=job.error,
                url=f"{self.settings.api_url}/jobs/{job.id}", cost_usd=job.cost_usd,
                files_changed=job.files_changed, insertions=job.insertions,
                deletions=job.deletions,
            ),
            skip=skip,
        )  # fmt: skip

    def settled(self, notice: JobNotice) -> None:
        """Every delivery of ``notice`` has a final outcome: the job owes it no more."""
        self.store.settle_notice(notice.job_id, notice.state)

    def resume(self, node: str | None = None) -> int:
        """Send again what a stopped or crashed daemon still owed (a retry waiting, or
        not yet sent), skipping the targets whose outcome is recorded; how many jobs.
        ``node``: this daemon's; only its jobs' (docs/cluster.md)."""
        owed = self.store.jobs_owed_notices(node)
        for job in owed:
            assert job.id is not None and job.notice_pending is not None
            try:
                done = [
                    d.message_id
                    for d in self.store.deliveries(job.id)
                    if d.state == job.notice_pending and d.message_id
                ]
            except Exception:
                log.exception("job %s: cannot read its deliveries", job.id)
                continue
            log.info("job %s: sending the %s notifications still owed", job.id, job.notice_pending)
            self.announce(job, state=job.notice_pending, skip=done)
        return len(owed)

    def targets(self, notice: JobNotice) -> list[Target]:
        """The daemon's ``notify`` setting plus the repo's trigger file ``notify:``."""
        entries: list[Mapping[str, object]] = list(self.settings.notify)
        repo = self.store.find_repo(name=notice.repo)
        active = self.trigger_files.active(repo.id) if repo and repo.id else None
        if active is not None:
            entries += [n.model_dump(exclude_defaults=True) for n in active.notify]
        targets: list[Target] = []
        for entry in entries:
            try:
                targets.append(validate_target(entry))
            except DispatcherError as exc:
                log.warning("repo %s: notify entry skipped: %s", notice.repo, exc.message)
        return targets

    def record(self, d: NoticeDelivery) -> None:
        """A delivery's final outcome, kept with its job (``GET /jobs/{id}/deliveries``)."""
        self.store.add_delivery(
            Delivery(
                job_id=d.job_id, target=d.target, url=d.url, state=d.state, ok=d.ok,
                attempts=d.attempts, status_code=d.status_code, error=d.error, at=d.at,
                message_id=d.message_id,
            )
        )  # fmt: skip

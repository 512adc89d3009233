"""What the dashboard (:mod:`dispatcher.web`) reads that no REST route does: the board's
columns with their counts, and every job's notification deliveries.

Read-only; the dashboard's actions go through the same use-cases as the REST API's
(``jobs``, ``control``, ``repos``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dispatcher.store.database import BOARD_COLUMNS, BOARD_COUNT_CAP, JobFilter, Store
from dispatcher.store.models import JobPublic, NoticeDelivery


@dataclass
class Column:
    name: str  # queued, running, review, done
    jobs: list[JobPublic] = field(default_factory=list)  # the newest ``limit``
    count: int = 0  # the jobs in the column (with the filters), at most BOARD_COUNT_CAP
    more: bool = False  # and more than that


@dataclass(eq=False)
class Board:
    store: Store

    def columns(
        self,
        *,
        repo: str | None = None,
        trigger: str | None = None,
        agent: str | None = None,
        text: str | None = None,
        limit: int = 50,
    ) -> list[Column]:
        """Each column's newest ``limit`` jobs and its count, with the filters (None:
        any): one repo, trigger or agent, and ``text`` in the prompt or branch name."""
        repo_id = self.store.repo_by_name(repo).id if repo else None
        where = JobFilter(repo_id, trigger, agent, text)
        found = [(name, *self.store.board_jobs(name, where, limit=limit)) for name in BOARD_COLUMNS]
        names = self.store.repo_names(sorted({j.repo_id for _, rows, _ in found for j in rows}))
        return [
            Column(
                name,
                [JobPublic.of(j, names.get(j.repo_id, "?")) for j in rows],
                min(count, BOARD_COUNT_CAP),
                count > BOARD_COUNT_CAP,
            )
            for name, rows, count in found
        ]

    def deliveries(self, *, before: int | None = None, limit: int = 50) -> list[NoticeDelivery]:
        """Every job's notification deliveries, newest first."""
        rows = self.store.recent_deliveries(before=before, limit=limit)
        return [NoticeDelivery.model_validate(d, from_attributes=True) for d in rows]

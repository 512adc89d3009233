"""Events: post one (``POST /events``), list and show them, and each repo's triggers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from dispatcher.events.intake import Intake
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.store.database import AlreadyMade, Store
from dispatcher.store.models import Event as EventRow
from dispatcher.store.models import (
    EventCreate,
    EventPublic,
    IdempotencyKey,
    IngestResult,
    TriggerStatus,
)
from triggers.config import TRIGGER_FILE
from triggers.config import check as check_trigger_text
from triggers.events import Event


@dataclass(eq=False)
class Events:
    """Events posted through the API, and the events and triggers as stored."""

    store: Store
    trigger_files: TriggerFiles
    intake: Intake

    def post(self, req: EventCreate, *, idem: IdempotencyKey | None = None) -> IngestResult:
        made = self.store.made_by(idem, "event")
        if made is not None:  # the daemon stopped before it could answer: that answer
            return self._ingested(made)
        repo = self.store.repo_by_name(req.repo)
        data = req.model_dump(exclude={"dedup_key"})
        key = req.dedup_key or f"generated-{uuid.uuid4().hex}"
        event = Event(source="api", dedup_key=f"api:{repo.name}:{key}", **data)
        try:
            return self.intake.ingest(event, repo, idem=idem)
        except AlreadyMade as made_meanwhile:
            return self._ingested(made_meanwhile.resource_id)

    def _ingested(self, event_id: int) -> IngestResult:
        """What became of a stored event, as it is now (its triggers may still run)."""
        row = self.store.event(event_id)
        active = self.trigger_files.active(row.repo_id)
        checks = {t.name for t in active.trigger_list() if t.check} if active else set()
        return IngestResult(
            event_id=event_id,
            matched=list(row.matched),
            jobs=self.store.job_ids_for_events([event_id]).get(event_id, []),
            pending_checks=[n for n in row.matched if n in checks],
            notes=list(row.notes),
        )

    def page(
        self, *, repo: str | None = None, before: int | None = None, limit: int = 50
    ) -> list[EventPublic]:
        repo_id = self.store.repo_by_name(repo).id if repo else None
        rows = self.store.events(repo_id=repo_id, before=before, limit=limit)
        return self._public(rows)

    def get(self, event_id: int) -> EventPublic:
        return self._public([self.store.event(event_id)])[0]

    def _public(self, rows: list[EventRow]) -> list[EventPublic]:
        names = self.store.repo_names([r.repo_id for r in rows])
        jobs = self.store.job_ids_for_events([r.id for r in rows if r.id is not None])
        out = []
        for row in rows:
            assert row.id is not None
            out.append(
                EventPublic(
                    **row.model_dump(exclude={"repo_id", "facts"}),
                    repo=names.get(row.repo_id, "?"),
                    jobs=jobs.get(row.id, []),
                )
            )
        return out

    def triggers(self) -> list[TriggerStatus]:
        out = []
        for repo in self.store.repos():
            assert repo.id is not None
            active = self.trigger_files.active(repo.id)
            triggers = [
                {"name": t.name, "on": sorted(t.kinds()), "agent": t.agent}
                for t in (active.trigger_list() if active else [])
            ]
            out.append(
                TriggerStatus(
                    repo=repo.name,
                    triggers=triggers,
                    error=repo.triggers_error,
                    loaded_at=repo.triggers_loaded_at,
                )
            )
        return out

    @staticmethod
    def check_trigger_file(text: str, filename: str = TRIGGER_FILE) -> list[str]:
        """Every problem of a trigger file's text, one ``file:line: reason`` each (the same
        check as ``dispatcher triggers check``); empty when it is valid."""
        return [str(problem) for problem in check_trigger_text(text, filename=filename)]

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from dispatcher.api.deps import Before, EventId, IdempotencyDep, ServiceDep
from dispatcher.store.models import EventCreate, EventPublic, IngestResult, TriggerStatus

router = APIRouter(tags=["events"])


@router.post("/events", summary="Report an event from any other system (CI, chat bot)")
def post_event(body: EventCreate, service: ServiceDep, idem: IdempotencyDep) -> IngestResult:
    return service.events.post(body, idem=idem)


@router.get("/events", summary="Stored events, newest first, with the jobs they made")
def list_events(
    service: ServiceDep,
    repo: str | None = None,
    before: Before = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[EventPublic]:
    return service.events.page(repo=repo, before=before, limit=limit)


@router.get("/events/{event_id}", summary="One event: matched triggers, notes, jobs")
def show_event(event_id: EventId, service: ServiceDep) -> EventPublic:
    return service.events.get(event_id)


@router.get("/triggers", summary="Each repo's active triggers and its trigger file error, if any")
def trigger_status(service: ServiceDep) -> list[TriggerStatus]:
    return service.events.triggers()

"""The review inbox: jobs with commits (succeeded, failed or timed out), waiting for a person
to merge or discard them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from dispatcher.api.deps import ServiceDep
from dispatcher.store.models import JobPublic

router = APIRouter(tags=["jobs"])


@router.get(
    "/inbox",
    summary="Jobs with commits awaiting review, newest first",
    description=(
        "Jobs that ended with commits ahead of their base and are not merged, discarded or "
        "followed up: succeeded ones, and failed or timed-out ones (their work may be worth "
        "keeping; their `state` and `error` tell them apart). Newest first."
    ),
)
def inbox(service: ServiceDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobPublic]:
    return service.jobs.inbox(limit)

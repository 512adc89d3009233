from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from dispatcher.api.deps import ServiceDep
from dispatcher.store.models import JobPublic

router = APIRouter(tags=["jobs"])


@router.get(
    "/inbox",
    summary="Finished jobs with commits awaiting review, newest first",
)
def inbox(service: ServiceDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobPublic]:
    return service.jobs.inbox(limit)

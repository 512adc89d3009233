"""Route of prune: discard finished jobs in bulk and tidy closed jobs' leftovers."""

from __future__ import annotations

from fastapi import APIRouter

from dispatcher.api.deps import ServiceDep
from dispatcher.store.models import PruneRequest, PruneResult

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "/prune",
    summary="Discard finished jobs in bulk (by state, age, repo); tidy merged and discarded "
    "jobs' branches and orphan worktrees. Jobs with commits only by explicit state.",
)
def prune_jobs(body: PruneRequest, service: ServiceDep) -> PruneResult:
    return service.prune.run(body)

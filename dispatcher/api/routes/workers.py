"""The daemons that run jobs from this database (docs/cluster.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from dispatcher.api.deps import ServiceDep
from dispatcher.store.models import WorkerPublic

router = APIRouter(tags=["workers"])


@router.get(
    "/workers",
    summary="The workers: the daemons running jobs from this database",
    description=(
        "Newest first. A worker is one start of a daemon. On PostgreSQL each has a queue "
        "worker (procrastinate's) whose heartbeat says whether it is alive: `alive` is false "
        "once its last heartbeat is older than `DISPATCHER_WORKER_TIMEOUT_SECONDS`. On "
        "SQLite the one daemon is the only worker running. `all=true` lists stopped ones too."
    ),
)
def list_workers(
    service: ServiceDep, all_: Annotated[bool, Query(alias="all")] = False
) -> list[WorkerPublic]:
    return service.workers.listed(everyone=all_)


@router.get("/workers/{worker_id}", summary="One worker, running or stopped")
def get_worker(
    service: ServiceDep, worker_id: Annotated[int, Path(ge=1, le=2**62)]
) -> WorkerPublic:
    return service.workers.show(worker_id)

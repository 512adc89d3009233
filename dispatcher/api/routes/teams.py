"""Routes of teams: create, list, show; tasks, blockers, plans, signals; messages; retry,
shut down, merge. Each is one call of the service's ``teams`` (docs/teams.md)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from dispatcher.api.deps import MAX_ID, ServiceDep
from dispatcher.errors import Busy
from dispatcher.store.team_models import (
    MessageCreate,
    MessagePublic,
    PlanCreate,
    PlanDecision,
    SignalCreate,
    TaskCreate,
    TaskPublic,
    TeamAction,
    TeamCreate,
    TeamMergeRequest,
    TeamPublic,
)

router = APIRouter(prefix="/teams", tags=["teams"])

TeamId = Annotated[int, Path(ge=1, le=MAX_ID, description="A team id")]
TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="A task id (of that team)")]


class BlockersUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blocked_by: list[int] = PydanticField(max_length=500)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a team: its integration branch and its lead job",
)
def create_team(body: TeamCreate, service: ServiceDep) -> TeamPublic:
    return service.teams.create(body)


@router.get("", summary="List teams, newest first")
def list_teams(service: ServiceDep, repo: str | None = None) -> list[TeamPublic]:
    return service.teams.listing(repo)


@router.get("/{team_id}", summary="Show a team: its tasks, their states, blockers and cost")
def show_team(team_id: TeamId, service: ServiceDep) -> TeamPublic:
    return service.teams.show(team_id)


@router.post(
    "/{team_id}/tasks",
    status_code=status.HTTP_201_CREATED,
    summary="Add a task (it starts when its blockers are done)",
    description="Refused with the reason: a blocker that is not a task of the team, a cycle, "
    "a task for another repo, a team shut down.",
)
def add_task(team_id: TeamId, body: TaskCreate, service: ServiceDep) -> TaskPublic:
    return service.teams.add_task(team_id, body)


@router.get("/{team_id}/tasks/{task_id}", summary="Show one task")
def show_task(team_id: TeamId, task_id: TaskId, service: ServiceDep) -> TaskPublic:
    return service.teams.task(team_id, task_id)


@router.put("/{team_id}/tasks/{task_id}/blockers", summary="Change a waiting task's blockers")
def set_blockers(
    team_id: TeamId, task_id: TaskId, body: BlockersUpdate, service: ServiceDep
) -> TaskPublic:
    return service.teams.set_blockers(team_id, task_id, body.blocked_by)


@router.post("/{team_id}/tasks/{task_id}/retry", summary="Start a failed or canceled task again")
def retry_task(team_id: TeamId, task_id: TaskId, service: ServiceDep) -> TeamAction:
    return service.teams.retry(team_id, task_id)


@router.post("/{team_id}/tasks/{task_id}/signal", summary="A member: blocked, needs-review, done")
def signal_task(
    team_id: TeamId, task_id: TaskId, body: SignalCreate, service: ServiceDep
) -> TaskPublic:
    return service.teams.signal(team_id, task_id, body)


@router.post("/{team_id}/tasks/{task_id}/plan", summary="A member submits its plan")
def submit_plan(
    team_id: TeamId, task_id: TaskId, body: PlanCreate, service: ServiceDep
) -> TaskPublic:
    return service.teams.submit_plan(team_id, task_id, body.plan)


@router.post("/{team_id}/tasks/{task_id}/approve", summary="Approve or reject a task's plan")
def decide_plan(
    team_id: TeamId, task_id: TaskId, body: PlanDecision, service: ServiceDep
) -> TeamAction:
    return service.teams.decide_plan(team_id, task_id, body)


@router.post(
    "/{team_id}/messages",
    status_code=status.HTTP_201_CREATED,
    summary="Send a message: to a member, the lead, or all",
)
def send_message(team_id: TeamId, body: MessageCreate, service: ServiceDep) -> list[MessagePublic]:
    return service.teams.message(team_id, body)


@router.get(
    "/{team_id}/messages",
    summary="Acknowledge messages handled, then take the recipient's next ones, oldest first",
    description="`ack` (the id of the last message you handled) first marks every message "
    "handed out to this recipient with an id up to it delivered; then the next undelivered "
    "ones are handed out, leased to this read: unacknowledged when the lease ends (a read "
    "whose answer was lost), they are handed out again, same ids. `limit=0` only "
    "acknowledges. With `wait`, a read that finds none waits up to that many seconds for "
    "one (long poll; it answers as soon as a message is sent).",
)
async def read_messages(
    team_id: TeamId,
    service: ServiceDep,
    request: Request,
    to: Annotated[str, Query(description="lead, person or task:<id>", max_length=40)],
    wait: Annotated[float, Query(ge=0, le=120)] = 0.0,
    limit: Annotated[int, Query(ge=0, le=1000, description="How many at most (0: ack only)")] = 100,
    ack: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="The id of the last message handled")
    ] = None,
) -> list[MessagePublic]:
    read = partial(service.teams.read, team_id, to, wait_s=wait, limit=limit, ack=ack)
    if wait <= 0:
        return await anyio.to_thread.run_sync(read)  # the shared pool, as a sync route
    # A waiting read holds its thread up to `wait` seconds: on a pool of its own, so
    # that waiting reads never take the threads every other route runs on.
    waits = _waiting_reads(request, service.settings.team_read_waits)
    # A place is taken here, in the event loop, with no await between the check and the
    # take: a read over the bound is refused at once, never queued behind the limiter
    # (checking its free tokens, then acquiring, let a read wait for a place up to a
    # minute when two came at once).
    if waits.taken >= waits.limiter.total_tokens:
        raise Busy(
            f"{service.settings.team_read_waits} message reads wait already "
            "(DISPATCHER_TEAM_READ_WAITS): read without wait, or again later"
        )
    waits.taken += 1
    try:
        return await anyio.to_thread.run_sync(read, limiter=waits.limiter)
    finally:
        waits.taken -= 1


@dataclass
class _Waits:
    limiter: anyio.CapacityLimiter
    taken: int = 0  # places given to reads (never more than the limiter's tokens)


def _waiting_reads(request: Request, size: int) -> _Waits:
    """The app's places of waiting message reads (made in its event loop, once)."""
    waits: _Waits | None = getattr(request.app.state, "team_read_waits", None)
    if waits is None:
        waits = _Waits(anyio.CapacityLimiter(size))
        request.app.state.team_read_waits = waits
    return waits


@router.post("/{team_id}/shutdown", summary="Cancel every member; the integration branch stays")
def shutdown_team(team_id: TeamId, service: ServiceDep) -> TeamAction:
    return service.teams.shutdown(team_id)


@router.post("/{team_id}/merge", summary="Merge the integration branch (into the default branch)")
def merge_team(team_id: TeamId, body: TeamMergeRequest, service: ServiceDep) -> TeamAction:
    return service.teams.merge(team_id, body)

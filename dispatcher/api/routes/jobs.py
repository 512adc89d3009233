from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import PlainTextResponse, Response
from sse_starlette.sse import EventSourceResponse

from dispatcher.api.deps import MAX_ID, Before, IdempotencyDep, JobId, ServiceDep
from dispatcher.lifecycle import TERMINAL, JobState
from dispatcher.models import (
    ActionResult,
    DeliveryPublic,
    DiffPublic,
    FollowupCreate,
    JobCreate,
    JobPage,
    JobPublic,
    MergeRequest,
)
from dispatcher.service import Service

router = APIRouter(prefix="/jobs", tags=["jobs"])

_CHUNK = 64 * 1024
_POLL_S = 0.1


@router.post("", status_code=status.HTTP_201_CREATED, summary="Queue an agent job")
def create_job(body: JobCreate, service: ServiceDep, idem: IdempotencyDep) -> JobPublic:
    return service.submit(body, idem=idem)


@router.get("", summary="List jobs, newest first (keyset pagination with ?before=)")
def list_jobs(
    service: ServiceDep,
    repo: str | None = None,
    state: JobState | None = None,
    before: Before = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    return service.jobs(repo=repo, state=state, before=before, limit=limit)


@router.get("/{job_id}", summary="Show one job")
def show_job(job_id: JobId, service: ServiceDep) -> JobPublic:
    return service.job(job_id)


@router.get(
    "/{job_id}/log",
    summary="The job's log; ?follow=true (or Accept: text/event-stream) streams it over SSE",
    response_class=Response,  # errors stay JSON; 200 is text or an event stream
    responses={
        200: {
            "description": "The log from `offset` (text), or an SSE stream when following",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    },
)
def job_log(
    job_id: JobId,
    service: ServiceDep,
    request: Request,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    follow: bool = False,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    path = service.log_file(job_id)
    if follow or (accept or "").startswith("text/event-stream"):
        return EventSourceResponse(_follow(service, job_id, path, offset, request), ping=15)
    data = b""
    if path.exists():
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if offset > size:  # the log was rotated since: read it again from its start
                offset = 0
            fh.seek(offset)
            data = fh.read()
    return PlainTextResponse(
        data.decode("utf-8", errors="replace"),
        headers={"X-Log-Offset": str(offset + len(data))},
    )


async def _follow(
    service: Service, job_id: int, path: Path, offset: int, request: Request
) -> AsyncIterator[dict[str, str]]:
    """Send what is in the log from ``offset``, then new output until the job is terminal."""
    file = anyio.Path(str(path))
    while True:
        chunk = b""
        if await file.exists():
            async with await file.open("rb") as fh:
                if (await file.stat()).st_size < offset:  # rotated: start over
                    offset = 0
                await fh.seek(offset)
                chunk = await fh.read(_CHUNK)
        if chunk:
            offset += len(chunk)
            text = chunk.decode("utf-8", errors="replace")
            yield {"event": "log", "data": json.dumps({"offset": offset, "text": text})}
            continue
        state = await anyio.to_thread.run_sync(service.job_state, job_id)
        if state in TERMINAL:
            # One more read: output written between our read and the state change.
            if await file.exists() and (await file.stat()).st_size > offset:
                continue
            yield {"event": "end", "data": json.dumps({"state": state.value, "offset": offset})}
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(_POLL_S)


@router.get("/{job_id}/diff", summary="The job's changes against its base commit")
def job_diff(job_id: JobId, service: ServiceDep) -> DiffPublic:
    return service.diff(job_id)


@router.post("/{job_id}/merge", summary="Land the job's branch (conflicts refused, nothing moves)")
def merge_job(job_id: JobId, service: ServiceDep, body: MergeRequest | None = None) -> ActionResult:
    return service.merge(job_id, body or MergeRequest())


@router.post("/{job_id}/discard", summary="Stop if running; remove worktree and branch")
def discard_job(job_id: JobId, service: ServiceDep) -> ActionResult:
    return service.discard(job_id)


@router.post("/{job_id}/cancel", summary="Stop the agent; keep worktree and branch")
def cancel_job(job_id: JobId, service: ServiceDep) -> ActionResult:
    return service.cancel(job_id)


@router.post("/{job_id}/retry", summary="Queue a fresh job with the same inputs")
def retry_job(job_id: JobId, service: ServiceDep, idem: IdempotencyDep) -> ActionResult:
    return service.retry(job_id, idem=idem)


@router.post(
    "/{job_id}/followup",
    status_code=status.HTTP_201_CREATED,
    summary="Run the agent again in the job's worktree and branch with a new prompt",
)
def followup_job(
    job_id: JobId, body: FollowupCreate, service: ServiceDep, idem: IdempotencyDep
) -> ActionResult:
    return service.followup(job_id, body, idem=idem)


@router.get("/{job_id}/runs", summary="Every run of the job's chain of follow-ups, oldest first")
def job_runs(job_id: JobId, service: ServiceDep) -> list[JobPublic]:
    return service.runs(job_id)


@router.get("/{job_id}/deliveries", summary="Outcomes of the job's notifications")
def job_deliveries(job_id: JobId, service: ServiceDep) -> list[DeliveryPublic]:
    return service.deliveries(job_id)

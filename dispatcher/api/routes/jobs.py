from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import Response
from sse_starlette.sse import EventSourceResponse

from dispatcher import logpage
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


_PAGE_HEADERS = {
    "X-Log-Start": "Offset in agent.log of the page's first byte",
    "X-Log-Next-Offset": "Offset to ask for next (on a character boundary)",
    "X-Log-Offset": "The same as X-Log-Next-Offset (kept for older clients)",
    "X-Log-Size": "agent.log's size in bytes when the page was read",
}
Offset = Annotated[
    int | None,
    Query(ge=0, le=MAX_ID, description="Byte offset into the current agent.log (default 0)"),
]
Tail = Annotated[
    int | None,
    Query(
        ge=1,
        le=logpage.MAX_LIMIT,
        description="Start at the last TAIL bytes instead (not with offset)",
    ),
]
Limit = Annotated[
    int | None,
    Query(
        ge=1,
        le=logpage.MAX_LIMIT,
        description=f"Most bytes in the page (default tail, else {logpage.DEFAULT_LIMIT})",
    ),
]


@router.get(
    "/{job_id}/log",
    summary="A page of the job's log; ?follow=true (or Accept: text/event-stream) streams it "
    "over SSE",
    response_class=Response,  # errors stay JSON; 200 is text or an event stream
    responses={
        200: {
            "description": "Bytes [X-Log-Start, X-Log-Next-Offset) of agent.log as text, cut "
            "on UTF-8 character boundaries; or an SSE stream when following",
            "headers": {
                name: {"description": text, "schema": {"type": "integer"}}
                for name, text in _PAGE_HEADERS.items()
            },
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
    offset: Offset = None,
    tail: Tail = None,
    limit: Limit = None,
    follow: bool = False,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    if follow or (accept or "").startswith("text/event-stream"):
        start = service.log_start(job_id, offset=offset, tail=tail)
        path = service.log_file(job_id)
        return EventSourceResponse(_follow(service, job_id, path, start, request), ping=15)
    page = service.log_page(job_id, offset=offset, tail=tail, limit=limit)
    return Response(
        page.data,
        media_type="text/plain; charset=utf-8",
        headers={
            "X-Log-Start": str(page.start),
            "X-Log-Next-Offset": str(page.next),
            "X-Log-Offset": str(page.next),
            "X-Log-Size": str(page.size),
        },
    )


async def _follow(
    service: Service, job_id: int, path: Path, offset: int, request: Request
) -> AsyncIterator[dict[str, str]]:
    """Send what is in the log from ``offset``, then new output until the job is terminal.

    Chunks end on UTF-8 character boundaries (:func:`logpage.complete_prefix`).
    """
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
            chunk = chunk[: logpage.complete_prefix(chunk)]
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

"""Routes of jobs: create, list, show, log (paged or followed over SSE), diff, and the actions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import Response
from sse_starlette.sse import EventSourceResponse

from dispatcher.api.deps import MAX_ID, Before, IdempotencyDep, JobId, ServiceDep
from dispatcher.lifecycle import JobState
from dispatcher.process import logpage
from dispatcher.process.logpage import LogChunk
from dispatcher.store.models import (
    ActionResult,
    DeliveryPublic,
    DiffPublic,
    FollowupCreate,
    JobCreate,
    JobPage,
    JobPublic,
    MergeRequest,
    PullRequestCreate,
    PushRequest,
)

if TYPE_CHECKING:
    from dispatcher.service import Service

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Queue an agent job")
def create_job(body: JobCreate, service: ServiceDep, idem: IdempotencyDep) -> JobPublic:
    return service.jobs.submit(body, idem=idem)


@router.get("", summary="List jobs, newest first (keyset pagination with ?before=)")
def list_jobs(
    service: ServiceDep,
    repo: str | None = None,
    state: JobState | None = None,
    before: Before = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    return service.jobs.page(repo=repo, state=state, before=before, limit=limit)


@router.get("/{job_id}", summary="Show one job")
def show_job(job_id: JobId, service: ServiceDep) -> JobPublic:
    return service.jobs.get(job_id)


_PAGE_HEADERS = {
    "X-Log-Start": "Offset in agent.log of the page's first byte",
    "X-Log-Next-Offset": "Offset to ask for next (on a character boundary)",
    "X-Log-Offset": "The same as X-Log-Next-Offset (kept for older clients)",
    "X-Log-Size": "agent.log's size in bytes when the page was read",
    "X-Log-File-Id": "Which agent.log was read (its inode): send it back as file_id with the "
    "next offset, so a log rotated since is read from 0",
    "X-Log-Restarted": "1 when the offset asked for was in an earlier (rotated) file and the "
    "page starts at 0 of the current one, else 0",
}
FileId = Annotated[
    int | None,
    Query(
        ge=0,
        le=2**63 - 1,
        description="X-Log-File-Id of the page the offset comes from: if agent.log was "
        "rotated since (another file), the page starts at 0",
    ),
]
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
    file_id: FileId = None,
    follow: bool = False,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    if follow or (accept or "").startswith("text/event-stream"):
        start = service.outputs.log_start(job_id, offset=offset, tail=tail)
        return EventSourceResponse(_follow(service, job_id, start, request), ping=15)
    page = service.outputs.log_page(job_id, offset=offset, tail=tail, limit=limit, file_id=file_id)
    return Response(
        page.data,
        media_type="text/plain; charset=utf-8",
        headers={
            "X-Log-Start": str(page.start),
            "X-Log-Next-Offset": str(page.next),
            "X-Log-Offset": str(page.next),
            "X-Log-Size": str(page.size),
            "X-Log-File-Id": str(page.file_id),
            "X-Log-Restarted": "1" if page.restarted else "0",
        },
    )


async def _follow(
    service: Service, job_id: int, offset: int, request: Request
) -> AsyncIterator[dict[str, str]]:
    """The job's log from ``offset`` as SSE events (``log``, then ``end``): see
    :meth:`dispatcher.service.outputs.Outputs.follow`."""
    async for item in service.outputs.follow(job_id, offset, request.is_disconnected):
        if isinstance(item, LogChunk):
            yield {"event": "log", "data": json.dumps({"offset": item.offset, "text": item.text})}
        else:
            yield {"event": "end", "data": json.dumps({"state": item.state, "offset": item.offset})}


@router.get("/{job_id}/diff", summary="The job's changes against its base commit")
def job_diff(job_id: JobId, service: ServiceDep) -> DiffPublic:
    return service.outputs.diff(job_id)


@router.post("/{job_id}/merge", summary="Land the job's branch (conflicts refused, nothing moves)")
def merge_job(job_id: JobId, service: ServiceDep, body: MergeRequest | None = None) -> ActionResult:
    return service.control.merge(job_id, body or MergeRequest())


@router.post(
    "/{job_id}/push",
    summary="Push the job's branch to the repo's remote (refused: one-line error, nothing local "
    "changes)",
)
def push_job(job_id: JobId, service: ServiceDep, body: PushRequest | None = None) -> ActionResult:
    return service.forges.push(job_id, body or PushRequest())


@router.post(
    "/{job_id}/pr",
    summary="Push if needed, then open the job's pull (merge) request on its forge; again: the "
    "same one",
)
def pr_job(
    job_id: JobId, service: ServiceDep, body: PullRequestCreate | None = None
) -> ActionResult:
    return service.forges.pr(job_id, body or PullRequestCreate())


@router.post(
    "/{job_id}/rebase",
    summary="Bring the job's branch onto its target's tip with no checkout; a conflict starts "
    "a follow-up that resolves it",
)
def rebase_job(job_id: JobId, service: ServiceDep) -> ActionResult:
    return service.rebases.rebase(job_id)


@router.post("/{job_id}/discard", summary="Stop if running; remove worktree and branch")
def discard_job(job_id: JobId, service: ServiceDep) -> ActionResult:
    return service.control.discard(job_id)


@router.post("/{job_id}/cancel", summary="Stop the agent; keep worktree and branch")
def cancel_job(job_id: JobId, service: ServiceDep) -> ActionResult:
    return service.control.cancel(job_id)


@router.post("/{job_id}/retry", summary="Queue a fresh job with the same inputs")
def retry_job(job_id: JobId, service: ServiceDep, idem: IdempotencyDep) -> ActionResult:
    return service.jobs.retry(job_id, idem=idem)


@router.post(
    "/{job_id}/followup",
    status_code=status.HTTP_201_CREATED,
    summary="Run the agent again in the job's worktree and branch with a new prompt",
)
def followup_job(
    job_id: JobId, body: FollowupCreate, service: ServiceDep, idem: IdempotencyDep
) -> ActionResult:
    return service.jobs.followup(job_id, body, idem=idem)


@router.get("/{job_id}/runs", summary="Every run of the job's chain of follow-ups, oldest first")
def job_runs(job_id: JobId, service: ServiceDep) -> list[JobPublic]:
    return service.jobs.runs(job_id)


@router.get("/{job_id}/deliveries", summary="Outcomes of the job's notifications")
def job_deliveries(job_id: JobId, service: ServiceDep) -> list[DeliveryPublic]:
    return service.outputs.deliveries(job_id)

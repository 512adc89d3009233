from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import anyio
from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import Response
from sse_starlette.sse import EventSourceResponse

from dispatcher.api.deps import MAX_ID, Before, IdempotencyDep, JobId, ServiceDep
from dispatcher.lifecycle import TERMINAL, JobState
from dispatcher.process import logpage
from dispatcher.store.models import (
    ActionResult,
    DeliveryPublic,
    DiffPublic,
    FollowupCreate,
    JobCreate,
    JobPage,
    JobPublic,
    MergeRequest,
)

if TYPE_CHECKING:
    from dispatcher.service import Service

router = APIRouter(prefix="/jobs", tags=["jobs"])

_CHUNK = 64 * 1024
_POLL_S = 0.1


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
        path = service.outputs.log_file(job_id)
        return EventSourceResponse(_follow(service, job_id, path, start, request), ping=15)
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


class _LogTail:
    """The follower's open ``agent.log``: read on from an offset; when the path names
    another file (the writer rotated it), the old one is read to its end first, then
    the new one from 0. Blocking calls (run in a thread)."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self._fh: BinaryIO | None = None

    def read(self) -> bytes:
        """The next chunk (cut on a character boundary); b"" when there is none yet."""
        if self._fh is None and not self._open():
            return b""
        assert self._fh is not None
        chunk = self._fh.read(_CHUNK)
        if not chunk and self._switched():
            return self.read()
        chunk = chunk[: logpage.complete_prefix(chunk)]
        self._fh.seek(self.offset + len(chunk))  # the cut bytes come with the next chunk
        self.offset += len(chunk)
        return chunk

    def _open(self) -> bool:
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 (closed by close or _switched)
        except FileNotFoundError:
            return False
        if os.fstat(self._fh.fileno()).st_size < self.offset:  # past its end: start over
            self.offset = 0
        self._fh.seek(self.offset)
        return True

    def _switched(self) -> bool:
        """At the end of the open file: True (and ready to read the new file from 0) if
        the path is now another file; an in-place truncation starts over at 0 too."""
        assert self._fh is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:  # between the rename and the new file
            return False
        if st.st_ino != os.fstat(self._fh.fileno()).st_ino:
            self.close()
            self.offset = 0
            return self._open()
        if st.st_size < self.offset:
            self.offset = 0
            self._fh.seek(0)
            return True
        return False

    def has_more(self) -> bool:
        """Bytes are waiting, in the open file or in a new one."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self._fh is None:
            return st.st_size > self.offset
        return st.st_ino != os.fstat(self._fh.fileno()).st_ino or st.st_size != self.offset

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


async def _follow(
    service: Service, job_id: int, path: Path, offset: int, request: Request
) -> AsyncIterator[dict[str, str]]:
    """Send what is in the log from ``offset``, then new output until the job is terminal.

    Chunks end on UTF-8 character boundaries (:func:`logpage.complete_prefix`). Across a
    rotation nothing is skipped: the rest of the old file, then the new one from 0 (each
    event's ``offset`` is in the file its text came from).
    """
    tail = _LogTail(path, offset)
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(tail.read)
            if chunk:
                text = chunk.decode("utf-8", errors="replace")
                yield {"event": "log", "data": json.dumps({"offset": tail.offset, "text": text})}
                continue
            state = await anyio.to_thread.run_sync(service.outputs.job_state, job_id)
            if state in TERMINAL:
                # One more read: output written between our read and the state change.
                if await anyio.to_thread.run_sync(tail.has_more):
                    continue
                yield {
                    "event": "end",
                    "data": json.dumps({"state": state.value, "offset": tail.offset}),
                }
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(_POLL_S)
    finally:
        tail.close()


@router.get("/{job_id}/diff", summary="The job's changes against its base commit")
def job_diff(job_id: JobId, service: ServiceDep) -> DiffPublic:
    return service.outputs.diff(job_id)


@router.post("/{job_id}/merge", summary="Land the job's branch (conflicts refused, nothing moves)")
def merge_job(job_id: JobId, service: ServiceDep, body: MergeRequest | None = None) -> ActionResult:
    return service.control.merge(job_id, body or MergeRequest())


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

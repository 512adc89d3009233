"""What a job produced: its log (pages, or followed), its diff, its notices' deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from dispatcher.cluster.peers import Holder, Peers
from dispatcher.config import Settings
from dispatcher.errors import InvalidInput, InvalidState
from dispatcher.git import refs
from dispatcher.jobs.files import job_files
from dispatcher.lifecycle import TERMINAL, JobState
from dispatcher.process import logpage
from dispatcher.process.logpage import LogChunk, LogEnd, LogTail
from dispatcher.store.database import Store
from dispatcher.store.models import DeliveryPublic, DiffPublic

FOLLOW_POLL_S = 0.1  # how often a follower looks for new output


@dataclass(eq=False)
class Outputs:
    """Read-only views of what a job produced."""

    settings: Settings
    store: Store
    # The other nodes': a job another node holds has its log and branch there, and is
    # read through that node's API (None: every job is this node's).
    peers: Peers | None = None

    def _holder(self, job_id: int, what: str) -> Holder | None:
        if self.peers is None or not self.peers.enabled:
            return None
        return self.peers.holder(self.store.job(job_id), what)

    def log_file(self, job_id: int) -> Path:
        self.store.job(job_id)  # 404 for unknown ids
        return job_files(self.settings, job_id).log

    def log_page(
        self,
        job_id: int,
        *,
        offset: int | None = None,
        tail: int | None = None,
        limit: int | None = None,
        file_id: int | None = None,
    ) -> logpage.LogPage:
        """One bounded page of the job's ``agent.log`` (see :mod:`dispatcher.process.logpage`):
        from ``offset`` (default 0) or its last ``tail`` bytes; ``limit`` defaults to
        ``tail``, else :data:`logpage.DEFAULT_LIMIT`. ``file_id``: the file the offset
        is in (an earlier page's); another file (rotated since) is read from 0."""
        if (holder := self._holder(job_id, "log")) is not None:
            assert self.peers is not None
            _one_start(offset, tail)
            return self.peers.log_page(
                holder, job_id, offset=offset, tail=tail, limit=limit, file_id=file_id
            )
        path = self.log_file(job_id)
        _one_start(offset, tail)
        size = limit or tail or logpage.DEFAULT_LIMIT
        return logpage.read_page(path, offset=offset or 0, tail=tail, limit=size, file_id=file_id)

    def log_start(self, job_id: int, *, offset: int | None = None, tail: int | None = None) -> int:
        """Where following the job's log begins: ``offset``, or its last ``tail`` bytes."""
        _one_start(offset, tail)
        if tail is not None and (holder := self._holder(job_id, "log")) is not None:
            assert self.peers is not None
            return self.peers.log_page(holder, job_id, tail=tail, limit=1).start
        path = self.log_file(job_id)
        if tail is None:
            return offset or 0
        return logpage.read_page(path, tail=tail, limit=1).start

    async def follow(
        self,
        job_id: int,
        offset: int,
        disconnected: Callable[[], Awaitable[bool]],
        file_id: int | None = None,
    ) -> AsyncIterator[LogChunk | LogEnd]:
        """What is in the job's log from ``offset``, then new output as it comes, until
        the job is terminal (then one :class:`LogEnd`) or ``disconnected()`` says the
        reader went away. ``file_id``: the file ``offset`` is in (a chunk's ``file_id``);
        if the log was rotated since, the new file is read from 0. The log's REST follow
        and the dashboard's both read it here.

        Chunks end on UTF-8 character boundaries (:func:`logpage.complete_prefix`). Across a
        rotation nothing is skipped: the rest of the old file, then the new one from 0 (each
        chunk's ``offset`` is in the file its text came from). A job another node holds
        is followed through that node's API.
        """
        holder = await anyio.to_thread.run_sync(self._holder, job_id, "log")
        if holder is not None:
            assert self.peers is not None
            async for item in self.peers.follow(holder, job_id, offset, disconnected, file_id):
                yield item
            return
        tail = LogTail(self.log_file(job_id), offset, file_id)
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(tail.read)
                if chunk:
                    text = chunk.decode("utf-8", errors="replace")
                    yield LogChunk(tail.offset, text, tail.file_id, chunk)
                    continue
                state = await anyio.to_thread.run_sync(self.job_state, job_id)
                if state in TERMINAL:
                    # One more read: output written between our read and the state change.
                    if await anyio.to_thread.run_sync(tail.has_more):
                        continue
                    yield LogEnd(state.value, tail.offset)
                    return
                if await disconnected():
                    return
                await asyncio.sleep(FOLLOW_POLL_S)
        finally:
            tail.close()

    def job_state(self, job_id: int) -> JobState:
        return self.store.job(job_id).state

    def diff(self, job_id: int) -> DiffPublic:
        if (holder := self._holder(job_id, "diff")) is not None:
            assert self.peers is not None
            resp = self.peers.request(holder, "GET", f"/jobs/{job_id}/diff")
            return DiffPublic.model_validate_json(resp.content)
        job = self.store.job(job_id)
        repo_path = Path(self.store.repo(job.repo_id).path)
        head = (job.branch and refs.branch_head(repo_path, job.branch)) or job.head_sha
        if head is None:
            raise InvalidState(f"job {job_id} is {job.state.value} and has no commits yet")
        return DiffPublic(
            job=job_id,
            base=job.base_sha,
            head=head,
            stat=refs.diff(repo_path, job.base_sha, head, stat=True),
            patch=refs.diff(repo_path, job.base_sha, head),
        )

    def deliveries(self, job_id: int) -> list[DeliveryPublic]:
        self.store.job(job_id)  # 404 for an unknown job
        return [DeliveryPublic.model_validate(d) for d in self.store.deliveries(job_id)]


def _one_start(offset: int | None, tail: int | None) -> None:
    if offset is not None and tail is not None:
        raise InvalidInput("give offset or tail, not both")

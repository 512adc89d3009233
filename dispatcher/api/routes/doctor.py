"""``dispatcher doctor``'s checks, made by the daemon in its own environment."""

from __future__ import annotations

from fastapi import APIRouter

from dispatcher.api.deps import ServiceDep
from dispatcher.store.models import DoctorCheck

router = APIRouter(tags=["doctor"])


@router.get("/doctor", summary="What in the set-up would make jobs fail, with how to fix it")
def doctor(service: ServiceDep) -> list[DoctorCheck]:
    """Each check (git, the state dir and its free space, the sandbox, each repo's path,
    trigger file and webhook secret, each agent profile, each notify target) is `ok`, a
    `warning` (works, but mind it) or a `problem` (jobs would fail, or what is configured
    would never happen), made with the daemon's PATH, git and settings. Notify targets get
    a TCP connection, nothing sent. Agents are probed as `GET /agents` does, so the first
    call may take seconds."""
    return service.doctor.checks()

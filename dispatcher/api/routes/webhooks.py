"""Forge webhooks: authenticated by their signature, not by the API token."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dispatcher.api.deps import ServiceDep
from dispatcher.errors import DispatcherError

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class PayloadTooLarge(DispatcherError):
    code = "payload_too_large"
    status = 413


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"webhook body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"webhook body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _receive(forge: str, request: Request, service: ServiceDep) -> JSONResponse:
    body = await _body(request, service.settings.max_webhook_bytes)
    headers = dict(request.headers)
    result = await anyio.to_thread.run_sync(service.webhooks.receive, forge, headers, body)
    status = 202 if result.ignored else 200
    return JSONResponse(result.model_dump(mode="json"), status_code=status)


@router.post(
    "/github",
    summary="GitHub (and Gitea/Forgejo) deliveries, verified with X-Hub-Signature-256",
    responses={401: {"description": "bad or missing signature; nothing stored"}},
)
async def github_webhook(request: Request, service: ServiceDep) -> JSONResponse:
    return await _receive("github", request, service)


@router.post(
    "/gitlab",
    summary="GitLab deliveries, verified with X-Gitlab-Token",
    responses={401: {"description": "bad or missing token; nothing stored"}},
)
async def gitlab_webhook(request: Request, service: ServiceDep) -> JSONResponse:
    return await _receive("gitlab", request, service)

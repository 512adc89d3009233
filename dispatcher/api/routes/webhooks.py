"""Forge webhooks: authenticated by their signature, not by the API token."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dispatcher.api.deps import ServiceDep
from dispatcher.errors import DispatcherError
from dispatcher.store.models import ErrorBody, IngestResult

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


def _header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    schema = {"type": "string"}
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": schema}  # fmt: skip


def _documented(headers: list[dict[str, Any]], forge: str) -> dict[str, Any]:
    """The OpenAPI of a webhook route: the handler reads the raw body and the headers
    itself (the signature is over the exact bytes), so FastAPI cannot see them."""
    payload = {"type": "object", "additionalProperties": True, "title": f"{forge} payload"}
    return {
        "parameters": headers,
        "requestBody": {
            "required": True,
            "description": f"The {forge} event payload, as the forge sends it (a JSON object; "
            "its shape depends on the event).",
            "content": {"application/json": {"schema": payload}},
        },
    }


_STORED = {"event_id": 12, "duplicate": False, "matched": ["fix-issues"], "jobs": [31],
           "pending_checks": [], "notes": []}  # fmt: skip


def _answers(ignored: str, refused: str) -> dict[int | str, dict[str, Any]]:
    """The documented answers: 200 stored, 202 ignored (each an IngestResult), 401."""
    stored = {"stored": {"value": _STORED},
              "redelivered": {"value": {**_STORED, "duplicate": True, "matched": []}}}  # fmt: skip
    skipped = {**_STORED, "event_id": None, "ignored": ignored, "matched": [], "jobs": []}
    return {
        200: {
            "model": IngestResult,
            "description": "Stored as an event (or a redelivery of one: `duplicate` true, "
            "no new job); the jobs its triggers made",
            "content": {"application/json": {"examples": stored}},
        },
        202: {
            "model": IngestResult,
            "description": "Accepted and ignored: an event kind that is not handled or a "
            "repo that is not registered; `ignored` says which (`event_id` null). Nothing "
            "is stored",
            "content": {"application/json": {"example": skipped}},
        },
        401: {"model": ErrorBody, "description": refused},
    }


GITHUB_HEADERS = [
    _header("X-GitHub-Event", "The event type (`issues`, `push`, ...; the action is in the "
            "body). Gitea and Forgejo send `X-Gitea-Event` / `X-Forgejo-Event` too, read when "
            "this one is absent. One of them is required (else `422`)."),
    _header("X-Hub-Signature-256", "`sha256=<hex>`: HMAC-SHA256 of the raw body with the "
            "webhook secret, compared in constant time. Required (else `401`) unless "
            "`X-Gitea-Signature` / `X-Forgejo-Signature` is given."),
    _header("X-GitHub-Delivery", "The delivery's id, the dedup key (a redelivery reuses it). "
            "Gitea/Forgejo: `X-Gitea-Delivery` / `X-Forgejo-Delivery`. Absent: a hash of the "
            "body is used."),
    _header("X-Gitea-Event", "Gitea's event type; its presence marks the delivery as Gitea's."),
    _header("X-Forgejo-Event", "Forgejo's event type; like `X-Gitea-Event`."),
    _header("X-Gitea-Signature", "Gitea's plain hex HMAC-SHA256 of the body; read only when "
            "`X-Hub-Signature-256` is absent."),
    _header("X-Forgejo-Signature", "Forgejo's plain hex HMAC-SHA256; like `X-Gitea-Signature`."),
    _header("X-Gitea-Delivery", "Gitea's delivery id; like `X-GitHub-Delivery`."),
    _header("X-Forgejo-Delivery", "Forgejo's delivery id; like `X-GitHub-Delivery`."),
]  # fmt: skip
GITLAB_HEADERS = [
    _header("X-Gitlab-Token", "The webhook's secret token, compared with the configured one "
            "in constant time (else `401`).", required=True),
    _header("X-Gitlab-Event", "The hook name (`Issue Hook`, `Push Hook`, ...).", required=True),
    _header("Idempotency-Key", "GitLab 17.4+: the delivery's id, kept when it is resent: the "
            "dedup key."),
    _header("X-Gitlab-Event-UUID", "The event's id: the dedup key when `Idempotency-Key` is "
            "absent (and a hash of the body when both are)."),
]  # fmt: skip


@router.post(
    "/github",
    summary="GitHub (and Gitea/Forgejo) deliveries, verified with X-Hub-Signature-256",
    responses=_answers(
        "github event 'star' is not handled", "bad or missing signature; nothing stored"
    ),
    openapi_extra=_documented(GITHUB_HEADERS, "GitHub"),
)
async def github_webhook(request: Request, service: ServiceDep) -> JSONResponse:
    """A GitHub, Gitea or Forgejo delivery; no bearer token (the signature is checked
    instead). Routed to the repo whose forge name is the payload's `repository.full_name`."""
    return await _receive("github", request, service)


@router.post(
    "/gitlab",
    summary="GitLab deliveries, verified with X-Gitlab-Token",
    responses=_answers(
        "gitlab event 'Wiki Page Hook' is not handled", "bad or missing token; nothing stored"
    ),
    openapi_extra=_documented(GITLAB_HEADERS, "GitLab"),
)
async def gitlab_webhook(request: Request, service: ServiceDep) -> JSONResponse:
    """A GitLab delivery; no bearer token (the secret token is checked instead). Routed to
    the repo whose forge name is the payload's `project.path_with_namespace`."""
    return await _receive("gitlab", request, service)

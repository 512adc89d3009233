"""The dashboard's routes: pages, the fragments htmx swaps in, the log over SSE, and the
actions. A face like the REST API: each action calls the very service method the REST
route does (``service.control.merge`` for ``POST /jobs/{id}/merge`` ...), and reads use
the same reads, plus :mod:`dispatcher.service.board` for the board's columns.

Live parts (docs/dashboard.md): the board and a job's header poll a fragment every
:data:`POLL_S` seconds (htmx ``every``), the log streams over SSE with each event's id
its byte offset, so a reconnect resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar
from urllib.parse import parse_qs

import anyio
import jinja2
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.agents.output import DISPATCHER_PREFIX
from dispatcher.agents.view import view_line
from dispatcher.errors import DispatcherError, InvalidInput, NotFound
from dispatcher.lifecycle import ACTIVE, CLOSED, FINISHED, MergeStrategy
from dispatcher.process.logpage import LogChunk
from dispatcher.store.models import (
    FollowupCreate,
    JobPublic,
    MergeRequest,
    PullRequestCreate,
    PushRequest,
    RepoCreate,
)
from dispatcher.web import render
from dispatcher.web.session import COOKIE, LOGIN_PATH, UI_PREFIX, Sessions, cookie_of

if TYPE_CHECKING:  # the daemon hands the app its service; the dashboard knows only its type
    from dispatcher.service import Service
from dispatcher.teamgraph import draw_graph

T = TypeVar("T")
POLL_S: Final = 2  # how often the board and a job's header are fetched again
MAX_ID: Final = 2**63 - 1
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
Before = Annotated[int | None, Query(ge=1, le=MAX_ID)]
PAGE: Final = 50  # rows of the events and notifications pages
LOG_TAIL_BYTES: Final = 512 * 1024  # how much of a log a job page first shows
_HERE = resources.files("dispatcher.web")
COLUMNS: Final = {"queued": "Queued", "running": "Running", "review": "Needs review",
                  "done": "Done"}  # fmt: skip

# The navigation; a page another part adds (Teams, when teams land) appends itself here.
NAV: list[tuple[str, str]] = [
    ("board", "Board"),
    ("repos", "Repos"),
    ("events", "Events"),
    ("notifications", "Notifications"),
    ("teams", "Teams"),
]
# Buttons of a finished job beside merge and discard (name, label): each has its route
# below, calling the same use-case as the REST route of that name.
EXTRA_ACTIONS: list[tuple[str, str]] = [("push", "Push"), ("pr", "Pull request")]

# Pages load only their own files: no inline script, no other origin (htmx is told not
# to inject its indicator styles or to eval, see base.html).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_ui(service: Service, token: str) -> FastAPI:
    """The dashboard, to mount at :data:`UI_PREFIX` on the daemon's app."""
    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    sessions = Sessions(token)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_HERE / "templates")), autoescape=True
    )
    templates = Jinja2Templates(env=env)
    env.globals.update(
        prefix=UI_PREFIX, nav=NAV, columns=COLUMNS, poll_s=POLL_S,
        extra_actions=EXTRA_ACTIONS, strategies=[s.value for s in MergeStrategy],
    )  # fmt: skip
    env.filters.update(ago=_ago, money=_money, first_line=_first_line, dt=_dt)
    env.tests.update(active=lambda j: j.state in ACTIVE, finished=lambda j: j.state in FINISHED,
                     closed=lambda j: j.state in CLOSED)  # fmt: skip
    ui.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        nonce = sessions.nonce(cookie_of(request.scope))
        csrf = sessions.csrf(nonce) if nonce else ""
        response: HTMLResponse = templates.TemplateResponse(
            request, name, {"csrf": csrf, "logged_in": bool(nonce), **context},
            status_code=status,
        )  # fmt: skip
        response.headers.update(SECURITY_HEADERS)
        return response

    async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))

    def fragment_error(request: Request, exc: DispatcherError) -> HTMLResponse:
        return page(request, "_notice.html", exc.status, error=exc, files=_files(exc))

    @ui.exception_handler(DispatcherError)
    async def _dispatcher_error(request: Request, exc: DispatcherError) -> HTMLResponse:
        if request.headers.get("hx-request"):
            return fragment_error(request, exc)
        return page(request, "error.html", exc.status, error=exc, files=_files(exc))

    @ui.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        if any(err.get("loc", ("",))[0] == "path" for err in exc.errors()):
            return page(request, "error.html", 404, error=NotFound("no such page"))
        error = InvalidInput("invalid request: " + "; ".join(e["msg"] for e in exc.errors()[:3]))
        return page(request, "error.html", 422, error=error)

    @ui.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        error = (
            NotFound("no such page") if exc.status_code == 404 else DispatcherError(str(exc.detail))
        )
        return page(request, "error.html", exc.status_code, error=error)

    # ------------------------------------------------------------ login

    @ui.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html")

    @ui.post("/login", response_class=HTMLResponse, response_model=None)
    async def login(request: Request) -> Response:
        form = await _form(request)
        if not sessions.token_matches(_one(form, "token")):
            return page(request, "login.html", 401, error="wrong token")
        response = RedirectResponse(UI_PREFIX + "/", status_code=303)
        response.set_cookie(
            COOKIE, sessions.new(), max_age=sessions.max_age, path=UI_PREFIX,
            httponly=True, samesite="strict", secure=request.url.scheme == "https",
        )  # fmt: skip
        return response

    @ui.post("/logout")
    def logout() -> Response:
        response = Response(status_code=204, headers={"HX-Redirect": LOGIN_PATH})
        response.delete_cookie(COOKIE, path=UI_PREFIX, httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------ board

    def board_context(request: Request) -> dict[str, Any]:
        q = request.query_params
        query = {name: (q.get(name) or "").strip() or None
                 for name in ("repo", "trigger", "agent", "text")}  # fmt: skip
        return {"query": query, "board": service.board.columns(**query, limit=50),
                "repos": service.repos.all()}  # fmt: skip

    @ui.get("/", response_class=HTMLResponse)
    async def board(request: Request) -> HTMLResponse:
        return page(request, "board.html", **await call(board_context, request), today=_today())

    @ui.get("/board", response_class=HTMLResponse)
    async def board_fragment(request: Request) -> HTMLResponse:
        return page(request, "_board.html", **await call(board_context, request), today=_today())

    # ------------------------------------------------------------ a job

    def job_context(job_id: int) -> dict[str, Any]:
        job = service.jobs.get(job_id)
        event = service.events.get(job.event_id) if job.event_id else None
        return {"job": job, "event": event, "history": _history(job),
                "runs": service.jobs.runs(job_id)}  # fmt: skip

    @ui.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: JobId) -> HTMLResponse:
        return page(request, "job.html", **await call(job_context, job_id))

    @ui.get("/jobs/{job_id}/header", response_class=HTMLResponse)
    async def job_header(request: Request, job_id: JobId) -> HTMLResponse:
        return page(request, "_job_header.html", **await call(job_context, job_id))

    @ui.get("/jobs/{job_id}/diff", response_class=HTMLResponse)
    async def job_diff(
        request: Request, job_id: JobId, view: Literal["unified", "split"] = "unified"
    ) -> HTMLResponse:
        diff = await call(service.outputs.diff, job_id)
        parsed = await call(render.parse_diff, diff.patch)
        job = await call(service.jobs.get, job_id)
        return page(request, "_diff.html", job=job, diff=diff, parsed=parsed, view=view)

    @ui.get("/jobs/{job_id}/log")
    async def job_log(
        request: Request,
        job_id: JobId,
        offset: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
        file_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    ) -> EventSourceResponse:
        """The log from ``offset`` in file ``file_id`` (or the ``Last-Event-ID``,
        ``<file id>:<offset>``, a reconnect sends); first asked for, its last
        :data:`LOG_TAIL_BYTES` (a long log's start is not sent)."""
        resumed = _event_id(request.headers.get("last-event-id", ""))
        start = resumed[1] if resumed else offset
        file_id = resumed[0] if resumed else file_id
        tail = start is None
        if start is None:  # 404 for an unknown job, before streaming
            start = await call(service.outputs.log_start, job_id, tail=LOG_TAIL_BYTES)
        else:
            await call(service.outputs.log_file, job_id)
        render_items = env.get_template("_log_items.html").render
        events = _log_events(
            service, job_id, start, request, render_items, cut=tail and start > 0, file_id=file_id
        )
        return EventSourceResponse(events, ping=15)

    # ------------------------------------------------------------ actions

    async def act(request: Request, job_id: int, fn: Callable[[], Any]) -> HTMLResponse:
        try:
            result = await call(fn)
        except DispatcherError as exc:
            return fragment_error(request, exc)
        response = page(request, "_notice.html", result=result)
        response.headers["HX-Trigger-After-Settle"] = "job-changed"
        return response

    @ui.post("/jobs/{job_id}/merge", response_class=HTMLResponse)
    async def merge(request: Request, job_id: JobId) -> HTMLResponse:
        form = await _form(request)
        try:
            body = MergeRequest(strategy=MergeStrategy(_one(form, "strategy") or "merge"),
                                into=_one(form, "into").strip() or None,
                                delete_branch=_one(form, "delete_branch") == "on")  # fmt: skip
        except ValueError as exc:
            return fragment_error(request, InvalidInput(f"invalid merge: {exc}"))
        return await act(request, job_id, partial(service.control.merge, job_id, body))

    @ui.post("/jobs/{job_id}/discard", response_class=HTMLResponse)
    async def discard(request: Request, job_id: JobId) -> HTMLResponse:
        return await act(request, job_id, partial(service.control.discard, job_id))

    @ui.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
    async def cancel(request: Request, job_id: JobId) -> HTMLResponse:
        return await act(request, job_id, partial(service.control.cancel, job_id))

    @ui.post("/jobs/{job_id}/retry", response_class=HTMLResponse)
    async def retry(request: Request, job_id: JobId) -> HTMLResponse:
        return await act(request, job_id, partial(service.jobs.retry, job_id))

    @ui.post("/jobs/{job_id}/push", response_class=HTMLResponse)
    async def push(request: Request, job_id: JobId) -> HTMLResponse:
        return await act(request, job_id, partial(service.forges.push, job_id, PushRequest()))

    @ui.post("/jobs/{job_id}/pr", response_class=HTMLResponse)
    async def pull_request(request: Request, job_id: JobId) -> HTMLResponse:
        body = PullRequestCreate()
        return await act(request, job_id, partial(service.forges.pr, job_id, body))

    @ui.post("/jobs/{job_id}/followup", response_class=HTMLResponse)
    async def followup(request: Request, job_id: JobId) -> HTMLResponse:
        form = await _form(request)
        fields = (form.get("c_path", []), form.get("c_line", []), form.get("c_text", []))
        triples = zip(*fields, strict=False)
        comments = [render.Comment(p, line, text) for p, line, text in triples if text.strip()]
        note = _one(form, "prompt")
        prompt = render.review_prompt(comments, note) if comments else note.strip()
        if not prompt:
            return fragment_error(request, InvalidInput("write a prompt or a comment first"))
        try:
            body = FollowupCreate(prompt=prompt)
        except ValidationError as exc:  # too long, say: the one line the REST route gives
            why = "; ".join(str(e["msg"]) for e in exc.errors()[:3])
            return fragment_error(request, InvalidInput(f"invalid follow-up: {why}"))
        return await act(request, job_id, partial(service.jobs.followup, job_id, body))

    # ------------------------------------------------------------ repos, events, notices

    @ui.get("/repos", response_class=HTMLResponse)
    async def repos(request: Request) -> HTMLResponse:
        found = await call(service.repos.all)
        triggers = {t.repo: t for t in await call(service.events.triggers)}
        return page(request, "repos.html", repos=found, triggers=triggers,
                    settings=service.settings, today=_today())  # fmt: skip

    @ui.post("/repos", response_class=HTMLResponse, response_model=None)
    async def add_repo(request: Request) -> Response:
        form = await _form(request)
        try:
            body = RepoCreate(
                path=_one(form, "path").strip(), name=_one(form, "name").strip() or None
            )
            await call(service.repos.add, body)
        except DispatcherError as exc:
            return fragment_error(request, exc)
        except ValueError as exc:
            return fragment_error(request, InvalidInput(str(exc).splitlines()[0]))
        return Response(status_code=204, headers={"HX-Refresh": "true"})

    @ui.post("/repos/{name}/remove", response_class=HTMLResponse, response_model=None)
    async def remove_repo(request: Request, name: str) -> Response:
        try:
            await call(service.repos.remove, name)
        except DispatcherError as exc:
            return fragment_error(request, exc)
        return Response(status_code=204, headers={"HX-Refresh": "true"})

    def listing(name: str, read: Callable[..., list[Any]]) -> None:
        """A page of ``name`` newest first (``?before=`` an id for older ones)."""

        async def route(request: Request, before: Before = None) -> HTMLResponse:
            found = await call(read, before=before, limit=PAGE)
            return page(request, f"{name}.html", items=found, page_size=PAGE)

        ui.add_api_route(f"/{name}", route, methods=["GET"], response_class=HTMLResponse)

    # ------------------------------------------------------------ teams

    @ui.get("/teams", response_class=HTMLResponse)
    async def teams_page(request: Request) -> HTMLResponse:
        return page(request, "teams.html", teams=await call(service.teams.listing))

    def team_context(team_id: int) -> dict[str, Any]:
        team = service.teams.show(team_id)
        tasks = [t.model_dump(mode="json") for t in team.tasks]
        return {
            "team": team,
            "graph": draw_graph(tasks),
            "messages": service.teams.messages_log(team_id),
        }

    @ui.get("/teams/{team_id}", response_class=HTMLResponse)
    async def team_page(request: Request, team_id: JobId) -> HTMLResponse:
        return page(request, "team.html", **await call(team_context, team_id))

    listing("events", lambda **kw: service.events.page(**kw))
    listing("notifications", lambda **kw: service.board.deliveries(**kw))

    return ui


async def _log_events(
    service: Service,
    job_id: int,
    offset: int,
    request: Request,
    render_items: Callable[..., str],
    *,
    cut: bool = False,
    file_id: int | None = None,
) -> AsyncIterator[dict[str, str]]:
    """The job's log from ``offset`` as SSE ``line`` events of rendered HTML (whole lines
    only: a partial line waits for its end), each with ``<file id>:<offset>`` after it as
    its id (the file's inode: a reconnect after a rotation starts the new file at 0, not
    at an offset of the old one), then ``end`` with the job's state. ``cut``: the stream
    starts past the log's start (its tail), which the first line says. Offsets count the
    file's bytes, not the decoded text's (invalid UTF-8 is one byte, not three)."""
    note = f"{DISPATCHER_PREFIX}(the start is left out: GET /jobs/{job_id}/log)\n" if cut else ""
    pending = note.encode()
    where, end = 0, offset  # the file of the last chunk, and where it ended
    async for item in service.outputs.follow(job_id, offset, request.is_disconnected, file_id):
        if isinstance(item, LogChunk):
            if where and item.file_id != where and pending:  # the old file's unended line
                yield _line(render_items, pending, where, end)
                pending = b""
            where, end = item.file_id, item.offset
            pending += item.data
            done, newline, pending = pending.rpartition(b"\n")
            if not newline:
                continue
            after = max(0, item.offset - len(pending))
            yield _line(render_items, done, where, after)
        else:
            if pending:
                yield _line(render_items, pending, where, item.offset)
            yield {
                "event": "end",
                "id": f"{where}:{item.offset}",
                "data": f"The log ended: the job is {item.state}.",
            }


def _line(render: Callable[..., str], data: bytes, file_id: int, after: int) -> dict[str, str]:
    text = data.decode("utf-8", errors="replace")
    return {"event": "line", "id": f"{file_id}:{after}", "data": render(items=_views(text))}


def _event_id(value: str) -> tuple[int | None, int] | None:
    """A log event's id (``<file id>:<offset>``, or a bare offset) as (file id, offset)."""
    file_part, _, offset = value.rpartition(":")
    if not offset.isdigit() or (file_part and not file_part.isdigit()):
        return None
    return (int(file_part) if file_part else None), int(offset)


def _views(text: str) -> list[Any]:
    return [v for line in text.split("\n") for v in view_line(line)]


async def _form(request: Request) -> dict[str, list[str]]:
    """A form-encoded body (htmx's and the login form's); nothing else is accepted."""
    body = await request.body()
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"unreadable form: {exc}") from None


def _one(form: Mapping[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


def _files(exc: DispatcherError) -> list[str]:
    files = exc.details.get("files")
    return [str(f) for f in files] if isinstance(files, list) else []


def _history(job: JobPublic) -> list[tuple[str, datetime]]:
    """The job's states with when it reached them (from its recorded times; a lost run
    that was queued again shows its last run's)."""
    steps: list[tuple[str, datetime | None]] = [
        ("queued", job.created_at),
        ("running", job.started_at),
        (job.state.value if job.state not in CLOSED else "finished", job.finished_at),
    ]
    if job.state in CLOSED:
        steps.append((job.state.value, job.closed_at))
    return [(name, at) for name, at in steps if at is not None]


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = int((datetime.now(UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def _dt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _money(value: float | None) -> str:
    if value is None:
        return ""
    return "$0" if value == 0 else f"${value:.4f}" if value < 1 else f"${value:.2f}"


def _first_line(text: str, width: int = 120) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= width else line[: width - 1] + "…"

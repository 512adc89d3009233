"""What a ``dispatcher`` process imports: each CLI call and each daemon start pays for it
(docs/design.md, "Start-up"). A CLI command that only talks HTTP to the daemon loads no
part of the daemon (the API, the store, Alembic, the MCP SDK, the dashboard's Jinja2 and
Pygments), nor httpx's own command line; the daemon's app loads the dashboard and the MCP
SDK only when first asked for them, and each is then served."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import typing

import httpx
import pytest

from tests.daemonproc import free_port

# The daemon's parts, and what httpx's command line would bring (click, rich, pygments).
NOT_IN_A_CLI_CALL = {
    "fastapi", "starlette", "uvicorn", "sqlmodel", "sqlalchemy", "alembic", "mcp", "jinja2",
    "pygments", "rich", "click", "psycopg", "apscheduler", "watchdog", "git",
}  # fmt: skip
LOADED_WHEN_ASKED = {"mcp", "jinja2", "pygments", "alembic"}


def loaded_by(code: str, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running ``code``
    (which prints nothing on stdout)."""
    script = code + textwrap.dedent(
        """
        import json as _json, sys as _sys
        print(_json.dumps(sorted({m.split(".")[0] for m in _sys.modules})))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    )  # fmt: skip
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_no_part_of_the_daemon() -> None:
    assert loaded_by("import dispatcher.cli.commands") & NOT_IN_A_CLI_CALL == set()


@pytest.mark.parametrize(
    "argv",
    [["jobs"], ["show", "1"], ["logs", "1"], ["repo", "list"], ["--version"]],
)
def test_a_command_over_http_loads_no_part_of_the_daemon(argv: list[str]) -> None:
    """The whole command, up to its one-line error (no daemon listens on the port)."""
    env = {**os.environ, "DISPATCHER_URL": f"http://127.0.0.1:{free_port()}"}
    env["DISPATCHER_TOKEN"] = "t0ken"
    code = textwrap.dedent(
        """
        import contextlib, sys
        from dispatcher.cli.commands import main
        sys.argv = ["dispatcher", *sys.argv[1:]]
        with contextlib.redirect_stdout(sys.stderr), contextlib.suppress(SystemExit):
            main()
        """
    )
    assert loaded_by(code, *argv, env=env) & NOT_IN_A_CLI_CALL == set()


def test_the_daemons_app_loads_the_dashboard_and_mcp_only_when_asked() -> None:
    code = textwrap.dedent(
        """
        import typing
        import dispatcher.cli, dispatcher.daemon, dispatcher.store.database
        from dispatcher.api.app import create_app
        import dispatcher.mcp.endpoint
        create_app(typing.cast("Service", None), token="t0ken")
        """
    )
    assert loaded_by(code) & LOADED_WHEN_ASKED == set()


def test_the_dashboard_is_built_once_at_its_first_requests() -> None:
    """Requests that arrive together while it is being built all get its pages."""
    from dispatcher.api.app import create_app

    app = create_app(typing.cast("typing.Any", None), token="t0ken")
    mount = next(r for r in app.routes if getattr(r, "path", "") == "/ui")
    transport = httpx.ASGITransport(app=app)

    async def visit() -> None:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
        ):
            pages = await asyncio.gather(*(client.get("/ui/login") for _ in range(4)))
            assert [p.status_code for p in pages] == [200] * 4
            assert all("<form" in p.text for p in pages)
            built = mount.app._app
            assert built is not None
            assert (await client.get("/ui/static/ui.css")).status_code == 200
            assert mount.app._app is built

    assert mount.app._app is None
    asyncio.run(visit())

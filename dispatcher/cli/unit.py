"""``dispatcher service``: keep the daemon running under the user's service manager
(a systemd user unit, or a launchd agent on macOS). See docs/service.md."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from dispatcher.cli.commands import app
from dispatcher.config import Settings
from dispatcher.unit import manager
from dispatcher.unit.target import Target

service_app = typer.Typer(
    help="Keep the daemon running: a systemd user unit (Linux) or a launchd agent (macOS).",
    no_args_is_help=True,
)
app.add_typer(service_app, name="service")


class ManagerName(StrEnum):
    auto = "auto"  # launchd on macOS, systemd elsewhere
    systemd = "systemd"
    launchd = "launchd"


Manager = Annotated[
    ManagerName,
    typer.Option("--manager", help="Service manager (auto: launchd on macOS, else systemd)"),
]
AUTO = ManagerName.auto


def _pick(name: ManagerName) -> tuple[manager.Backend, Target]:
    backend = manager.backend(name.value)
    return backend, manager.target(backend, Settings(), os.environ)


def _say(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


@service_app.command("install")
def service_install(
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the unit and install nothing")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing, different unit")] = False,
    name: Manager = AUTO,
) -> None:
    """Write the unit and the environment file, then enable and start the service.

    Where no user service manager answers, the commands to run are printed (exit 0).
    """
    backend, where = _pick(name)
    if print_only:  # the unit alone on stdout; where it goes and what runs, on stderr
        typer.echo(backend.render(where), nl=False)
        for line in manager.plan(backend, where):
            typer.echo(line, err=True)
        return
    _say(manager.install(backend, where, os.environ, force=force))


@service_app.command("uninstall")
def service_uninstall(name: Manager = AUTO) -> None:
    """Stop and disable the service and remove its unit (the env file and state dir stay)."""
    backend, where = _pick(name)
    _say(manager.uninstall(backend, where))


@service_app.command("status")
def service_status(name: Manager = AUTO) -> None:
    """The service manager's status of the daemon, and its exit code (3: stopped)."""
    backend, where = _pick(name)
    raise typer.Exit(manager.status(backend, where))


@service_app.command("logs")
def service_logs(
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="Lines to show")] = 100,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines")] = False,
    name: Manager = AUTO,
) -> None:
    """The daemon's log (journalctl --user -u dispatcher.service; launchd: its log file)."""
    backend, where = _pick(name)
    raise typer.Exit(manager.logs(backend, where, lines, follow))

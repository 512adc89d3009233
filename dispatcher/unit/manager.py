"""Install, remove and ask about the service: the unit file and environment file written,
the manager's commands run (or printed, where no manager answers). See docs/service.md."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from dispatcher.config import Settings
from dispatcher.errors import AlreadyExists, DispatcherError, NotFound
from dispatcher.unit.command import run
from dispatcher.unit.launchd import Launchd
from dispatcher.unit.systemd import Systemd
from dispatcher.unit.target import Target, config_home, env_file_text, target_for, write_env_file


class Backend(Protocol):
    """A service manager: where its file goes, the file, and its commands."""

    name: str
    # Its load command refuses what is loaded already (launchctl bootstrap): an install
    # over an unchanged unit stops it first, as over a replaced one.
    stops_to_reload: bool

    def unit_file(self, home: Path, config_home: Path) -> Path: ...
    def log_file(self, home: Path) -> Path | None: ...
    def render(self, target: Target) -> str: ...
    def links(self, target: Target) -> list[Path]: ...
    def unavailable(self) -> str | None: ...
    def start_commands(self, target: Target) -> list[list[str]]: ...
    def stop_commands(self, target: Target) -> list[list[str]]: ...
    def forget_commands(self, target: Target) -> list[list[str]]: ...
    def status_command(self, target: Target) -> list[str]: ...
    def logs_command(self, target: Target, lines: int, follow: bool) -> list[str]: ...


def backend(name: str = "auto") -> Backend:
    """``auto``: launchd on macOS, systemd elsewhere."""
    if name == "auto":
        name = "launchd" if sys.platform == "darwin" else "systemd"
    return Launchd() if name == "launchd" else Systemd()


def target(manager: Backend, settings: Settings, environ: Mapping[str, str]) -> Target:
    home = Path.home()
    unit = manager.unit_file(home, config_home(environ))
    return target_for(settings, unit, manager.log_file(home), environ)


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole: a manager never reads half a unit."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        part.write_text(text)
        os.replace(part, path)
    except OSError as exc:
        raise DispatcherError(f"cannot write {path}: {exc.strerror or exc}") from None


def _apply(steps: list[list[str]], reason: str | None, may_fail: int = 0) -> list[str]:
    """Run ``steps`` in order (the first ``may_fail`` may fail: a stop of what is not
    running) and say what ran; where no manager answers (``reason``, from
    :meth:`Backend.unavailable`), say which commands to run."""
    if reason is not None:
        return [f"not started: {reason}; to start it, run:"] + [
            f"  {shlex.join(argv)}" for argv in steps[may_fail:]
        ]
    said = []
    for i, argv in enumerate(steps):
        outcome = run(argv)
        if outcome.code != 0 and i >= may_fail:
            output = " ".join(outcome.output.split())
            raise DispatcherError(f"{shlex.join(argv)} failed (exit {outcome.code}): {output}")
        note = "" if outcome.code == 0 else f" (exit {outcome.code}: nothing to stop)"
        said.append(f"ran: {shlex.join(argv)}{note}")
    return said


def install(
    manager: Backend, where: Target, environ: Mapping[str, str], *, force: bool
) -> list[str]:
    """Write the unit (an existing different one only with ``force``) and the environment
    file (if missing), then load and start it. Returns what was done, line by line."""
    text = manager.render(where)
    path = where.unit_file
    old = path.read_text() if path.exists() else None
    if old is not None and old != text and not force:
        raise AlreadyExists(
            f"{path} exists and differs from the unit this install writes; --force replaces it "
            "(`dispatcher service install --print` shows the new one)"
        )
    replaced = old is not None and old != text
    said = [f"{'replaced' if replaced else 'unchanged' if old else 'wrote'} {path}"]
    if old != text:
        _write(path, text)
    try:
        created = write_env_file(where.env_file, env_file_text(environ))
        if where.log_file is not None:
            where.log_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DispatcherError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
    if created:
        said.append(
            f"created {where.env_file} (0600): this shell's PATH and DISPATCHER_* settings; "
            "edit it, then restart the service"
        )
    else:
        said.append(f"kept {where.env_file} (never overwritten)")
    reload = replaced or (old is not None and manager.stops_to_reload)
    stops = manager.stop_commands(where) if reload else []
    steps = stops + manager.start_commands(where)
    said += _apply(steps, manager.unavailable(), may_fail=len(stops))
    if not said[-1].startswith("  "):  # it ran: whether the daemon stays up, status tells
        said.append("see `dispatcher service status` and `dispatcher service logs`")
    return said


def plan(manager: Backend, where: Target) -> list[str]:
    """What :func:`install` would write and run, as comment lines (for ``--print``)."""
    return [
        f"# install writes this to {where.unit_file} (and {where.env_file}, if missing),",
        "# then runs:",
        *(f"#   {shlex.join(argv)}" for argv in manager.start_commands(where)),
    ]


def uninstall(manager: Backend, where: Target) -> list[str]:
    """Stop and disable the service, then remove its unit; the environment file and the
    state dir are kept."""
    path = where.unit_file
    if not path.exists():
        return [f"not installed: no {path}"]
    stops = manager.stop_commands(where)
    reason = manager.unavailable()
    said = (
        [f"nothing stopped: {reason}"]
        if reason is not None
        else _apply(stops, reason, may_fail=len(stops))
    )
    for file in (path, *manager.links(where)):
        if file.is_symlink() or file.exists():
            file.unlink()
            said.append(f"removed {file}")
    said += _apply(manager.forget_commands(where), reason) if reason is None else []
    said.append(f"kept {where.env_file} and the state dir {where.state_dir}")
    return said


def _answering(manager: Backend, where: Target) -> None:
    if not where.unit_file.exists():
        raise NotFound(f"not installed: no {where.unit_file} (see `dispatcher service install`)")
    reason = manager.unavailable()
    if reason is not None:
        raise DispatcherError(f"{reason}; the unit is {where.unit_file}")


def status(manager: Backend, where: Target) -> int:
    """The manager's own status, shown; its exit code (systemctl: 3 when not running)."""
    _answering(manager, where)
    return run(manager.status_command(where), capture=False).code


def logs(manager: Backend, where: Target, lines: int, follow: bool) -> int:
    """The daemon's log, shown (``follow``: until interrupted); the reader's exit code."""
    _answering(manager, where)
    argv = manager.logs_command(where, lines, follow)
    code = run(argv, capture=False).code
    if code == 127:
        raise DispatcherError(f"{argv[0]} is not installed")
    return code

"""``dispatcher doctor`` (``GET /doctor``): what in the set-up would make jobs fail.

Each check is one :class:`~dispatcher.store.models.DoctorCheck`: ``ok``; a ``warning``
(things work, but mind it: an agent nothing uses is missing, a notify target does not
answer); or a ``problem`` (jobs would fail, or what is configured would never happen),
with how to fix it. The daemon computes them in its own environment (its PATH, its git,
its settings). :func:`local_checks` (git, the state dir) need no daemon: the CLI runs
them itself when none answers. Which check is which: docs/configuration.md,
"dispatcher doctor".
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dispatcher.config import Settings
from dispatcher.errors import GitError, InvalidInput
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.git import version
from dispatcher.notify import reach
from dispatcher.notify.targets import Target, validate_target
from dispatcher.process import sandbox
from dispatcher.service.agents import Agents
from dispatcher.store.database import Store
from dispatcher.store.models import AgentPublic, DoctorCheck, DoctorStatus, Repo
from triggers.config import TRIGGER_FILE, TriggerFile

FREE_SPACE_WARNING: Final = 1024 * 2**20
"""Less free space than this (1 GiB) on the state dir's file system: a warning."""
FREE_SPACE_PROBLEM: Final = 100 * 2**20
"""Less than this (100 MiB): a problem; worktrees, logs and the database need room."""

FORGE_KINDS: Final = frozenset(
    {"issues", "issue_comment", "pull_request", "push", "workflow_run", "check_run"}
)
"""Event kinds a forge webhook delivers."""
FORGE_ONLY_KINDS: Final = frozenset({"issue_comment", "workflow_run", "check_run"})
"""Of those, the ones no local source makes (only the forge, or ``POST /events``)."""

_SET_THE_SECRETS: Final = (
    "set DISPATCHER_GITHUB_WEBHOOK_SECRET (GitHub, Gitea, Forgejo) or "
    "DISPATCHER_GITLAB_WEBHOOK_TOKEN (GitLab), or the repo's entry of "
    "DISPATCHER_WEBHOOK_SECRETS, to the forge's webhook secret and restart the daemon"
)

_UNKNOWN_AGENT_FIX: Final = (
    "name a built-in agent (`dispatcher agents` lists them), or define it in "
    "DISPATCHER_AGENTS or the repo's agents:"
)
_INSTALL_TO_USE: Final = (
    "install one in a directory on the daemon's PATH when you mean to use it (docs/agents.md)"
)
_UNREACHABLE_FIX: Final = (
    "check the URL, and that its host is up and reachable from the daemon's machine"
)


def _line(check: str, status: DoctorStatus, detail: str, fix: str | None = None) -> DoctorCheck:
    return DoctorCheck(check=check, status=status, detail=detail, fix=fix)


def local_checks(settings: Settings) -> list[DoctorCheck]:
    """The checks that need no daemon: git, and the state dir with its free space."""
    return [git_check(), *state_dir_checks(settings.state_dir)]


def git_check() -> DoctorCheck:
    """The git on PATH runs and is 2.38 or later."""
    fix = "install git 2.38 or later on the daemon's PATH"
    try:
        found = version.installed()
    except GitError as exc:
        return _line("git", "problem", f"cannot run git: {exc.message}", fix)
    if not found.new_enough:
        return _line("git", "problem", found.too_old(), fix)
    return _line("git", "ok", f"git {found.text} at {found.path or 'git'}")


def state_dir_checks(state_dir: Path) -> list[DoctorCheck]:
    """The state dir (or, before the daemon made it, its nearest parent) takes a new
    file, and its file system has room."""
    fix = (
        f"make {state_dir} a directory you can write, or point DISPATCHER_STATE_DIR (serve "
        "--state-dir) at one"
    )
    existing = state_dir
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            detail = f"{state_dir}: {existing} is not a directory"
            return [_line("state dir", "problem", detail, fix)]
        with tempfile.TemporaryFile(dir=existing, prefix=".doctor-"):
            pass
    except OSError as exc:
        return [_line("state dir", "problem", f"cannot write in {existing}: {exc.strerror}", fix)]
    if existing == state_dir:
        ok = _line("state dir", "ok", f"{state_dir} is writable")
    else:
        detail = (
            f"{state_dir} does not exist yet; the daemon makes it at start ({existing} is writable)"
        )
        ok = _line("state dir", "ok", detail)
    return [ok, _free_space(existing)]


def _free_space(path: Path) -> DoctorCheck:
    free = shutil.disk_usage(path).free
    shown = f"{free / 2**30:.1f} GiB" if free >= 2**30 else f"{free // 2**20} MiB"
    detail = f"{shown} free on the file system of {path}"
    fix = "free some space (finished jobs' worktrees: `dispatcher discard`), or move the state dir"
    if free < FREE_SPACE_PROBLEM:
        return _line("free space", "problem", f"{detail}; jobs need room to run", fix)
    if free < FREE_SPACE_WARNING:
        return _line("free space", "warning", f"{detail}; less than 1 GiB", fix)
    return _line("free space", "ok", detail)


def _listed(items: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


@dataclass(eq=False)
class Doctor:
    """Every check, in the daemon's environment."""

    settings: Settings
    store: Store
    trigger_files: TriggerFiles
    agents: Agents

    def checks(self) -> list[DoctorCheck]:
        repos = self.store.repos()
        lines = [*local_checks(self.settings), self._sandbox()]
        for repo in repos:
            lines += self._repo(repo)
        lines += self._agents(repos)
        lines += self._notify(repos)
        return lines

    def _active(self, repo: Repo) -> TriggerFile | None:
        return self.trigger_files.active(repo.id) if repo.id is not None else None

    def _sandbox(self) -> DoctorCheck:
        box = sandbox.sandbox_for(self.settings.sandbox, self.settings.sandbox_bwrap)
        if box.active:
            return _line("sandbox", "ok", f"bubblewrap ({box.program})")
        if box.mode == "off":
            return _line("sandbox", "ok", "off (DISPATCHER_SANDBOX=off): agents run unsandboxed")
        install = "install bubblewrap (Debian: apt-get install bubblewrap)"
        if box.mode == "bwrap":
            return _line(
                "sandbox", "problem", f"required (DISPATCHER_SANDBOX=bwrap) but {box.problem}",
                f"{install}, or set DISPATCHER_SANDBOX=auto",
            )  # fmt: skip
        return _line(
            "sandbox", "warning", f"none: {box.problem}; agents run unsandboxed",
            f"{install}, or set DISPATCHER_SANDBOX=off to run them unsandboxed on purpose",
        )  # fmt: skip

    # -------------------------------------------------------------- repos

    def _repo(self, repo: Repo) -> list[DoctorCheck]:
        path = Path(repo.path)
        check = f"repo {repo.name}"
        moved = (
            f"put the repository back at {path}, or `dispatcher repo remove {repo.name}` and "
            "add it where it is now"
        )
        if not path.is_dir():
            return [_line(check, "problem", f"{path} does not exist", moved)]
        if not (path / ".git").exists():
            return [_line(check, "problem", f"{path} is not a git repository (no .git)", moved)]
        lines = [_line(check, "ok", f"{path} (default branch {repo.default_branch})")]
        active = self._active(repo)
        lines.append(self._trigger_file(repo, active))
        webhooks = self._webhooks(repo, active)
        return lines + ([webhooks] if webhooks is not None else [])

    def _trigger_file(self, repo: Repo, active: TriggerFile | None) -> DoctorCheck:
        check = f"triggers {repo.name}"
        if repo.triggers_error:
            problems = repo.triggers_error.splitlines()  # one a line: the first, and a count
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return _line(
                check, "problem", problems[0] + more,
                f"fix {TRIGGER_FILE} and commit it on {repo.default_branch} (`dispatcher "
                f"triggers check {repo.path}` lists every problem); the last good file stays "
                "active until then",
            )  # fmt: skip
        if active is None:
            return _line(check, "ok", f"no {TRIGGER_FILE} (jobs are started by hand)")
        names = [t.name for t in active.trigger_list()]
        if not names:
            return _line(check, "ok", "repo settings only, no triggers (jobs are started by hand)")
        return _line(check, "ok", f"{len(names)} active: {_listed(names, 5)}")

    def _webhooks(self, repo: Repo, active: TriggerFile | None) -> DoctorCheck | None:
        """Whether forge deliveries for the repo's triggers would verify (None: it has no
        trigger a forge delivers)."""
        triggers = active.trigger_list() if active is not None else []
        forge = [t.name for t in triggers if t.kinds() & FORGE_KINDS]
        if not forge:
            return None
        forge_only = [t.name for t in triggers if t.kinds() & FORGE_ONLY_KINDS]
        check = f"webhooks {repo.name}"
        if repo.forge_name is None:
            if not forge_only:
                return None  # local refs and the issue inbox fire them
            return _line(
                check, "warning",
                f"trigger(s) {_listed(forge_only)} fire only from forge events, but the repo "
                "has no forge name, so no forge delivery reaches it (only POST /events)",
                "register it with --forge-name OWNER/NAME (or with an origin remote on the forge)",
            )  # fmt: skip
        given = {
            "DISPATCHER_WEBHOOK_SECRETS": self.settings.webhook_secrets.get(repo.name),
            "DISPATCHER_GITHUB_WEBHOOK_SECRET": self.settings.github_webhook_secret,
            "DISPATCHER_GITLAB_WEBHOOK_TOKEN": self.settings.gitlab_webhook_token,
        }
        set_ = [name for name, value in given.items() if value]
        if set_:
            return _line(check, "ok", f"{repo.forge_name}: {', '.join(set_)} set")
        refused = f"no webhook secret is set: every forge delivery for {repo.forge_name} is refused"
        if forge_only:
            detail = f"{refused}, and trigger(s) {_listed(forge_only)} fire only from the forge"
            return _line(check, "problem", detail, _SET_THE_SECRETS)
        detail = f"{refused}; local refs still fire trigger(s) {_listed(forge)}"
        return _line(check, "warning", detail, _SET_THE_SECRETS)

    # -------------------------------------------------------------- agents

    def _agents(self, repos: Sequence[Repo]) -> list[DoctorCheck]:
        """Each profile: found, not blocked. One the default or a trigger names is a
        problem when it cannot run; one nothing names only a warning."""
        default = self.settings.default_agent
        users: dict[tuple[str, str | None], list[str]] = {
            (default, None): ["the default agent (DISPATCHER_DEFAULT_AGENT)"]
        }
        own: dict[str, set[str]] = {}  # repo name -> the agents its trigger file defines
        for repo in repos:
            active = self._active(repo)
            if active is None:
                continue
            own[repo.name] = set(active.agents)
            for trigger in active.trigger_list():
                name = active.agent_for(trigger) or default
                key = (name, repo.name if name in own[repo.name] else None)
                users.setdefault(key, []).append(f"{repo.name}'s trigger {trigger.name}")
        rows = self.agents.list()
        idle = [  # built-ins nothing uses, not installed: one line for all
            row.name for row in rows
            if row.source == "builtin" and row.path is None and (row.name, None) not in users
        ]  # fmt: skip
        lines = [
            _agent_line(row, users.get((row.name, None), []))
            for row in rows
            if row.name not in idle
        ]
        if idle:
            detail = f"not found on the daemon's PATH, and nothing uses them: {', '.join(idle)}"
            lines.append(_line("agents unused", "warning", detail, _INSTALL_TO_USE))
        for repo_name, names in own.items():
            for row in self.agents.list(repo_name) if names else []:
                if row.name in names:
                    used = users.get((row.name, repo_name), [])
                    lines.append(_agent_line(row, used, repo=repo_name))
        known = {row.name for row in rows}
        unknown = [(agent, used) for (agent, mine), used in users.items() if mine is None]
        for agent, used in unknown:
            if agent not in known:
                detail = f"no such agent profile; used by {_listed(used)}"
                lines.append(_line(f"agent {agent}", "problem", detail, _UNKNOWN_AGENT_FIX))
        return lines

    # -------------------------------------------------------------- notify

    def _notify(self, repos: Sequence[Repo]) -> list[DoctorCheck]:
        """Each notify target (the daemon's, then each repo's): valid, and its host takes a
        TCP connection (nothing is sent). A target that does not answer is a warning:
        jobs end as they would, their notifications fail."""
        entries: list[tuple[str, Mapping[str, object]]] = [
            ("DISPATCHER_NOTIFY", entry) for entry in self.settings.notify
        ]
        for repo in repos:
            active = self._active(repo)
            for n in active.notify if active is not None else []:
                entries.append((f"{repo.name}'s trigger file", n.model_dump(exclude_defaults=True)))
        lines: list[DoctorCheck] = []
        targets: list[tuple[str, Target]] = []
        for where, entry in entries:
            try:
                targets.append((where, validate_target(entry)))
            except InvalidInput as exc:
                fix = f"fix the entry in {where}; until then nothing is sent to it"
                lines.append(_line("notify", "warning", f"{exc.message} ({where})", fix))
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda pair: reach.unreachable(pair[1]), targets))
        for (where, target), why in zip(targets, answers, strict=True):
            check = f"notify {target.type} {target.shown_url}"
            if why is None:
                host, port = reach.address(target)
                lines.append(_line(check, "ok", f"{host}:{port} takes connections ({where})"))
            else:
                detail = f"{why} ({where}): its notifications would fail"
                lines.append(_line(check, "warning", detail, _UNREACHABLE_FIX))
        return lines


def _agent_line(row: AgentPublic, used: list[str], repo: str | None = None) -> DoctorCheck:
    check = f"agent {row.name}" + (f" ({repo}'s agents:)" if repo else "")
    bad: DoctorStatus = "problem" if used else "warning"
    who = f"used by {_listed(used)}" if used else "not used by the default agent or any trigger"
    if not row.argv:  # its override could not be read
        where = f"{repo}'s agents:" if repo else "DISPATCHER_AGENTS"
        return _line(check, bad, f"{row.problem}; {who}", f"fix its argv in {where}")
    if row.path is None:
        fix = "install it in a directory on the daemon's PATH (docs/agents.md)"
        if used:
            fix += ", or make what uses it name another agent"
        return _line(check, bad, f"{row.problem or 'not found'}; {who}", fix)
    if row.blocked:
        what, _, how = row.blocked.partition(": ")
        return _line(check, bad, f"{what}; {who}", how or None)
    if row.problem:
        return _line(
            check, "warning", f"{row.path}: {row.problem}; {who}",
            f"check that {row.path} runs for the daemon's user",
        )  # fmt: skip
    return _line(check, "ok", f"{row.version or 'found'} at {row.path}; {who}")

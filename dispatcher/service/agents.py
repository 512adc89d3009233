"""The agents a job can name: every built-in and configured profile, found or not.

``GET /agents`` and ``dispatcher agents``: for each profile, as the daemon would run it
for the given repo (settings' ``agents`` overrides, then the repo's trigger file's),
whether its program is on the daemon's PATH, its version, what it can do (resume,
report cost, take a system prompt) and what would stop a job with it now.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dispatcher.agents import catalog, profiles
from dispatcher.agents.probe import Prober
from dispatcher.agents.spec import AgentProfile
from dispatcher.config import Settings
from dispatcher.errors import InvalidInput
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.jobs import invocation, isolation
from dispatcher.process import sandbox
from dispatcher.store.database import Store
from dispatcher.store.models import AgentPublic

_SECRET_FLAG = re.compile(r"^--?[\w-]*(key|token|secret|password)[\w-]*$", re.IGNORECASE)


def shown_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of any flag that names a key, token, secret or password
    (``--api-key X``, ``--token=X``) replaced by ``***``: an override may carry one."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        flag, eq, _ = arg.partition("=")
        if hide_next:
            shown.append("***")
        elif eq and _SECRET_FLAG.match(flag):
            shown.append(f"{flag}=***")
        else:
            shown.append(arg)
        hide_next = not hide_next and not eq and bool(_SECRET_FLAG.match(arg))
    return shown


@dataclass(eq=False)
class Agents:
    settings: Settings
    store: Store
    trigger_files: TriggerFiles
    prober: Prober = field(default_factory=Prober)

    def overrides(self, repo_name: str | None) -> tuple[dict[str, list[str] | str], set[str]]:
        """The argv overrides for jobs of ``repo_name`` (settings', then the repo's trigger
        file's), and which names the repo's file set."""
        merged: dict[str, list[str] | str] = dict(self.settings.agents)
        from_repo: set[str] = set()
        if repo_name is not None:
            repo = self.store.repo_by_name(repo_name)
            assert repo.id is not None
            active = self.trigger_files.active(repo.id)
            if active is not None and active.agents:
                from_repo = set(active.agents)
                merged.update(active.agents)
        return merged, from_repo

    def list(self, repo_name: str | None = None) -> list[AgentPublic]:
        overrides, from_repo = self.overrides(repo_name)
        names = [*catalog.BUILTIN_PROFILES, *sorted(set(overrides) - set(catalog.BUILTIN_PROFILES))]
        rows: list[tuple[str, str, AgentProfile | None, str | None]] = []
        for name in names:
            where = "repo" if name in from_repo else "settings"
            if name in catalog.BUILTIN_PROFILES:
                source = f"builtin, argv from {where}" if name in overrides else "builtin"
            else:
                source = where
            try:
                rows.append((name, source, profiles.resolve_profile(name, overrides), None))
            except InvalidInput as exc:
                rows.append((name, source, None, exc.message))
        with ThreadPoolExecutor(max_workers=4) as pool:  # CLIs start slowly: not all at once
            return list(pool.map(lambda row: self._public(*row), rows))

    def _boxed(self) -> bool:
        return sandbox.sandbox_for(self.settings.sandbox, self.settings.sandbox_bwrap).active

    def _public(
        self, name: str, source: str, profile: AgentProfile | None, problem: str | None
    ) -> AgentPublic:
        if profile is None:
            return AgentPublic(
                name=name, source=source, description="", argv=[], output="text",
                structured=False, can_resume=False, reports_cost=False, system_prompt=False,
                budget_flag=False, path=None, version=None, problem=problem, blocked=None,
            )  # fmt: skip
        env = {**isolation.env_without_daemon_secrets(), **dict(profile.env)}
        found = self.prober.probe(profile, env)
        return AgentPublic(
            name=name,
            source=source,
            description=profile.description,
            argv=shown_argv(profile.argv),
            output=profile.output,
            structured=profile.reports is not None,
            can_resume=profile.can_resume,
            reports_cost=profile.reports_cost,
            system_prompt=profile.system_prompt_flag is not None,
            budget_flag=profile.budget_flag is not None,
            path=found.path,
            version=found.version,
            problem=found.problem,
            blocked=invocation.start_blocker(profile, boxed=self._boxed()),
        )

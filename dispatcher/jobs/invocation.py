"""How a job's agent is invoked: its profile, its prompt with the repo's conventions, its session.

The profile was resolved when the job was submitted (else it is resolved
again, from the job's ``command`` or agent name). The repo's conventions
(:mod:`dispatcher.jobs.conventions`) go by the profile's system-prompt flag
when it has one and they fit, else at the head of the prompt file. A
follow-up resumes its parent's agent session when the agent can.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agents import mcp, profiles, spec
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidInput
from dispatcher.jobs import conventions
from dispatcher.jobs.files import JobFiles, note_job
from dispatcher.jobs.workspace import Workspace
from dispatcher.store.database import Store
from dispatcher.store.models import Job


def job_profile(settings: Settings, job: Job) -> spec.AgentProfile:
    if job.profile is not None:  # resolved when the job was submitted
        return spec.AgentProfile.model_validate(job.profile)
    if job.command:
        return profiles.command_profile(job.command)
    return profiles.resolve_profile(job.agent, settings.agents)


def _opt_in_set(profile: spec.AgentProfile, environ: Mapping[str, str]) -> str | None:
    """The first of the profile's ``root_opt_in`` variables the user set, as it asks, in
    the daemon's environment, which the agent inherits (the daemon never sets them);
    None: none is."""
    env = {**environ, **dict(profile.env)}
    for opt_in in profile.root_opt_in:
        name, eq, value = opt_in.partition("=")
        if (env.get(name) == value) if eq else bool(env.get(name)):
            return opt_in
    return None


def start_blocker(
    profile: spec.AgentProfile, *, boxed: bool, environ: Mapping[str, str] = os.environ
) -> str | None:
    """Why the agent is known to refuse to start as things are (Claude Code's bypass
    mode when the daemon runs as root, without its opt-in; Codex's own sandbox as root in
    the daemon's box: ``boxed``), in one line that says what to do; None: it starts."""
    if not profile.root_refusal or os.geteuid() != 0 or _opt_in_set(profile, environ):
        return None
    if profile.root_refusal_boxed_only and not boxed:
        return None
    return profile.root_refusal


def check_can_start(
    profile: spec.AgentProfile, *, boxed: bool, environ: Mapping[str, str] = os.environ
) -> str | None:
    """Raise :class:`~dispatcher.errors.InvalidInput` with :func:`start_blocker`'s
    reason. Else, when the agent runs as root only by its own opt-in, the line for the
    job log that says so (None otherwise)."""
    blocker = start_blocker(profile, boxed=boxed, environ=environ)
    if blocker is not None:
        raise InvalidInput(blocker)
    opt_in = _opt_in_set(profile, environ) if profile.root_refusal else None
    if opt_in is not None and os.geteuid() == 0:
        return f"running as root: {opt_in} is set, the agent's own opt-in"
    return None


def report_kind(settings: Settings, job: Job) -> str:
    """The output format the job's agent reports in ("text": none)."""
    try:
        return job_profile(settings, job).reports or "text"
    except DispatcherError:
        return "text"


@dataclass(frozen=True)
class Prompt:
    """What the agent is told: the prompt file's text, and the conventions ("" if none)
    with how they reach it."""

    text: str
    conventions: str
    via_flag: bool  # by the profile's system-prompt flag, not in the prompt file

    @property
    def system_prompt(self) -> str | None:
        return self.conventions if self.via_flag else None


def prompt_for(job: Job, profile: spec.AgentProfile, repo_path: Path, ws: Workspace) -> Prompt:
    """The job's prompt with the repo's conventions at its base commit (see the module
    docstring). A team member's waiting messages are in ``job.prompt`` already: the team
    puts them there when it makes the job (:meth:`Mailbox.for_prompt`), MCP or not."""
    text = _conventions(job, repo_path, profile, ws)
    via_flag = bool(
        text and profile.system_prompt_flag and len(text) <= conventions.MAX_SYSTEM_PROMPT
    )
    prompt = job.prompt if via_flag or not text else f"{text}\n\n# Your task\n\n{job.prompt}"
    return Prompt(prompt, text, via_flag)


def give_mcp(
    settings: Settings,
    job_id: int,
    profile: spec.AgentProfile,
    env: Mapping[str, str],
    files: JobFiles,
) -> mcp.Wiring:
    """What the agent gets to see the daemon's MCP server (:mod:`dispatcher.agents.mcp`),
    with its files written in the job's directory, from the server's URL and the run's
    token in ``env`` (the agent's environment). Its job log says what it got, or why none."""
    url, token = env.get(mcp.URL_VAR), env.get(mcp.TOKEN_VAR)
    if not settings.mcp_for_agents:
        wired = mcp.Wiring(skipped="turned off (DISPATCHER_MCP_FOR_AGENTS=false)")
    elif profile.name in settings.mcp_skip_agents:
        wired = mcp.Wiring(skipped=f"{profile.name} is in DISPATCHER_MCP_SKIP_AGENTS")
    elif not url or not token:
        wired = mcp.Wiring(skipped="no MCP server for this run")
    else:
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        ctx = mcp.Context(url=url, token=token, state=files.root, environ=env, home=home)
        wired = mcp.wiring(profile.mcp, ctx)
    if wired.given:
        mcp.write_files(wired, files.root)
        note = f"mcp: the {mcp.SERVER} server at {url}, by {wired.how}"
    else:
        note = f"mcp: not given ({wired.skipped}); its messages come in its prompt"
    note_job(settings, job_id, note)
    return wired


def _conventions(job: Job, repo_path: Path, profile: spec.AgentProfile, ws: Workspace) -> str:
    """The conventions text for this job's agent. A one-off ``--command`` gets its
    prompt verbatim (it may not be a model at all) unless the job selected skills."""
    if profile.name == profiles.COMMAND and not ws.skills:
        return ""
    conv = conventions.load(repo_path, job.base_sha)
    conventions.check_selected(conv, ws.skills)
    return conventions.render(conv, ws.skills, include_agents_md=not profile.reads_agents_md)


def resume_session(
    settings: Settings, store: Store, job: Job, profile: spec.AgentProfile
) -> str | None:
    """The session a follow-up resumes: its parent's, when the agent can resume (the
    job log says which)."""
    if job.followup_of is None or job.id is None:
        return None
    parent = store.job(job.followup_of)
    if parent.session_id and profile.resume_argv is not None:
        note_job(settings, job.id, f"resuming agent session {parent.session_id}")
        return parent.session_id
    why = "no session was recorded" if not parent.session_id else "the agent cannot resume"
    note_job(settings, job.id, f"{why}: a new session with the follow-up prompt")
    return None

"""Which profile a job runs, and the exact argv it becomes.

The built-in profiles live one per agent under :mod:`dispatcher.agents.builtin`
(listed by :mod:`dispatcher.agents.catalog`); settings and a repo's trigger file
may override their argv or add commands of their own (:func:`resolve_profile`).

Placeholders are the literal strings of :mod:`dispatcher.agents.spec`
(``{prompt_file}``, ``{workdir}``, ...). They are replaced wherever they appear
inside an argv item (``--message-file={prompt_file}`` works), in a single pass
over the profile's own text, so a substituted value is never looked at again: a
path that itself contains ``{workdir}``, ``$(...)`` or ``%s`` stays exactly as it
is. There is no ``str.format``, no ``eval`` and no shell.

Flags were checked against each tool's real CLI (see ``docs/agents.md``).

Pure: standard library and pydantic only, no subprocesses, no I/O.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.spec import (
    OUTPUT_FORMATS,
    PLACEHOLDERS,
    PROMPT_FILE,
    SESSION_ID,
    SUMMARY_FILE,
    WORKDIR,
    AgentProfile,
)
from dispatcher.errors import InvalidInput

COMMAND: Final = "command"
"""Name of the profile that runs a user-given argv (see :func:`command_profile`)."""

_PLACEHOLDER_RE: Final = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


def _known_names(overrides: Mapping[str, object]) -> list[str]:
    return sorted({*BUILTIN_PROFILES, *overrides, COMMAND})


def _parse_argv(name: str, value: object) -> tuple[str, ...]:
    """An override's argv: a list of strings, or one string split like a shell would.

    ``shlex.split`` only tokenizes the user's own configuration; nothing is
    expanded or executed.
    """
    if isinstance(value, str):
        try:
            args = shlex.split(value)
        except ValueError as exc:
            raise InvalidInput(f"agent {name!r}: cannot split command {value!r}: {exc}") from exc
    elif isinstance(value, Sequence) and all(isinstance(t, str) for t in value):
        args = [str(t) for t in value]
    else:
        raise InvalidInput(f"agent {name!r}: command must be a list of strings or a string")
    if not args or not args[0].strip():
        raise InvalidInput(f"agent {name!r}: command is empty")
    if any("\x00" in t for t in args):
        raise InvalidInput(f"agent {name!r}: command contains a NUL character")
    return tuple(args)


def _declared_output(argv: Sequence[str]) -> str | None:
    """The output format an argv asks for explicitly, if it says so.

    Recognizes ``--output-format X`` / ``--output-format=X`` (claude, gemini,
    goose) and codex's ``--json``. Anything else: ``None`` (not declared).
    """
    found: str | None = None
    for i, arg in enumerate(argv):
        value: str | None = None
        if arg == "--output-format" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--output-format="):
            value = arg.partition("=")[2]
        elif arg == "--json" and any(_program(t) == "codex" for t in argv[:i]):
            value = "stream-json"
        if value is not None and value in OUTPUT_FORMATS:
            found = value
    return found


def _program(arg: str) -> str:
    return arg.rpartition("/")[2]


def _has_prompt_file(argv: Sequence[str]) -> bool:
    return any(PROMPT_FILE in arg for arg in argv)


def _resume_of(base: AgentProfile, argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The resume argv of an override ``argv`` of ``base``, or None when none follows.

    A built-in resumes by inserting arguments into its argv: at the end (Claude's
    ``--resume {session_id}``) or before its last ones (Codex's ``resume {session_id}``
    before the final ``-``). The override gets the same arguments at the same place,
    if it ends the same way (an override that does not end in ``-`` cannot be known to
    take the subcommand there).
    """
    resume = base.resume_argv
    if resume is None:
        return None
    tail = 0  # the longest common end of argv and resume argv that leaves argv's start
    while (
        tail < len(base.argv)
        and tail < len(resume)
        and base.argv[len(base.argv) - 1 - tail] == resume[len(resume) - 1 - tail]
    ):
        tail += 1
    head = len(base.argv) - tail
    if resume[:head] != base.argv[:head] or len(resume) <= len(base.argv):
        return None
    inserted = resume[head : len(resume) - tail]
    suffix = base.argv[head:]
    if tuple(argv[len(argv) - len(suffix) :]) != suffix or len(argv) < len(suffix):
        return None
    return (*argv[: len(argv) - len(suffix)], *inserted, *suffix)


def _still_refuses(base: AgentProfile, argv: Sequence[str]) -> bool:
    """Whether an override ``argv`` of ``base`` keeps what makes the agent refuse root."""
    if any(a in base.root_refusal_unless_args for a in argv):
        return False
    return not base.root_refusal_args or any(a in base.root_refusal_args for a in argv)


def command_profile(argv: Sequence[str], *, name: str = COMMAND) -> AgentProfile:
    """The profile for a user-given argv (``dispatcher run --command``, ``agent: command``).

    The prompt arrives on stdin (and, as for every agent, its path in
    ``DISPATCHER_PROMPT_FILE``); placeholders in ``argv`` are honoured too.
    """
    if isinstance(argv, str):
        raise InvalidInput(f"agent {name!r}: command must be a list of arguments, not a string")
    args = _parse_argv(name, list(argv))
    return AgentProfile(
        name=name,
        argv=args,
        stdin_prompt=True,
        output=_declared_output(args) or "text",
        description="User-given command; prompt on stdin.",
    )


def resolve_profile(
    name: str, overrides: Mapping[str, Sequence[str] | str] | None = None
) -> AgentProfile:
    """The profile to run for agent ``name``.

    ``overrides`` (from settings or a repo's trigger file) maps names to an argv
    list or a command string. For a built-in name the override replaces only
    the argv; the built-in's ``stdin_prompt`` and ``output`` are kept, except
    that an override that drops ``{prompt_file}`` from a file-argument profile
    gets the prompt on stdin instead (so the prompt is never silently lost), and
    an explicit ``--output-format X`` (or codex ``--json``) in the override wins.
    A new name is a command profile: prompt on stdin, ``text`` output unless the
    argv declares another.

    Raises :class:`~dispatcher.errors.InvalidInput` for an unknown name, for
    ``command`` without an argv, and for a malformed override.
    """
    overrides = overrides or {}
    if name in overrides:
        argv = _parse_argv(name, overrides[name])
        base = BUILTIN_PROFILES.get(name)
        if base is None:
            profile = command_profile(argv, name=name)
            return profile.model_copy(update={"description": "Configured command."})
        stdin_prompt = base.stdin_prompt or not _has_prompt_file(argv)
        output = _declared_output(argv) or base.output
        # The agent is the same program: its flags still apply, and so does the way the
        # built-in resumes (see _resume_of).
        same_output = output == base.output
        resume_argv = _resume_of(base, argv)
        return AgentProfile(
            name=name,
            argv=argv,
            stdin_prompt=stdin_prompt,
            output=output,
            description=f"{base.description} (argv overridden)",
            reports=base.reports if same_output else None,
            resume_argv=resume_argv,
            system_prompt_flag=base.system_prompt_flag,
            budget_flag=base.budget_flag,
            reads_agents_md=base.reads_agents_md,
            env=base.env,
            reports_cost=base.reports_cost and same_output,
            root_refusal=base.root_refusal if _still_refuses(base, argv) else None,
            root_refusal_args=base.root_refusal_args,
            root_refusal_unless_args=base.root_refusal_unless_args,
            root_refusal_boxed_only=base.root_refusal_boxed_only,
            root_opt_in=base.root_opt_in,
            mcp=base.mcp,
        )
    if name in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[name]
    if name == COMMAND:
        raise InvalidInput(
            "agent 'command' needs a command to run: pass --command \"ARGV\" "
            "or configure it under agents"
        )
    raise InvalidInput(f"unknown agent {name!r}; known: {', '.join(_known_names(overrides))}")


def build_argv(
    profile: AgentProfile,
    *,
    prompt_file: Path,
    workdir: Path,
    resume_session: str | None = None,
    system_prompt: str | None = None,
    max_cost_usd: float | None = None,
    summary_file: Path | None = None,
) -> list[str]:
    """The argv to execute, with ``{prompt_file}``, ``{workdir}`` (and ``{session_id}``)
    filled in.

    One pass per argument over the profile's own text: only the exact
    placeholder strings are replaced, and replacement values are inserted
    verbatim and never rescanned. Pass absolute paths (the agent's cwd is the
    worktree). ``resume_session``: use ``resume_argv`` (the caller checks the
    profile has one). ``system_prompt`` and ``max_cost_usd`` are appended with
    the profile's flags as separate arguments (never through a shell).
    """
    values = {
        PROMPT_FILE: os.fspath(prompt_file),
        WORKDIR: os.fspath(workdir),
        SESSION_ID: resume_session or "",
        SUMMARY_FILE: os.fspath(summary_file) if summary_file else os.devnull,
    }
    for label, value in values.items():
        if "\x00" in value:
            raise InvalidInput(f"{label} contains a NUL character")
    template = profile.argv
    if resume_session is not None:
        if profile.resume_argv is None:
            raise InvalidInput(f"agent {profile.name!r} cannot resume a session")
        template = profile.resume_argv
    elif any(SESSION_ID in arg for arg in template):
        raise InvalidInput(f"agent {profile.name!r}: {SESSION_ID} is only for resume_argv")
    argv = [_PLACEHOLDER_RE.sub(lambda m: values[m.group(0)], arg) for arg in template]
    if system_prompt and profile.system_prompt_flag:
        argv += [profile.system_prompt_flag, system_prompt]
    if max_cost_usd is not None and profile.budget_flag:
        argv += [profile.budget_flag, f"{max_cost_usd:g}"]
    return argv

"""What an agent profile is: the argv the runner starts, how the prompt reaches it, and
what the agent can do (resume, report cost, take a system prompt).

A profile turns an agent name plus a prompt file into the exact argv the runner
starts in the job's worktree. The prompt never goes through a shell and never
becomes part of an argv as text: it is either a *file path* argument (the
``{prompt_file}`` placeholder) or the process's *stdin* (``stdin_prompt``; the
runner opens the prompt file as the child's stdin). Whatever the profile, the
runner also puts the path in ``DISPATCHER_PROMPT_FILE``.

Placeholders are the literal strings below; :func:`dispatcher.agents.profiles.build_argv`
replaces them in one pass over the profile's own text.

Pure: standard library and pydantic only.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, field_validator

PROMPT_FILE: Final = "{prompt_file}"
"""Placeholder replaced by the absolute path of the job's prompt file."""

WORKDIR: Final = "{workdir}"
"""Placeholder replaced by the absolute path of the job's worktree."""

SUMMARY_FILE: Final = "{summary_file}"
"""Placeholder replaced by a file in the job's directory where the agent may write its
final message (Codex's ``-o``); when it is there, it is the job's summary."""

SESSION_ID: Final = "{session_id}"
"""Placeholder (in ``resume_argv`` only) replaced by the session a follow-up resumes."""

PLACEHOLDERS: Final = (PROMPT_FILE, WORKDIR, SESSION_ID, SUMMARY_FILE)

OUTPUT_FORMATS: Final = frozenset({"stream-json", "json", "text"})

MCP_WAYS: Final = frozenset({"claude", "codex", "gemini", "qwen", "opencode", "cline", "copilot"})
"""The ways :mod:`dispatcher.agents.mcp` gives an agent the MCP server (its ``WAYS``)."""


class AgentProfile(BaseModel):
    """How to run one agent. Immutable; compare and hash by value.

    Stored with each job (``Job.profile``) when it is submitted: a field added
    here needs a default, so that the profiles of older jobs still load.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    argv: tuple[str, ...]
    """Program and arguments; may contain ``{prompt_file}`` and ``{workdir}``."""
    stdin_prompt: bool
    """True: the runner connects the prompt file to the process's stdin."""
    output: str = "text"
    """What the agent prints on stdout: ``stream-json`` (one JSON event per line),
    ``json`` (one document at the end) or ``text``."""
    description: str = ""
    reports: str | None = None
    """Whose output this is (a built-in agent's name): read by that agent's parser
    (:mod:`dispatcher.agents.catalog`) for the summary, cost, tokens, turns, session
    and the reason it failed. None: plain text (the log's tail)."""
    resume_argv: tuple[str, ...] | None = None
    """The argv that continues session ``{session_id}`` (follow-ups); None: no resume."""
    system_prompt_flag: str | None = None
    """A flag that appends text to the agent's system prompt: the repo's conventions go
    there instead of into the prompt file."""
    budget_flag: str | None = None
    """A flag that caps the agent's spend in USD (the job's max-cost-usd)."""
    reads_agents_md: bool = False
    """The agent reads the repo's AGENTS.md itself; the daemon does not repeat it."""
    env: tuple[tuple[str, str], ...] = ()
    """Variables set in the agent's environment (after the daemon's own), for settings
    that have no flag. Never secrets: a profile is stored with its job."""
    reports_cost: bool = False
    """The agent's structured output carries its cost in USD (budgets see it)."""
    root_refusal: str | None = None
    """Why the agent refuses to start with this argv when the daemon runs as root, in
    one line that says what to do; None: it runs as root."""
    root_refusal_args: tuple[str, ...] = ()
    """The arguments that make the agent refuse root (any one of them): an override of
    the argv without any of them has no ``root_refusal``. Empty: any argv refuses."""
    root_refusal_unless_args: tuple[str, ...] = ()
    """Arguments that, any one of them in an override's argv, lift ``root_refusal``
    (Codex's ``danger-full-access``: every other sandbox mode of Codex's fails as root)."""
    root_refusal_boxed_only: bool = False
    """The refusal applies only when the daemon boxes its agents (bubblewrap): Codex's own
    sandbox cannot start nested in that box as root, and works without it."""
    mcp: str | None = None
    """How the agent is given the daemon's MCP server: one of the ways of
    :mod:`dispatcher.agents.mcp` (``claude``, ``codex``, ...). None: no MCP support;
    its messages come in its prompt instead (docs/mcp-agents.md)."""
    root_opt_in: tuple[str, ...] = ()
    """The agent's own variables that let it run as root anyway, any one of them:
    ``NAME=VALUE`` (that value) or ``NAME`` (any value but empty); Claude Code's
    ``IS_SANDBOX=1`` and ``CLAUDE_CODE_BUBBLEWRAP``. Set in the daemon's environment (by
    the user: the daemon never sets them), the agent inherits them and ``root_refusal``
    does not apply."""

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("agent name must not be empty")
        return value

    @field_validator("argv")
    @classmethod
    def _argv_has_program(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not value[0].strip():
            raise ValueError("argv must start with a program")
        if any("\x00" in arg for arg in value):
            raise ValueError("argv must not contain NUL characters")
        return value

    @field_validator("mcp")
    @classmethod
    def _known_mcp(cls, value: str | None) -> str | None:
        if value is not None and value not in MCP_WAYS:
            raise ValueError(f"mcp must be one of {', '.join(sorted(MCP_WAYS))} or null")
        return value

    @field_validator("output")
    @classmethod
    def _known_output(cls, value: str) -> str:
        if value not in OUTPUT_FORMATS:
            raise ValueError(f"output must be one of {', '.join(sorted(OUTPUT_FORMATS))}")
        return value

    @property
    def program(self) -> str:
        return self.argv[0]

    @property
    def can_resume(self) -> bool:
        return self.resume_argv is not None


def builtin(
    name: str,
    argv: tuple[str, ...] | list[str],
    *,
    resume_suffix: tuple[str, ...] = (),
    **fields: object,
) -> AgentProfile:
    """A built-in profile; ``resume_suffix``: arguments that, appended to ``argv``,
    resume session ``{session_id}``."""
    if resume_suffix:
        fields["resume_argv"] = (*argv, *resume_suffix)
    return AgentProfile.model_validate({"name": name, "argv": tuple(argv), **fields})

"""Built-in agent profiles, overrides and placeholder substitution (pure, no processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.profiles import (
    build_argv,
    command_profile,
    resolve_profile,
)
from dispatcher.agents.spec import AgentProfile
from dispatcher.errors import InvalidInput

PROMPT = Path("/state/jobs/42/prompt.md")
WORKDIR = Path("/state/worktrees/42-fix-issue")


# name -> (exact argv after substitution, prompt on stdin, output format)
EXPECTED: dict[str, tuple[list[str], bool, str]] = {
    "claude": (
        [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "bypassPermissions",
        ],
        True,
        "stream-json",
    ),
    "codex": (
        [
            "codex",
            "exec",
            "--json",
            "--sandbox",
            "workspace-write",
            "--disable",
            "unbounded_connection_retries",
            "-o",
            os.devnull,
            "-",
        ],
        True,
        "stream-json",
    ),
    "aider": (
        [
            "aider",
            f"--message-file={PROMPT}",
            "--model",
            "sonnet",
            "--yes-always",
            "--no-auto-commits",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-pretty",
            "--no-fancy-input",
            "--no-stream",
            "--no-analytics",
            "--disable-playwright",
            "--no-suggest-shell-commands",
        ],
        False,
        "text",
    ),
    "gemini": (
        ["gemini", "--skip-trust", "--output-format", "stream-json", "--approval-mode", "yolo"],
        True,
        "stream-json",
    ),
    "qwen": (
        ["qwen", "--output-format", "stream-json", "--approval-mode", "yolo"],
        True,
        "stream-json",
    ),
    "goose": (
        ["goose", "run", "--instructions", "-", "--output-format", "stream-json"],
        True,
        "stream-json",
    ),
    "opencode": (
        [
            "opencode",
            "run",
            "--format",
            "json",
            "--dir",
            str(WORKDIR),
            "--auto",
            "--print-logs",
            "--log-level",
            "ERROR",
        ],
        True,
        "stream-json",
    ),
    "copilot": (
        [
            "copilot",
            "--output-format",
            "json",
            "--allow-all-tools",
            "--no-ask-user",
            "--no-auto-update",
            "--disable-client-telemetry",
            "--stream",
            "off",
        ],
        True,
        "stream-json",
    ),
    "cline": (
        ["cline", "--json", "--auto-approve", "true", "Do the task described below."],
        True,
        "stream-json",
    ),
}


def test_builtin_names() -> None:
    assert set(BUILTIN_PROFILES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_argv(name: str) -> None:
    argv, stdin_prompt, output = EXPECTED[name]
    profile = resolve_profile(name)
    assert profile is BUILTIN_PROFILES[name]
    assert profile.name == name
    assert build_argv(profile, prompt_file=PROMPT, workdir=WORKDIR) == argv
    assert profile.stdin_prompt is stdin_prompt
    assert profile.output == output
    assert profile.description


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prompt_is_delivered_exactly_one_way(name: str) -> None:
    """A profile either reads stdin or names the prompt file, never neither."""
    profile = BUILTIN_PROFILES[name]
    names_file = any("{prompt_file}" in arg for arg in profile.argv)
    assert profile.stdin_prompt != names_file


def test_aider_never_commits_itself() -> None:
    assert "--no-auto-commits" in BUILTIN_PROFILES["aider"].argv


def test_aider_names_its_model_and_a_git_identity() -> None:
    """Without a model (and no key) aider waits five minutes for a browser login; without
    a git identity it writes one into the read-only .git/config and crashes."""
    profile = BUILTIN_PROFILES["aider"]
    assert "--model" in profile.argv
    env = dict(profile.env)
    assert env["BROWSER"] == "true"
    count = int(env["GIT_CONFIG_COUNT"])
    keys = {env[f"GIT_CONFIG_KEY_{i}"] for i in range(count)}
    assert keys == {"user.name", "user.email"}
    assert profile.reports == "aider" and profile.reports_cost


def test_builtin_profiles_are_read_only() -> None:
    with pytest.raises(TypeError):
        BUILTIN_PROFILES["claude"] = BUILTIN_PROFILES["codex"]  # type: ignore[index]
    with pytest.raises(ValidationError):
        BUILTIN_PROFILES["claude"].argv = ("rm",)  # type: ignore[misc]


# --- placeholder substitution ---------------------------------------------------------


def _profile(*argv: str) -> AgentProfile:
    return AgentProfile(name="t", argv=argv, stdin_prompt=False)


def test_placeholders_whole_and_inside_an_argument() -> None:
    profile = _profile(
        "tool",
        "{prompt_file}",
        "--message-file={prompt_file}",
        "--cwd",
        "{workdir}",
        "{workdir}/sub:{prompt_file}",
    )
    assert build_argv(profile, prompt_file=PROMPT, workdir=WORKDIR) == [
        "tool",
        str(PROMPT),
        f"--message-file={PROMPT}",
        "--cwd",
        str(WORKDIR),
        f"{WORKDIR}/sub:{PROMPT}",
    ]


@pytest.mark.parametrize(
    "hostile",
    [
        "/tmp/$(rm -rf ~)/prompt.md",
        "/tmp/`id`; rm -rf /; echo/prompt.md",
        "/tmp/{workdir}/prompt.md",
        "/tmp/{prompt_file}/prompt.md",
        "/tmp/{0}{}{__class__}%s%(x)s/prompt.md",
        "/tmp/a b\t'c\"/\\1\\g<0>/prompt.md",
        "/tmp/-rf --yes/prompt.md",
    ],
)
def test_substituted_values_are_literal(hostile: str) -> None:
    profile = _profile("tool", "{prompt_file}", "--f={prompt_file}", "{workdir}")
    argv = build_argv(profile, prompt_file=Path(hostile), workdir=Path(hostile + ".wt"))
    assert argv == ["tool", hostile, f"--f={hostile}", hostile + ".wt"]


def test_workdir_value_is_not_resubstituted() -> None:
    """Values are inserted once: a workdir path containing {prompt_file} stays as is."""
    profile = _profile("tool", "{workdir}|{prompt_file}")
    argv = build_argv(profile, prompt_file=Path("/p/{workdir}"), workdir=Path("/w/{prompt_file}"))
    assert argv == ["tool", "/w/{prompt_file}|/p/{workdir}"]


def test_only_exact_placeholders_are_replaced() -> None:
    profile = _profile(
        "tool", "{prompt_file", "prompt_file}", "{PROMPT_FILE}", "{{workdir}}", "{x}"
    )
    argv = build_argv(profile, prompt_file=PROMPT, workdir=WORKDIR)
    assert argv == [
        "tool",
        "{prompt_file",
        "prompt_file}",
        "{PROMPT_FILE}",
        f"{{{WORKDIR}}}",
        "{x}",
    ]


def test_build_argv_does_not_mutate_profile() -> None:
    profile = _profile("tool", "{prompt_file}")
    build_argv(profile, prompt_file=PROMPT, workdir=WORKDIR)
    assert profile.argv == ("tool", "{prompt_file}")


def test_nul_in_path_is_rejected() -> None:
    with pytest.raises(InvalidInput):
        build_argv(_profile("tool", "{prompt_file}"), prompt_file=Path("/a\x00b"), workdir=WORKDIR)


# --- overrides ------------------------------------------------------------------------


def test_override_builtin_by_list_keeps_delivery_and_output() -> None:
    profile = resolve_profile("claude", {"claude": ["claude", "-p", "--model", "opus"]})
    assert profile.name == "claude"
    assert profile.argv == ("claude", "-p", "--model", "opus")
    assert profile.stdin_prompt is True
    assert profile.output == "stream-json"


def test_override_builtin_by_string_is_split_not_shelled() -> None:
    profile = resolve_profile(
        "aider",
        {"aider": "aider --message-file {prompt_file} --model 'gpt 4' $HOME;x"},
    )
    assert profile.argv == (
        "aider",
        "--message-file",
        "{prompt_file}",
        "--model",
        "gpt 4",
        "$HOME;x",
    )
    assert profile.stdin_prompt is False
    assert profile.output == "text"
    assert build_argv(profile, prompt_file=PROMPT, workdir=WORKDIR)[2] == str(PROMPT)


def test_override_that_drops_prompt_file_gets_stdin() -> None:
    profile = resolve_profile("goose", {"goose": ["goose", "run", "-i", "-"]})
    assert profile.stdin_prompt is True


def test_override_with_explicit_output_format_wins() -> None:
    profile = resolve_profile("claude", {"claude": "claude -p --output-format json"})
    assert profile.output == "json"
    profile = resolve_profile("gemini", {"gemini": ["gemini", "--output-format=text"]})
    assert profile.output == "text"


def test_override_new_name_is_a_stdin_text_profile() -> None:
    overrides = {"lint-bot": "./scripts/lint-agent.sh --fix"}
    profile = resolve_profile("lint-bot", overrides)
    assert profile.name == "lint-bot"
    assert profile.argv == ("./scripts/lint-agent.sh", "--fix")
    assert profile.stdin_prompt is True
    assert profile.output == "text"


def test_override_of_one_name_leaves_others_builtin() -> None:
    overrides = {"claude": ["my-claude"]}
    assert resolve_profile("codex", overrides) is BUILTIN_PROFILES["codex"]


@pytest.mark.parametrize(
    "bad",
    ["", "   ", [], [""], "unbalanced 'quote", ["ok", 3], b"claude", 42, ["a\x00b"]],
)
def test_bad_override_is_invalid_input(bad: object) -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_profile("claude", {"claude": bad})  # type: ignore[dict-item]
    assert "claude" in info.value.message


# --- errors ---------------------------------------------------------------------------


def test_unknown_agent_message_lists_known_names() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_profile("gpt-engineer")
    assert info.value.message == (
        "unknown agent 'gpt-engineer'; known: aider, claude, cline, codex, command, "
        "copilot, gemini, goose, opencode, qwen"
    )


def test_unknown_agent_message_includes_configured_names() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_profile("nope", {"lint-bot": ["lint"]})
    assert info.value.message.startswith("unknown agent 'nope'; known: ")
    assert "lint-bot" in info.value.message


def test_command_without_argv_is_invalid() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_profile("command")
    assert "command" in info.value.message


# --- command profile ------------------------------------------------------------------


def test_command_profile() -> None:
    profile = command_profile(["python", "-m", "my_agent", "--in", "{prompt_file}"])
    assert profile.name == "command"
    assert profile.stdin_prompt is True
    assert profile.output == "text"
    assert build_argv(profile, prompt_file=PROMPT, workdir=WORKDIR) == [
        "python",
        "-m",
        "my_agent",
        "--in",
        str(PROMPT),
    ]


@pytest.mark.parametrize("bad", [[], [""], ("  ",)])
def test_command_profile_empty_is_invalid(bad: list[str]) -> None:
    with pytest.raises(InvalidInput):
        command_profile(bad)


def test_command_profile_rejects_a_bare_string() -> None:
    with pytest.raises(InvalidInput):
        command_profile("echo hi")


def test_profile_validation() -> None:
    with pytest.raises(ValidationError):
        AgentProfile(name="x", argv=(), stdin_prompt=True)
    with pytest.raises(ValidationError):
        AgentProfile(name="x", argv=("a",), stdin_prompt=True, output="xml")
    with pytest.raises(ValidationError):
        AgentProfile(name="", argv=("a",), stdin_prompt=True)


def test_an_overridden_argv_resumes_the_way_its_builtin_does() -> None:
    claude = resolve_profile("claude", {"claude": "claude -p --model opus"})
    argv = build_argv(claude, prompt_file=PROMPT, workdir=WORKDIR, resume_session="s-1")
    assert argv == ["claude", "-p", "--model", "opus", "--resume", "s-1"]
    built_in = build_argv(
        BUILTIN_PROFILES["claude"], prompt_file=PROMPT, workdir=WORKDIR, resume_session="s-1"
    )
    assert built_in[-2:] == ["--resume", "s-1"]
    # Codex resumes with a subcommand before its final "-": an override that ends in "-"
    # gets it there (the one the root refusal names, say); one that does not cannot resume.
    codex = resolve_profile("codex", {"codex": ["codex", "exec", "--json", "-s", "x", "-"]})
    resumed = build_argv(codex, prompt_file=PROMPT, workdir=WORKDIR, resume_session="t-1")
    assert resumed == ["codex", "exec", "--json", "-s", "x", "resume", "t-1", "-"]
    no_dash = resolve_profile("codex", {"codex": ["codex", "exec", "--json"]})
    assert no_dash.resume_argv is None
    with pytest.raises(InvalidInput, match="cannot resume"):
        build_argv(no_dash, prompt_file=PROMPT, workdir=WORKDIR, resume_session="t-1")
    codex_argv = build_argv(
        BUILTIN_PROFILES["codex"], prompt_file=PROMPT, workdir=WORKDIR, resume_session="t-1"
    )
    assert codex_argv[-3:] == ["resume", "t-1", "-"]
    for name, profile in BUILTIN_PROFILES.items():  # the same argv: the same resume
        same = resolve_profile(name, {name: list(profile.argv)})
        assert same.resume_argv == profile.resume_argv, name


def test_copilot_and_cline_resume_as_their_clis_do() -> None:
    """copilot resumes with ``--resume=<id>``; cline's ``--id`` opens the interactive TUI
    only, so it cannot resume a job."""
    copilot = BUILTIN_PROFILES["copilot"]
    resumed = build_argv(copilot, prompt_file=PROMPT, workdir=WORKDIR, resume_session="s-1")
    assert resumed == [*EXPECTED["copilot"][0], "--resume=s-1"]
    assert not BUILTIN_PROFILES["cline"].can_resume
    assert dict(copilot.env) == {}
    assert dict(BUILTIN_PROFILES["cline"].env) == {
        "CLINE_SESSION_BACKEND_MODE": "local",
        "CLINE_NO_AUTO_UPDATE": "1",
    }


# --- goose and opencode: resume and system prompt, as checked against the real CLIs -------------


def test_goose_resumes_by_session_id_and_takes_a_system_prompt() -> None:
    profile = BUILTIN_PROFILES["goose"]
    argv = build_argv(
        profile, prompt_file=PROMPT, workdir=WORKDIR, resume_session="20261202_1", system_prompt="S"
    )
    assert argv == [
        *EXPECTED["goose"][0],
        "--resume",
        "--session-id",
        "20261202_1",
        "--system",
        "S",
    ]
    assert "--no-session" not in argv  # it would keep nothing to resume
    assert dict(profile.env)["GOOSE_MODE"] == "auto"
    assert profile.budget_flag is None and not profile.reports_cost


def test_opencode_resumes_by_session_and_reports_cost() -> None:
    profile = BUILTIN_PROFILES["opencode"]
    argv = build_argv(profile, prompt_file=PROMPT, workdir=WORKDIR, resume_session="ses_1")
    assert argv == [*EXPECTED["opencode"][0], "--session", "ses_1"]
    assert profile.reports_cost and profile.reads_agents_md
    assert profile.system_prompt_flag is None and profile.budget_flag is None


def test_a_codex_override_is_refused_as_root_unless_it_turns_codexs_sandbox_off() -> None:
    """Codex's read-only default needs its own bwrap as much as workspace-write does."""
    refusal = BUILTIN_PROFILES["codex"].root_refusal
    assert refusal is not None
    for argv, refuses in [
        ("codex exec --json -m o3 -", True),
        ("codex exec --json --sandbox read-only -", True),
        ("codex exec --json --sandbox danger-full-access -", False),
        ("codex exec --json --sandbox=danger-full-access -", False),
        ("codex exec --json --dangerously-bypass-approvals-and-sandbox -", False),
    ]:
        profile = resolve_profile("codex", {"codex": argv})
        assert profile.root_refusal == (refusal if refuses else None), argv
        assert profile.root_refusal_boxed_only

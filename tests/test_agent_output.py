"""dispatcher.agents.output: reading an agent's report back from its job log.

Most tests run the fake agents of tests/fakeagents with the built-in profiles'
argv, log their output between `[dispatcher] ...` lines the way the runner
does, and parse the log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.output import (
    SUMMARY_MAX,
    TEXT_TAIL_MAX,
    AgentReport,
    parse_lines,
    parse_log,
    session_in_head,
)
from dispatcher.agents.profiles import build_argv

FAKES = Path(__file__).resolve().parent / "fakeagents"
AGENTS = ("claude", "codex", "gemini", "goose", "qwen", "opencode")
PROMPT = "Add a CHANGELOG entry for the new --resume flag.\nKeep it to one line: ünïcode ok."
SUMMARY = "Added the CHANGELOG entry; nothing else changed."
RESUME_ID = "0199a213-81c0-7800-8aa1-bbab2a035a53"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# What each fake reports on success (besides summary and session id), per its fixtures.
EXPECTED = {
    "claude": AgentReport(
        cost_usd=0.0123,
        input_tokens=12 + 100 + 2000,
        output_tokens=345,
        turns=3,
        model="claude-sonnet-4-5-20250929",
    ),
    "codex": AgentReport(input_tokens=24763, output_tokens=122, turns=1),
    "gemini": AgentReport(input_tokens=1400, output_tokens=130, model="gemini-2.5-pro"),
    "goose": AgentReport(input_tokens=4000, output_tokens=321, model="gpt-4o"),
    "qwen": AgentReport(input_tokens=1900, output_tokens=95, turns=2, model="qwen3-coder-plus"),
    "opencode": AgentReport(
        cost_usd=0.0123,
        input_tokens=100 + 1000 + 200 + 50 + 1300,
        output_tokens=20 + 5 + 30,
        turns=2,
    ),
}
ERROR_EXIT = {"claude": 0, "codex": 1, "gemini": 1, "goose": 0, "qwen": 1, "opencode": 1}
SESSION_FORMAT = {  # what each agent's session ids look like
    "claude": UUID_RE,
    "codex": UUID_RE,
    "gemini": UUID_RE,
    "goose": re.compile(r"\d{8}_\d+"),
    "qwen": UUID_RE,
    "opencode": re.compile(r"ses_[0-9a-f]{26}"),
}


@dataclass(frozen=True)
class Run:
    code: int
    log: Path
    workdir: Path
    argv: list[str]

    def args(self) -> dict[str, object]:
        data = json.loads((self.workdir / "AGENT_ARGS.json").read_text())
        assert isinstance(data, dict)
        return data

    def notes(self) -> str:
        return (self.workdir / "AGENT_NOTES.md").read_text()

    def report(self, kind: str, **kwargs: int) -> AgentReport:
        return parse_log(kind, self.log, **kwargs)


def agent_argv(agent: str, prompt_file: Path, workdir: Path) -> list[str]:
    argv = build_argv(BUILTIN_PROFILES[agent], prompt_file=prompt_file, workdir=workdir)
    argv[0] = str(FAKES / agent)
    return argv


def run_agent(
    tmp_path: Path,
    agent: str,
    *,
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    extra_args: Sequence[str] = (),
    log: Path | None = None,
) -> Run:
    """Run a fake agent like the runner does: cwd the worktree, output appended to the log."""
    workdir = tmp_path / "worktree"
    workdir.mkdir(exist_ok=True)
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(PROMPT)
    command = list(argv) if argv is not None else agent_argv(agent, prompt_file, workdir)
    command += extra_args
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_AGENT_")}
    child_env.update({"FAKE_AGENT_SUMMARY": SUMMARY, **(env or {})})
    log = log or tmp_path / "agent.log"
    stdin_prompt = BUILTIN_PROFILES[agent].stdin_prompt
    with open(log, "ab") as fh, open(prompt_file, "rb") as prompt:
        fh.write(f"[dispatcher] starting {agent}\n".encode())
        fh.flush()
        proc = subprocess.run(
            command,
            cwd=workdir,
            stdin=prompt if stdin_prompt else subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env,
            timeout=30,
            check=False,
        )
        fh.write(f"[dispatcher] agent exited with code {proc.returncode}\n".encode())
    return Run(proc.returncode, log, workdir, command)


def has_session(agent: str, value: str | None) -> bool:
    return value is not None and SESSION_FORMAT[agent].fullmatch(value) is not None


# --- real runs of the fake agents ----------------------------------------------------------------


@pytest.mark.parametrize("agent", AGENTS)
def test_success_run_reports_summary_usage_and_session(tmp_path: Path, agent: str) -> None:
    run = run_agent(tmp_path, agent)
    assert run.code == 0
    report = run.report(agent)
    assert report.summary == SUMMARY
    assert not report.is_error
    assert report.error is None
    assert has_session(agent, report.session_id)
    assert replace(report, summary=None, session_id=None) == EXPECTED[agent]
    # The fake got the profile's argv and the prompt, and left a change behind.
    args = run.args()
    assert args["argv"] == run.argv
    assert args["prompt"] == PROMPT
    assert PROMPT in run.notes()
    assert "resumed" not in run.notes()


@pytest.mark.parametrize("agent", AGENTS)
def test_error_run_is_an_error_whatever_the_exit_code(tmp_path: Path, agent: str) -> None:
    run = run_agent(tmp_path, agent, env={"FAKE_AGENT_ERROR": "1"})
    assert run.code == ERROR_EXIT[agent]
    report = run.report(agent)
    assert report.is_error
    assert report.error is not None
    assert "simulated failure" in report.error
    assert "\n" not in report.error
    assert has_session(agent, report.session_id)
    if agent == "claude":  # an error result still carries the cost
        assert report.cost_usd == pytest.approx(0.0123)
        assert report.turns == 3
    if agent == "codex":  # a failed turn is a turn, but reports no usage
        assert (report.turns, report.input_tokens) == (1, None)


@pytest.mark.parametrize("agent", AGENTS)
def test_garbage_between_events_changes_nothing(tmp_path: Path, agent: str) -> None:
    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    clean = run_agent(tmp_path / "clean", agent)
    noisy = run_agent(tmp_path / "noisy", agent, env={"FAKE_AGENT_GARBAGE": "1"})
    text = noisy.log.read_text()
    assert "warning: this line is not JSON" in text
    assert '"broken line, cut o' in text
    assert "stderr: also not JSON" in text
    clean_report, noisy_report = clean.report(agent), noisy.report(agent)
    assert noisy_report.summary == SUMMARY
    assert replace(noisy_report, session_id=None) == replace(clean_report, session_id=None)
    assert has_session(agent, noisy_report.session_id)


@pytest.mark.parametrize(
    ("cost", "budget", "is_error"), [("2.5", None, False), ("0.5", "0.25", True)]
)
def test_claude_cost_budget_and_system_prompt(
    tmp_path: Path, cost: str, budget: str | None, is_error: bool
) -> None:
    extra = ["--append-system-prompt", "Work only in this worktree."]
    if budget is not None:
        extra += ["--max-budget-usd", budget]
    run = run_agent(tmp_path, "claude", env={"FAKE_AGENT_COST": cost}, extra_args=extra)
    assert run.code == 0
    report = run.report("claude")
    assert report.cost_usd == pytest.approx(float(cost))
    assert report.is_error is is_error
    args = run.args()
    assert args["append_system_prompt"] == "Work only in this worktree."
    assert args["max_budget_usd"] == (None if budget is None else float(budget))
    if is_error:
        assert report.error is not None
        assert "budget" in report.error


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini", "qwen", "goose", "opencode"])
def test_resume_keeps_the_session_id(tmp_path: Path, agent: str) -> None:
    prompt_file, workdir = tmp_path / "prompt.txt", tmp_path / "worktree"
    argv = agent_argv(agent, prompt_file, workdir)
    if agent in ("claude", "gemini", "qwen", "goose", "opencode"):
        profile = BUILTIN_PROFILES[agent]
        resume = build_argv(
            profile, prompt_file=prompt_file, workdir=workdir, resume_session=RESUME_ID
        )
        argv += resume[len(argv) :]
    else:  # codex exec [OPTIONS] resume <SESSION_ID> [PROMPT]; `-` reads the prompt from stdin
        assert argv[-1] == "-"
        argv[-1:] = ["resume", RESUME_ID, "-"]
    run = run_agent(tmp_path, agent, argv=argv)
    assert run.code == 0
    report = run.report(agent)
    assert report.session_id == RESUME_ID
    assert report.summary == SUMMARY
    assert f"resumed {RESUME_ID}" in run.notes()
    assert run.args()["resumed"] == RESUME_ID
    assert run.args()["prompt"] == PROMPT


@pytest.mark.parametrize("agent", AGENTS)
def test_long_summary_is_cut(tmp_path: Path, agent: str) -> None:
    long_summary = "word " * 1500
    run = run_agent(tmp_path, agent, env={"FAKE_AGENT_SUMMARY": long_summary})
    summary = run.report(agent).summary
    assert summary is not None
    assert len(summary) == SUMMARY_MAX
    assert summary.startswith("word word")
    assert summary.endswith("…")


@pytest.mark.parametrize("agent", AGENTS)
def test_truncated_last_line_is_skipped(tmp_path: Path, agent: str) -> None:
    """The agent was killed while printing its final event: what came before still counts."""
    run = run_agent(tmp_path, agent)
    lines = run.log.read_text().splitlines()
    assert lines[-1].startswith("[dispatcher] agent exited")
    last = lines[-2]
    assert json.loads(last)["type"] in ("result", "turn.completed", "complete", "step_finish")
    run.log.write_text("\n".join([*lines[:-2], last[: len(last) // 2]]))
    report = run.report(agent)
    assert report.summary == SUMMARY
    assert not report.is_error
    if agent == "opencode":  # usage comes per step: the first step's still counts
        assert (report.cost_usd, report.turns) == (pytest.approx(0.01), 1)
    else:
        assert report.cost_usd is None
        assert report.input_tokens is None
        assert report.output_tokens is None
        assert report.turns is None
    assert has_session(agent, report.session_id)


@pytest.mark.parametrize("agent", AGENTS)
def test_huge_log_only_the_tail_is_read(tmp_path: Path, agent: str) -> None:
    """An earlier failed run and megabytes of output, then the run that counts."""
    log = tmp_path / "agent.log"
    old = run_agent(tmp_path, agent, env={"FAKE_AGENT_ERROR": "1"}, log=log)
    assert old.report(agent).is_error
    with open(log, "a") as fh:
        for i in range(40_000):
            fh.write(f"progress line {i:06d} " + "x" * 60 + "\n")
    run_agent(tmp_path, agent, log=log)
    assert log.stat().st_size > 2 * 2**20
    tail = parse_log(agent, log, max_bytes=2**20)
    assert tail.summary == SUMMARY
    assert not tail.is_error
    assert replace(tail, summary=None, session_id=None) == EXPECTED[agent]
    assert not parse_log(agent, log).is_error  # the last run's outcome wins


@pytest.mark.parametrize("kind", ["codex", "gemini"])
def test_session_printed_first_is_found_in_the_head_of_a_long_log(
    tmp_path: Path, kind: str
) -> None:
    first = (
        {"type": "thread.started", "thread_id": "t-123"}
        if kind == "codex"
        else {"type": "init", "timestamp": "2026-01-01T00:00:00Z", "session_id": "t-123"}
    )
    log = tmp_path / "agent.log"
    with open(log, "w") as fh:
        fh.write(json.dumps(first) + "\n")
        for i in range(30_000):
            fh.write(f"progress line {i:06d} " + "x" * 60 + "\n")
    assert parse_log(kind, log, max_bytes=2**20).session_id is None  # the tail misses it
    assert session_in_head(kind, log) == "t-123"
    # Only whole lines of the head count: a cut-off first event is not read.
    assert session_in_head(kind, log, max_bytes=20) is None
    assert session_in_head(kind, tmp_path / "missing.log") is None
    assert session_in_head("claude", log) is None  # not in claude's format


@pytest.mark.parametrize("agent", [*AGENTS, "aider"])
@pytest.mark.parametrize("name", ["missing.log", "no-such-dir/agent.log"])
def test_missing_log_gives_an_empty_report(tmp_path: Path, agent: str, name: str) -> None:
    assert parse_log(agent, tmp_path / name) == AgentReport()


def test_log_that_is_a_file_inside_a_file_is_missing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert parse_log("claude", tmp_path / "file" / "agent.log") == AgentReport()


# --- parse_log: reading the tail ----------------------------------------------------------------


def codex_log(tmp_path: Path, filler_lines: int) -> Path:
    log = tmp_path / "agent.log"
    with open(log, "w") as fh:
        fh.write('{"type":"thread.started","thread_id":"head-thread"}\n')
        for i in range(filler_lines):
            fh.write(f"cargo: compiling crate {i}\n")
        fh.write('{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"ok"}}\n')
        fh.write('{"type":"turn.completed","usage":{"input_tokens":10,"output_tokens":20}}\n')
    return log


def test_parse_log_reads_at_most_max_bytes(tmp_path: Path) -> None:
    log = codex_log(tmp_path, 100_000)
    size = log.stat().st_size
    full = parse_log("codex", log)
    assert full == AgentReport(
        summary="ok", input_tokens=10, output_tokens=20, turns=1, session_id="head-thread"
    )
    assert parse_log("codex", log, max_bytes=size) == full
    # One byte less and the first line is partial, so it is dropped: no session id.
    assert parse_log("codex", log, max_bytes=size - 1) == replace(full, session_id=None)
    assert parse_log("codex", log, max_bytes=2**16) == replace(full, session_id=None)


@pytest.mark.parametrize(("cut_inside", "session"), [(True, None), (False, "whole")])
def test_parse_log_drops_only_a_partial_first_line(
    tmp_path: Path, cut_inside: bool, session: str | None
) -> None:
    """A line cut by the byte limit must not be read from the middle, a whole one must be read."""
    event = '{"type":"thread.started","thread_id":"whole"}'
    line = ("text before " + event) if cut_inside else event
    rest = '{"type":"turn.completed","usage":{"input_tokens":1,"output_tokens":2}}\n'
    log = tmp_path / "agent.log"
    log.write_text("earlier output\n" + line + "\n" + rest)
    # Start the read exactly where the JSON object begins.
    max_bytes = len(event) + 1 + len(rest)
    report = parse_log("codex", log, max_bytes=max_bytes)
    assert report.session_id == session
    assert report.input_tokens == 1


def test_parse_log_rejects_a_useless_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        parse_log("codex", tmp_path / "agent.log", max_bytes=0)


def test_parse_log_survives_bad_bytes_and_keeps_unicode_line_separators(tmp_path: Path) -> None:
    result = {"type": "result", "subtype": "success", "is_error": False, "result": "a\u2028b ok"}
    log = tmp_path / "agent.log"
    log.write_bytes(
        b"\xff\xfe not utf-8 \xc3\n"
        + json.dumps(result, ensure_ascii=False).encode()
        + b"\n[dispatcher] agent exited with code 0\n"
    )
    assert parse_log("claude", log).summary == "a\u2028b ok"


# --- parse_lines: formats and their edge cases ---------------------------------------------------


def dumps(*events: object) -> list[str]:
    return [json.dumps(e) for e in events]


@pytest.mark.parametrize(
    ("kind", "lines"),
    [
        (
            "claude",
            [
                '{"type":"system","subtype":"init","session_id":42,"model":["opus"]}',
                '{"type":"assistant","message":"not an object"}',
                '{"type":"assistant","message":{"content":"not a list","model":7}}',
                '{"type":"assistant","message":{"content":[{"type":"text","text":5}, "x"]}}',
                '{"type":"result","subtype":7,"is_error":"yes","result":123,'
                '"total_cost_usd":"0.5","num_turns":-3,"session_id":{},'
                '"usage":{"input_tokens":"10","output_tokens":1.5,"cache_read_input_tokens":true},'
                '"errors":"not a list"}',
            ],
        ),
        (
            "claude",
            ['{"type":"result","total_cost_usd":NaN,"num_turns":Infinity,"usage":[1,2]}'],
        ),
        (
            "codex",
            [
                '{"type":"thread.started","thread_id":5}',
                '{"type":"item.completed","item":"agent_message"}',
                '{"type":"item.completed","item":{"type":"agent_message","text":7}}',
                '{"type":"item.completed","item":{"type":["agent_message"],"text":"no"}}',
                '{"type":"turn.completed","usage":"lots"}',
                '{"type":"turn.completed","usage":{"input_tokens":"10","output_tokens":null}}',
            ],
        ),
        (
            "gemini",
            [
                '{"type":"init","session_id":null,"model":3}',
                '{"type":"message","role":"assistant","content":5,"delta":true}',
                '{"type":"message","role":["assistant"],"content":"no"}',
                '{"type":"error","severity":"warning","message":"just a warning"}',
                '{"type":"result","status":["error"],"stats":[1,2],"error":"boom"}',
            ],
        ),
        (
            "goose",
            [
                '{"type":"message","message":"text"}',
                '{"type":"message","message":{"role":"assistant","content":"hello"}}',
                '{"type":"message","message":{"role":"assistant","content":[{"type":"text"}]}}',
                '{"type":"model_change","model":1,"mode":"auto"}',
                '{"type":"complete","total_tokens":"x","input_tokens":-5,"output_tokens":"7"}',
            ],
        ),
    ],
)
def test_wrong_typed_fields_are_ignored(kind: str, lines: list[str]) -> None:
    report = parse_lines(kind, lines)
    expected_turns = 2 if kind == "codex" else None  # both turn.completed events still count
    assert report == AgentReport(turns=expected_turns)


def test_integral_floats_count_as_integers() -> None:
    line = '{"type":"result","num_turns":3.0,"total_cost_usd":1,"usage":{"output_tokens":2.0}}'
    report = parse_lines("claude", [line])
    assert (report.turns, report.cost_usd, report.output_tokens) == (3, 1.0, 2)


def test_claude_api_error_in_a_success_result() -> None:
    report = parse_lines(
        "claude",
        dumps(
            {"type": "system", "subtype": "init", "session_id": "s1", "model": "m"},
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "result": "API Error: 401\n  invalid x-api-key",
                "session_id": "s1",
            },
        ),
    )
    assert report.is_error
    assert report.error == "API Error: 401 invalid x-api-key"
    assert report.session_id == "s1"


def test_claude_error_subtype_without_result_or_errors() -> None:
    report = parse_lines(
        "claude",
        dumps(
            {"type": "assistant", "message": {"content": [{"type": "text", "text": "Working"}]}},
            {"type": "result", "subtype": "error_max_turns", "is_error": False, "num_turns": 9},
        ),
    )
    assert (report.is_error, report.error) == (True, "claude reported error_max_turns")
    assert report.summary == "Working"
    assert report.turns == 9


@pytest.mark.parametrize(
    ("events", "is_error", "error"),
    [
        # A retried stream error, then the turn completes: not a failure.
        (
            [{"type": "error", "message": "Reconnecting... 1/5"}, {"type": "turn.completed"}],
            False,
            None,
        ),
        (
            [{"type": "turn.completed"}, {"type": "error", "message": "stream closed"}],
            True,
            "stream closed",
        ),
        ([{"type": "turn.failed", "error": {"message": "quota"}}], True, "quota"),
        ([{"type": "turn.failed", "error": "quota"}], True, "codex: turn failed"),
        # A later run in the same log that completes wins.
        (
            [{"type": "turn.failed", "error": {"message": "x"}}, {"type": "turn.completed"}],
            False,
            None,
        ),
    ],
)
def test_codex_outcome(events: list[object], is_error: bool, error: str | None) -> None:
    report = parse_lines("codex", dumps({"type": "thread.started", "thread_id": "t"}, *events))
    assert (report.is_error, report.error) == (is_error, error)


def test_codex_sums_usage_over_turns_and_keeps_the_last_message() -> None:
    def message(text: str) -> dict[str, object]:
        return {"type": "item.completed", "item": {"type": "agent_message", "text": text}}

    usage = {"input_tokens": 100, "cached_input_tokens": 90, "output_tokens": 7}
    report = parse_lines(
        "codex",
        dumps(
            message("first"),
            {"type": "turn.completed", "usage": usage},
            {"type": "item.updated", "item": {"type": "agent_message", "text": "partial"}},
            message("second"),
            {"type": "item.completed", "item": {"type": "reasoning", "text": "thinking"}},
            {"type": "turn.completed", "usage": usage},
        ),
    )
    assert (report.input_tokens, report.output_tokens, report.turns) == (200, 14, 2)
    assert report.summary == "second"
    assert report.cost_usd is None


def test_gemini_summary_is_the_text_after_the_last_tool_call() -> None:
    def say(text: str, **extra: object) -> dict[str, object]:
        return {"type": "message", "role": "assistant", "content": text, **extra}

    report = parse_lines(
        "gemini",
        dumps(
            {"type": "message", "role": "user", "content": "do it"},
            say("Let me ", delta=True),
            say("look.", delta=True),
            {"type": "tool_use", "tool_name": "ls", "tool_id": "1", "parameters": {}},
            {"type": "tool_result", "tool_id": "1", "status": "success"},
            say("All ", delta=True),
            say("done.", delta=True),
            {"type": "tool_use", "tool_name": "ls", "tool_id": "2", "parameters": {}},
            {"type": "result", "status": "success", "stats": {"input_tokens": 3}},
        ),
    )
    assert report.summary == "All done."
    assert report.input_tokens == 3


@pytest.mark.parametrize(
    ("events", "is_error", "error"),
    [
        (
            [
                {"type": "error", "severity": "warning", "message": "Loop detected"},
                {"type": "result", "status": "success"},
            ],
            False,
            None,
        ),
        (
            [
                {"type": "error", "severity": "error", "message": "Invalid stream"},
                {"type": "result", "status": "error"},
            ],
            True,
            "Invalid stream",
        ),
        (
            [{"type": "result", "status": "error", "error": {"type": "X", "message": "auth"}}],
            True,
            "auth",
        ),
        ([{"type": "result", "status": "error"}], True, "gemini reported status error"),
        (
            [{"type": "error", "severity": "error", "message": "Maximum session turns exceeded"}],
            True,
            "Maximum session turns exceeded",
        ),
    ],
)
def test_gemini_outcome(events: list[object], is_error: bool, error: str | None) -> None:
    report = parse_lines(
        "gemini", dumps({"type": "init", "session_id": "g", "model": "m"}, *events)
    )
    assert (report.is_error, report.error) == (is_error, error)
    assert (report.session_id, report.model) == ("g", "m")


def test_goose_joins_chunks_of_one_message_and_reads_model_and_tokens() -> None:
    def say(message_id: str | None, *texts: str) -> dict[str, object]:
        content = [{"type": "text", "text": t} for t in texts]
        return {
            "type": "message",
            "message": {"id": message_id, "role": "assistant", "content": content},
        }

    banner = ["    __( O)>  ● new session · openai gpt-4o", "   \\____)    20260101_2 · /w"]
    report = parse_lines(
        "goose",
        banner
        + dumps(
            say("a", "Hello"),
            say("a", " world"),
            say("b", "Final ", "answer"),
            say("b", "!"),
            {
                "type": "message",
                "message": {
                    "id": None,
                    "role": "user",
                    "content": [{"type": "text", "text": "tool"}],
                },
            },
            {"type": "notification", "extension_id": "developer", "log": {"message": "x"}},
            {"type": "complete", "total_tokens": 99, "input_tokens": 60, "output_tokens": 39},
        ),
    )
    assert report == AgentReport(
        summary="Final \nanswer!",
        model="gpt-4o",
        input_tokens=60,
        output_tokens=39,
        session_id="20260101_2",
    )


# --- plain text ---------------------------------------------------------------------------------


def test_plain_text_summary_is_the_tail_without_dispatcher_lines() -> None:
    lines = [
        "[dispatcher] starting aider",
        *(f"line {i}: " + "y" * 90 for i in range(100)),
        "",
        "\x1b[1;32mApplied edit to README.md\x1b[0m",
        "   ",
        "[dispatcher] agent exited with code 0",
    ]
    report = parse_lines("aider", lines)
    assert report.summary is not None
    assert report.summary.endswith("line 99: " + "y" * 90 + "\nApplied edit to README.md")
    assert len(report.summary) <= TEXT_TAIL_MAX
    assert "[dispatcher]" not in report.summary
    assert "\x1b" not in report.summary
    assert replace(report, summary=None) == AgentReport()


def test_plain_text_keeps_the_end_of_one_very_long_line() -> None:
    report = parse_lines("command", ["short", "z" * 5000 + "END"])
    assert report.summary is not None
    assert len(report.summary) == TEXT_TAIL_MAX
    assert report.summary.endswith("zEND")


# codex: its "Error: ..." lines are its failure (tests/agents/test_codex.py).
@pytest.mark.parametrize("kind", [kind for kind in AGENTS if kind != "codex"])
def test_json_family_without_recognizable_events_falls_back_to_text(kind: str) -> None:
    lines = [
        "[dispatcher] starting",
        "Error: unknown option '--output-format'",
        '{"type":"not.an.event.of.any.agent"}',
        "[1, 2]",
        "Usage: agent [options]",
        "[dispatcher] agent exited with code 2",
    ]
    report = parse_lines(kind, lines)
    expected = AgentReport(
        summary="Error: unknown option '--output-format'\n"
        '{"type":"not.an.event.of.any.agent"}\n[1, 2]\nUsage: agent [options]'
    )
    if kind in ("goose", "opencode"):  # their own errors are `Error: <reason>` lines
        expected = replace(expected, is_error=True, error="unknown option '--output-format'")
    assert report == expected


@pytest.mark.parametrize("kind", [*AGENTS, "aider"])
def test_empty_output_gives_an_empty_report(kind: str) -> None:
    assert parse_lines(kind, []) == AgentReport()
    assert (
        parse_lines(kind, ["[dispatcher] starting", "", "[dispatcher] agent exited"])
        == AgentReport()
    )


def test_kind_is_case_insensitive() -> None:
    line = '{"type":"thread.started","thread_id":"t"}'
    assert parse_lines(" Codex ", [line]).session_id == "t"


def test_deeply_nested_json_does_not_raise() -> None:
    line = '{"type":"result","a":' + "[" * 100_000 + "]" * 100_000 + "}"
    report = parse_lines("claude", [line])
    assert report == AgentReport(summary="…" + line[-(TEXT_TAIL_MAX - 1) :])

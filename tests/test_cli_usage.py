"""Usage errors from the installed ``dispatcher`` command: one line, exit 2, never a traceback.

Each case runs the real console script in a subprocess. None of them reaches the daemon: a
usage error is refused before any command body runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.daemon_fixture import base_env, dispatcher_argv

USAGE_ERRORS = {
    "unknown command": ["no-such-command"],
    "unknown subcommand": ["repo", "frobnicate"],
    "missing argument": ["show"],
    "extra argument": ["show", "1", "2"],
    "unknown option": ["show", "1", "--bogus"],
    "option without its value": ["jobs", "--repo"],
    "missing required option": ["run", "app"],
    "bad option value": ["inbox", "--limit", "many"],
    "bad argument value": ["show", "abc"],
    "bad choice": ["jobs", "--state", "bogus"],
}


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = base_env(home)
    # Nowhere to connect: a case that wrongly got past parsing fails with exit 1, not 2.
    env["DISPATCHER_URL"] = "http://127.0.0.1:9"
    env["DISPATCHER_TOKEN"] = "t" * 32
    return subprocess.run(
        [*dispatcher_argv(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("args", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_error_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    result = _run(args, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dispatcher: "), lines[0]
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""


def test_usage_error_names_the_problem_and_where_to_look(tmp_path: Path) -> None:
    (line,) = _run(["show"], tmp_path).stderr.splitlines()
    assert "missing argument" in line.lower()
    assert "job" in line.lower()
    assert "dispatcher show --help" in line


# Usage errors of `prune` and `repo update`, and what their one line says.
SAYS = {
    "prune: bad duration": (["prune", "--older-than", "7x"], "not a duration: '7x'"),
    "prune: unit first": (["prune", "--older-than", "d7"], "not a duration"),
    "prune: zero duration": (["prune", "--older-than", "0d"], "more than zero"),
    "prune: bad state": (["prune", "--state", "bogus"], "'bogus' is not one of"),
    "update: bad number": (
        ["repo", "update", "app", "--max-parallel", "many"], "Invalid value for '--max-parallel'"
    ),
    "update: nothing": (["repo", "update", "app"], "nothing to change"),
    "update: set and cleared": (
        ["repo", "update", "app", "--pool-size", "1", "--clear", "pool-size"],
        "--pool-size is given a value and cleared",
    ),
    "update: clear what is not a setting": (
        ["repo", "update", "app", "--clear", "path"], "'path' is not one of"
    ),
}  # fmt: skip


@pytest.mark.parametrize(("args", "says"), SAYS.values(), ids=SAYS.keys())
def test_usage_error_says_what_is_wrong(args: list[str], says: str, tmp_path: Path) -> None:
    result = _run(args, tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatcher: ") and says in line, line


@pytest.mark.parametrize("args", [["--help"], ["show", "--help"], ["repo", "--help"]])
def test_help_still_works_and_exits_0(args: list[str], tmp_path: Path) -> None:
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: dispatcher" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("args", [[], ["repo"]], ids=["dispatcher", "dispatcher repo"])
def test_a_bare_group_shows_its_help_as_a_usage_error(args: list[str], tmp_path: Path) -> None:
    result = _run(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Usage: dispatcher" in result.stdout


def test_a_failed_command_still_exits_1_with_one_line(tmp_path: Path) -> None:
    result = _run(["show", "1"], tmp_path)  # parses fine; nothing listens on port 9
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatcher: ")

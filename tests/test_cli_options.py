"""The installed ``dispatcher`` command's own options, without a daemon: ``--version``, shell
completion (Typer's), the choices of fixed-value options, and where a prompt is read from.

Each case runs the real console script in a subprocess (bash, for completion). Nothing here
reaches a daemon: ``DISPATCHER_URL`` points where nothing listens, so a case that wrongly got
that far fails with exit 1 and "cannot reach the daemon".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import dispatcher
from dispatcher.lifecycle import JobState, MergeStrategy
from tests.daemon_fixture import base_env, dispatcher_argv

STRATEGIES = [s.value for s in MergeStrategy]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = base_env(home)
    env.update(DISPATCHER_URL="http://127.0.0.1:9", DISPATCHER_TOKEN="t" * 32, **extra)
    # The console script's directory first: bash completion runs `dispatcher` by name.
    env["PATH"] = f"{Path(dispatcher_argv()[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(
    args: list[str], home: Path, *, stdin: bytes = b"", **extra: str
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*dispatcher_argv(), *args],
        env=_env(home, **extra),
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def _complete(home: Path, words: str, **protocol: str) -> list[str]:
    """What the completion protocol answers for the command line ``words`` (the word under
    the cursor last; empty after a trailing space): bash's unless ``protocol`` says."""
    env = protocol or {
        "_DISPATCHER_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = _run([], home, **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = _run(["--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dispatcher {dispatcher.__version__}\n"
    assert result.stderr == ""
    # Eager: it wins over a command after it, and needs no daemon.
    assert _run(["--version", "jobs"], tmp_path).stdout == result.stdout


# ------------------------------------------------------------------ completion


def test_completion_protocol_completes_commands_and_choices(tmp_path: Path) -> None:
    assert set(_complete(tmp_path, "dispatcher re")) == {"rebase", "repo", "retry"}
    assert _complete(tmp_path, "dispatcher repo a") == ["add"]
    assert _complete(tmp_path, "dispatcher merge 1 --strategy ") == STRATEGIES
    assert _complete(tmp_path, "dispatcher merge 1 --strategy sq") == ["squash"]
    assert _complete(tmp_path, "dispatcher jobs --state ") == [s.value for s in JobState]
    assert _complete(tmp_path, "dispatcher run app --prompt") == ["--prompt", "--prompt-file"]


def test_zsh_and_fish_protocols_complete_the_strategies(tmp_path: Path) -> None:
    line = "dispatcher merge 1 --strategy "
    zsh = _complete(tmp_path, line, _DISPATCHER_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS=line)
    assert all(f'"{s}"' in "\n".join(zsh) for s in STRATEGIES), zsh
    fish = _complete(
        tmp_path,
        line,
        _DISPATCHER_COMPLETE="complete_fish",
        _TYPER_COMPLETE_ARGS=line,
        _TYPER_COMPLETE_FISH_ACTION="get-args",
    )
    assert fish == STRATEGIES


def _bash(script: str, home: Path) -> subprocess.CompletedProcess[str]:
    # `; exit $?` keeps bash from exec'ing a last simple command: bash stays the parent,
    # the shell Typer detects.
    return subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", f"{script}; exit $?"],
        env=_env(home), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_show_completion_prints_a_bash_script_that_completes(tmp_path: Path) -> None:
    shown = _bash("dispatcher --show-completion", tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "_DISPATCHER_COMPLETE=complete_bash" in shown.stdout
    assert "complete -o default -F _dispatcher_completion dispatcher" in shown.stdout
    assert _bash("dispatcher --show-completion bash", tmp_path).stdout == shown.stdout
    # The script, loaded in bash, completes as bash's Tab would (its function, its COMPREPLY).
    scripted = _bash(
        'source <(dispatcher --show-completion) && COMP_WORDS=(dispatcher merge 7 --strategy "")'
        ' && COMP_CWORD=4 && _dispatcher_completion dispatcher && printf "%s\\n" "${COMPREPLY[@]}"',
        tmp_path,
    )
    assert scripted.returncode == 0, scripted.stderr
    assert scripted.stdout.splitlines() == STRATEGIES


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F"),
        ("zsh", "#compdef dispatcher"),
        ("fish", "complete --command"),
    ],
)
def test_a_named_shells_script_comes_from_the_protocol(
    shell: str, marker: str, tmp_path: Path
) -> None:
    result = _run([], tmp_path, _DISPATCHER_COMPLETE=f"source_{shell}")
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    assert f"_DISPATCHER_COMPLETE=complete_{shell}" in result.stdout


def test_install_completion_writes_the_bash_script_under_home(tmp_path: Path) -> None:
    installed = _bash("dispatcher --install-completion", tmp_path)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "dispatcher.sh"
    assert "_DISPATCHER_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


# ------------------------------------------------------------------ choices in --help


def test_fixed_value_options_list_their_choices_in_help(tmp_path: Path) -> None:
    merge = _run(["merge", "--help"], tmp_path, COLUMNS="200")
    assert "|".join(STRATEGIES) in merge.stdout
    jobs = _run(["jobs", "--help"], tmp_path, COLUMNS="200")
    assert "|".join(s.value for s in JobState) in jobs.stdout


def test_a_bad_strategy_is_a_usage_error_naming_the_choices(tmp_path: Path) -> None:
    result = _run(["merge", "1", "--strategy", "octopus"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatcher: ")
    assert "'octopus'" in line and all(f"'{s}'" in line for s in STRATEGIES), line


# ------------------------------------------------------------------ the prompt's source

PROMPT_USAGE_ERRORS = {
    "run without a prompt": (["run", "app"], "Missing --prompt or --prompt-file"),
    "run with both": (["run", "app", "--prompt", "x", "--prompt-file", "p.txt"], "not both"),
    "followup without a prompt": (["followup", "1"], "Missing PROMPT or --prompt-file"),
    "followup with both": (["followup", "1", "x", "--prompt-file", "p.txt"], "not both"),
}


@pytest.mark.parametrize(
    ("args", "says"), PROMPT_USAGE_ERRORS.values(), ids=PROMPT_USAGE_ERRORS.keys()
)
def test_exactly_one_prompt_source_else_a_usage_error(
    args: list[str], says: str, tmp_path: Path
) -> None:
    result = _run(args, tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatcher: ") and says in line, line
    assert f"(see 'dispatcher {args[0]} --help')" in line


BAD_PROMPTS: dict[str, tuple[bytes | None, str]] = {
    "missing": (None, "cannot read the prompt file {path}: No such file or directory"),
    "a directory": (b"dir", "cannot read the prompt file {path}: Is a directory"),
    "not UTF-8": (b"fix \xff\xfe it", "the prompt file {path} is not UTF-8 text (byte 0xff at"),
    "empty": (b"", "the prompt file {path} is empty"),
    "blank": (b" \n\t\n", "the prompt file {path} holds only whitespace"),
    "huge": (b"x" * 4_000_004, "the prompt file {path} is over 4,000,003 bytes"),
}


@pytest.mark.parametrize("command", ["run", "followup"])
@pytest.mark.parametrize(("content", "says"), BAD_PROMPTS.values(), ids=BAD_PROMPTS.keys())
def test_a_bad_prompt_file_is_one_line_and_exit_1(
    command: str, content: bytes | None, says: str, tmp_path: Path
) -> None:
    path = tmp_path / "prompt.txt"
    if content == b"dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    args = ["run", "app"] if command == "run" else ["followup", "1"]
    result = _run([*args, "--prompt-file", str(path)], tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatcher: " + says.format(path=path)), line
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("stdin", "says"),
    [(b"", "the prompt on stdin is empty"), (b"\xc3(", "the prompt on stdin is not UTF-8 text")],
    ids=["empty", "not UTF-8"],
)
def test_a_bad_prompt_on_stdin_is_one_line_and_exit_1(
    stdin: bytes, says: str, tmp_path: Path
) -> None:
    for args in (["run", "app", "--prompt", "-"], ["followup", "1", "-"]):
        result = _run(args, tmp_path, stdin=stdin)
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"dispatcher: {says}"), line


def test_a_good_prompt_file_gets_as_far_as_the_daemon(tmp_path: Path) -> None:
    """Read and accepted: the command goes on to the daemon (here: nowhere to connect)."""
    (tmp_path / "p.txt").write_text("fix it\n")
    result = _run(["run", "app", "--prompt-file", str(tmp_path / "p.txt")], tmp_path)
    assert result.returncode == 1
    assert "cannot reach the daemon" in result.stderr

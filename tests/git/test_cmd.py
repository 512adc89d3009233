"""dispatcher.git.cmd: the clean environment, errors, the pinned global config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatcher.errors import (
    GitError,
    NotFound,
)
from dispatcher.git import cmd, refs
from tests.gitutil import init_repo


def test_clean_env_strips_repo_variables_and_keeps_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        monkeypatch.setenv(name, "/elsewhere")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.editor")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -i key")
    monkeypatch.setenv("NOT_GIT", "kept")

    env = cmd.clean_env({"EXTRA": "1"})

    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        assert name not in env
    assert env["GIT_AUTHOR_NAME"] == "Test Author"
    assert env["GIT_COMMITTER_EMAIL"] == "committer@example.com"
    assert env["GIT_CONFIG_KEY_0"] == "core.editor"
    assert env["GIT_CONFIG_VALUE_0"] == "true"
    assert env["GIT_SSH_COMMAND"] == "ssh -i key"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["NOT_GIT"] == "kept"
    assert env["EXTRA"] == "1"


def test_inherited_git_dir_does_not_redirect_commands(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = init_repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert refs.rev_parse(repo, "HEAD") != refs.rev_parse(other, "HEAD")
    assert refs.toplevel(repo) == repo.resolve()


def test_git_error_shows_command_code_and_stderr(repo: Path) -> None:
    with pytest.raises(GitError) as info:
        cmd.run(["rev-parse", "--verify", "no-such-ref"], repo)
    message = info.value.message
    assert "git rev-parse --verify no-such-ref" in message
    assert "exited 128" in message
    assert "fatal" in message


def test_git_in_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        cmd.run(["status"], tmp_path / "missing")


@pytest.mark.parametrize(
    ("exist", "pinned"),
    [
        ((), "/dev/null"),
        ((".gitconfig",), ".gitconfig"),
        ((".config/git/config",), ".config/git/config"),
        ((".gitconfig", ".config/git/config"), None),
    ],
)
def test_pin_global_config_fixes_what_the_daemons_git_reads(
    tmp_path: Path, exist: tuple[str, ...], pinned: str | None
) -> None:
    for name in exist:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("[user]\n\tname = x\n")
    try:
        got = cmd.pin_global_config({"HOME": str(tmp_path)})
        want = (
            None if pinned is None else pinned if pinned == "/dev/null" else str(tmp_path / pinned)
        )
        assert got == want
        if pinned is None:  # both exist (and the sandbox keeps both read-only)
            return
        # A global config made after the pin (an agent's) is not read by the daemon's git.
        for name in {".gitconfig", ".config/git/config"} - set(exist):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("[user]\n\tname = planted\n")
        read = cmd.run(["config", "--global", "--get", "user.name"], tmp_path, check=False)
        assert read.stdout.strip() == ("x" if exist else "")  # the pinned file, or none
    finally:
        cmd.pin_global_config({"HOME": str(tmp_path), "GIT_CONFIG_GLOBAL": os.devnull})
        cmd._pinned_global.clear()


def test_pin_global_config_with_a_missing_git_config_global_reads_none(tmp_path: Path) -> None:
    try:
        assert cmd.pin_global_config({"GIT_CONFIG_GLOBAL": str(tmp_path / "nope")}) == os.devnull
    finally:
        cmd._pinned_global.clear()


def test_the_daemons_pin_cleans_its_environment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.setenv("GIT_DIR", "/elsewhere")  # never inherited
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -v")  # kept
    try:
        assert cmd.pin_global_config() == os.devnull  # the daemon's call: no env given
        monkeypatch.setenv("DISPATCHER_LATER", "1")  # the daemon's environment is fixed at start
        env = cmd.clean_env({"EXTRA": "x"})
        assert "GIT_DIR" not in env and env["GIT_SSH_COMMAND"] == "ssh -v"
        assert env["GIT_TERMINAL_PROMPT"] == "0" and env["EXTRA"] == "x"
        assert "DISPATCHER_LATER" not in env and "EXTRA" not in cmd.clean_env()
        shown = cmd.run(["config", "--show-origin", "--global", "--list"], tmp_path, check=False)
        assert shown.stdout == ""  # reads the pinned /dev/null
    finally:
        cmd._pinned_global.clear()
        cmd._daemon_env.clear()
        cmd._git_env.clear()
    assert "DISPATCHER_LATER" in cmd.clean_env()  # not pinned: os.environ as it is now


def test_no_git_process_gets_the_forge_tokens(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook git runs sees its environment: the daemon's forge tokens are not in it."""
    monkeypatch.setenv("DISPATCHER_FORGE_TOKENS", '{"github.com": "tok-xyz"}')
    assert "DISPATCHER_FORGE_TOKENS" not in cmd.clean_env()
    out = cmd.run(["-c", "alias.e=!env", "e"], repo).stdout
    assert "tok-xyz" not in out and "HOME=" in out

"""git/remote.py against real git: push, refusals read as one line, hostile names refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dispatcher.errors import FetchFailed, InvalidInput, NotFound, PushRejected
from dispatcher.git import remote
from tests.daemon_fixture import pid_alive
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    repo = init_repo(tmp_path / "repo")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "branch", "dispatcher/1-x")
    return repo, bare


def test_push_and_urls(pair: tuple[Path, Path]) -> None:
    repo, bare = pair
    assert remote.remote_urls(repo, "origin") == (str(bare), str(bare))
    remote.push(repo, "origin", "dispatcher/1-x")
    assert git(bare, "rev-parse", "dispatcher/1-x") == git(repo, "rev-parse", "dispatcher/1-x")


@pytest.mark.parametrize(
    "branch",
    [
        "-f",
        "--delete",
        "a b",
        "a..b",
        "x:y",
        "refs/heads/x:refs/heads/y",
        "+main",
        "a\nb",
        "@{-1}",
        "x~1",
        "a^",
        "",
    ],
)
def test_hostile_branch_names_are_refused(pair: tuple[Path, Path], branch: str) -> None:
    repo, bare = pair
    with pytest.raises(InvalidInput):
        remote.push(repo, "origin", branch)
    assert git(bare, "for-each-ref") == ""


@pytest.mark.parametrize(
    "name", ["--upload-pack=touch x", "-o", "../x", "a b", "a/../b", "", "x;id"]
)
def test_hostile_remote_names_are_refused(pair: tuple[Path, Path], name: str) -> None:
    repo, _ = pair
    with pytest.raises(InvalidInput):
        remote.push(repo, name, "dispatcher/1-x")


def test_an_unknown_remote_is_not_found(pair: tuple[Path, Path]) -> None:
    repo, _ = pair
    with pytest.raises(NotFound, match="no remote 'up'"):
        remote.remote_urls(repo, "up")


def test_a_non_fast_forward_is_one_line_and_the_lease_guards(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, bare = pair
    remote.push(repo, "origin", "dispatcher/1-x")
    pushed = git(repo, "rev-parse", "dispatcher/1-x")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", "-b", "dispatcher/1-x", str(bare), str(other))
    commit_file(other, "t.md", "t\n")
    git(other, "push", "-q", "origin", "dispatcher/1-x")
    before = git(repo, "for-each-ref")
    with pytest.raises(PushRejected) as caught:
        remote.push(repo, "origin", "dispatcher/1-x")
    assert "non-fast-forward" in caught.value.message and "\n" not in caught.value.message
    with pytest.raises(PushRejected, match="lease"):
        remote.push(repo, "origin", "dispatcher/1-x", lease=pushed, force_with_lease=True)
    assert git(repo, "for-each-ref") == before


def test_credentials_go_by_environment_through_the_helper(tmp_path: Path) -> None:
    """The helper in argv prints what the environment holds, on `get` only, and only
    for the protocol and host the token is for (git's own `credential fill` asks)."""
    creds = remote.Credentials("x-access-token", "s3cret", protocol="https", host="git.test:8443")
    args = remote._auth_args(creds)
    env = remote._auth_env(creds)
    assert env is not None and "s3cret" not in " ".join(args) and "s3cret" not in repr(creds)
    helper = args[3].removeprefix("credential.helper=!")

    def run(op: str, asked: str = "protocol=https\nhost=git.test:8443\n") -> str:
        return subprocess.run(
            ["sh", "-c", helper + ' "$@"', "sh", op],
            env=env,
            input=asked + "\n",
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    assert run("get") == "username=x-access-token\npassword=s3cret\n"
    assert run("store") == "" and run("erase") == ""
    for other in (
        "protocol=https\nhost=evil.example\n",  # a second push URL, a redirect
        "protocol=https\nhost=git.test\n",  # another port
        "protocol=http\nhost=git.test:8443\n",  # in clear
        "host=git.test:8443\n",  # no protocol said
    ):
        assert run("get", other) == "", other
    # git itself, through `credential fill` with our config: another host gets nothing.
    repo = init_repo(tmp_path / "r")
    fill = [*args, "credential", "fill"]
    full_env = {**os.environ, **env, "GIT_TERMINAL_PROMPT": "0"}
    asked_evil = subprocess.run(
        ["git", *fill], cwd=repo, env=full_env, input="protocol=https\nhost=evil.example\n\n",
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "s3cret" not in asked_evil.stdout
    asked_ours = subprocess.run(
        ["git", *fill], cwd=repo, env=full_env, input="protocol=https\nhost=git.test:8443\n\n",
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "password=s3cret" in asked_ours.stdout


def test_no_hook_of_the_repo_sees_the_token_during_a_push(tmp_path: Path) -> None:
    """reference-transaction runs when the push updates the remote-tracking ref: with
    the push's config, no hook runs in that git process at all."""
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    repo = init_repo(tmp_path / "r")
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "checkout", "-q", "-b", "dispatcher/1-x")
    seen = tmp_path / "hook.log"
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(f'#!/bin/sh\nenv >> "{seen}"\ncat > /dev/null\n')
    hook.chmod(0o755)
    creds = remote.Credentials("u", "hook-must-not-see", protocol="https", host="x")
    remote.push(repo, "origin", "dispatcher/1-x", credentials=creds)
    assert git(bare, "rev-parse", "dispatcher/1-x") == git(repo, "rev-parse", "HEAD")
    assert not seen.exists() or "hook-must-not-see" not in seen.read_text()


def test_a_fetch_that_times_out_takes_its_transport_with_it(tmp_path: Path) -> None:
    """The ssh git starts (here a stand-in that hangs) is killed with git on the timeout."""
    repo = init_repo(tmp_path / "repo")
    pidfile = tmp_path / "ssh.pid"
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 300\n")
    fake_ssh.chmod(0o755)
    git(repo, "config", "core.sshCommand", str(fake_ssh))
    git(repo, "remote", "add", "origin", "ssh://git@example.invalid/x.git")
    with pytest.raises(FetchFailed, match=r"^fetch of origin failed: .*timed out"):
        remote.fetch(repo, "origin", timeout=1.5)
    pid = int(pidfile.read_text())
    try:
        wait_until(lambda: not pid_alive(pid), "the transport to be gone", timeout=5)
    finally:
        if pid_alive(pid):
            os.kill(pid, 9)


def test_a_fetch_moves_only_remote_tracking_refs_whatever_the_configured_refspec(
    tmp_path: Path,
) -> None:
    repo = init_repo(tmp_path / "repo")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(repo, "branch", "feature")
    mine = git(repo, "rev-parse", "feature")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    git(other, "checkout", "-q", "-b", "feature")
    theirs = commit_file(other, "THEIRS.md", "theirs\n")
    git(other, "push", "-q", "origin", "feature")
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "config", "remote.origin.fetch", "+refs/*:refs/*")  # a mirror's
    remote.fetch(repo, "origin")
    assert git(repo, "rev-parse", "feature") == mine  # the local branch is not overwritten
    assert git(repo, "rev-parse", "refs/remotes/origin/feature") == theirs
    assert git(repo, "tag") == ""


# --- any ref, with a lease (a repo's hub: docs/cluster.md) ---------------------------


def test_push_ref_sets_any_ref_guards_a_lease_and_deletes(pair: tuple[Path, Path]) -> None:
    repo, bare = pair
    first = git(repo, "rev-parse", "main")
    second = commit_file(repo, "b.txt", "b\n")
    attempt = "refs/dispatcher/attempts/7/1"
    remote.push_ref(repo, "origin", attempt, first)
    remote.push_ref(repo, "origin", attempt, second)  # overwritten: the daemon's ref
    assert remote.remote_refs(repo, "origin", "refs/dispatcher/attempts/7/*") == {attempt: second}
    remote.push_ref(repo, "origin", "refs/heads/main", first, expect="")  # absent: made
    with pytest.raises(remote.LeaseLost, match="moved there meanwhile"):
        remote.push_ref(repo, "origin", "refs/heads/main", second, expect="")
    with pytest.raises(remote.LeaseLost):
        remote.push_ref(repo, "origin", "refs/heads/main", second, expect=second)
    assert git(bare, "rev-parse", "main") == first  # the lease held it
    remote.push_ref(repo, "origin", "refs/heads/main", second, expect=first)
    assert remote.fetch_branch(repo, "origin", "main") == second
    assert git(repo, "rev-parse", "refs/remotes/origin/main") == second
    remote.push_ref(repo, "origin", attempt, None)
    remote.push_ref(repo, "origin", attempt, None)  # gone already: done
    assert remote.remote_refs(repo, "origin", "refs/dispatcher/*") == {}
    assert remote.fetch_branch(repo, "origin", "nosuch") is None


@pytest.mark.parametrize(
    "ref", ["main", "refs/tags/v1", "refs/heads/a..b", "refs/heads/x:y", "-f", "refs/heads/"]
)
def test_push_ref_refuses_refs_it_does_not_write(pair: tuple[Path, Path], ref: str) -> None:
    repo, bare = pair
    with pytest.raises(InvalidInput):
        remote.push_ref(repo, "origin", ref, git(repo, "rev-parse", "main"))
    assert git(bare, "for-each-ref") == ""

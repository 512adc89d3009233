"""Agents stay in their box (dispatcher/process/sandbox.py): a hostile agent, setup and cleanup
run by the real daemon under real bubblewrap try to read the daemon's token, state and
the user's checkout, and to call the API with what they found; the modes and fallbacks.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dispatcher.process import sandbox
from tests.daemon_fixture import Daemon
from tests.gitutil import git, init_repo

Agent = Callable[[str, str], str]

BWRAP, WHY_NOT = sandbox.probe("bwrap")
needs_bwrap = pytest.mark.skipif(
    BWRAP is None, reason=f"bubblewrap cannot run here: {WHY_NOT} (.ci/run installs it)"
)

TRIGGERS = """\
version: 1
setup: 'cat "$(dirname "$(dirname "$(dirname "$DISPATCHER_PROMPT_FILE")")")/token" > setup-saw.txt 2>&1; true'
cleanup: 'cat "$DISPATCHER_WORKTREE/../../../token" > "$CLEANUP_MARK" 2>&1; ls -A "$DISPATCHER_WORKTREE/../../.." >> "$CLEANUP_MARK" 2>&1; true'
copy: [.env]
link: [node_modules]
triggers:
  manual:
    on: manual
    prompt: hi
"""

# Reads the daemon's pid, state dir and the user's checkout from its prompt; writes
# what each attempt gave into saw/ in its worktree; then does its real work.
HOSTILE = r"""
read -r DPID STATE REPO
mkdir saw
words() { tr -c 'A-Za-z0-9_-' '\n' | grep -E '^.{40,}$' | sort -u; }
# Other processes' environments and command lines are kept only as hashes of their
# token-like words (should the box fail, no one's secrets land in a file).
hashes() { words | while read -r w; do printf %s "$w" | sha256sum | cut -c1-64; done; }
cat "$STATE/token" > saw/token 2>&1
ls -A "$STATE" > saw/state-list 2>&1
ls -AR "$STATE/worktrees" > saw/worktrees-list 2>&1
head -c 64 "$STATE/dispatcher.db" > saw/db 2>&1
cat /proc/*/environ 2>/dev/null | hashes > saw/all-environ
cat /proc/*/cmdline 2>/dev/null | hashes > saw/all-cmdline
cat "/proc/$DPID/environ" 2>/dev/null | hashes > saw/daemon-environ
cat "/proc/$DPID/root$STATE/token" > saw/proc-root-token 2>&1
ls -A "/proc/$DPID/root$REPO" > saw/proc-root-repo 2>&1
cat "$REPO/secret.txt" > saw/secret 2>&1
ls -A "$REPO" > saw/repo-list 2>&1
# Every token-like word it found, tried against the API.
{ cat saw/token saw/proc-root-token; cat /proc/*/environ /proc/*/cmdline; } 2>/dev/null |
  words | while read -r tok; do
    curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $tok" \
      "$DISPATCHER_API/jobs" >> saw/api 2>&1
  done
# Plant code the daemon's own git would run outside the box.
common=$(git rev-parse --git-common-dir)
{ printf '[core]\n\tfsmonitor = "touch PLANTED"\n' >> "$common/config"; } 2> saw/plant-config
{ printf '#!/bin/sh\ntouch PLANTED\n' > "$common/hooks/pre-commit"; } 2> saw/plant-hook
{ echo "gitdir: /tmp" > .git; } 2> saw/plant-dotgit
{ echo /tmp > "$(git rev-parse --git-dir)/commondir"; } 2> saw/plant-commondir
# Its real work: what copy: and link: gave it, and its own commit.
cat .env > saw/copied 2>&1
cat node_modules/pkg/index.js > saw/linked 2>&1
echo added > node_modules/pkg/added.js
echo mine > mine.txt
git add mine.txt saw && git commit -q -m "the agent's own commit"
"""


def seen(worktree: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (worktree / "saw").iterdir()}


@needs_bwrap
@pytest.mark.parametrize("token_from", ["file", "env"])
def test_hostile_agent_setup_and_cleanup_cannot_reach_the_token_state_or_checkout(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path, token_from: str
) -> None:
    mark = tmp_path / "cleanup-saw"
    env = {"CLEANUP_MARK": str(mark)}
    if token_from == "env":  # then it is in the daemon's /proc/<pid>/environ, not a file
        env["DISPATCHER_TOKEN"] = secrets.token_urlsafe(32)
    d = daemon_factory(**env).start()
    assert d.proc is not None
    token = env.get("DISPATCHER_TOKEN") or d.token
    d._api = httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    repo = init_repo(
        tmp_path / "app",
        files={
            "README.md": "hello\n", ".dispatcher/triggers.yml": TRIGGERS,
            ".gitignore": "secret.txt\n.env\nnode_modules\nsetup-saw.txt\n",
        },
    )  # fmt: skip
    (repo / "secret.txt").write_text("the user's secret\n")  # untracked, not in copy:
    (repo / ".env").write_text("COPIED=1\n")
    (repo / "node_modules" / "pkg").mkdir(parents=True)
    (repo / "node_modules" / "pkg" / "index.js").write_text("dep\n")
    config_before = (repo / ".git" / "config").read_text()
    name = d.add_repo(repo)
    prompt = f"{d.proc.pid} {d.state_dir} {repo}\n"
    # A process of the user's with the token in its command line (a curl, say): any
    # process can read any other's /proc/<pid>/cmdline, unless it has its own /proc.
    with subprocess.Popen(["sh", "-c", "sleep 60", f"Bearer {token}"]) as user_curl:
        try:
            job = d.wait(d.submit(name, prompt, command=[agent("hostile.sh", HOSTILE)])["id"])
        finally:
            user_curl.kill()
    worktree = Path(job["worktree"])
    saw = seen(worktree)
    hashed = hashlib.sha256(token.encode()).hexdigest()
    # Nothing it tried gave it the token, the state, the database or the secret.
    for what, content in {**saw, "setup": (worktree / "setup-saw.txt").read_bytes()}.items():
        assert token.encode() not in content, f"the token leaked through {what}"
        assert hashed.encode() not in content, f"the token leaked through {what}"
        assert b"the user's secret" not in content, f"the checkout leaked through {what}"
    assert b"token" not in saw["state-list"] and b"dispatcher.db" not in saw["state-list"]
    assert b"SQLite format 3" not in saw["db"]
    assert b"secret.txt" not in saw["repo-list"]
    assert b"No such file" in saw["proc-root-token"]  # the daemon is not in its /proc
    assert b"200" not in saw.get("api", b"")
    assert job["state"] == "succeeded", job["error"]
    # Git's control files stayed as they were: the daemon's git ran none of its code.
    assert (repo / ".git" / "config").read_text() == config_before
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert (worktree / ".git").read_text().startswith("gitdir: ")
    for plant in ("config", "hook", "dotgit", "commondir"):
        assert b"Read-only file system" in saw[f"plant-{plant}"], plant
    assert not list(tmp_path.rglob("PLANTED"))
    # Yet it did its job: copy: and link: worked, its own commit is on its branch.
    assert saw["copied"] == b"COPIED=1\n"
    assert saw["linked"] == b"dep\n"
    assert (repo / "node_modules" / "pkg" / "added.js").read_text() == "added\n"
    assert git(repo, "log", "-1", "--format=%s", job["branch"]) == "the agent's own commit"
    assert git(repo, "show", f"{job['branch']}:mine.txt") == "mine"
    log = d.api.get(f"/jobs/{job['id']}/log").text
    assert "sandbox: bubblewrap" in log
    # Cleanup runs in the box too (it runs the worktree's code, which the agent edited).
    d.cli("discard", str(job["id"]))
    cleanup_saw = mark.read_bytes()
    assert cleanup_saw, "cleanup did not run"
    assert token.encode() not in cleanup_saw
    assert b"dispatcher.db" not in cleanup_saw


def test_sandbox_off_runs_agents_as_before_and_says_so(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_SANDBOX="off").start()
    name = d.add_repo(init_repo(tmp_path / "r"))
    reader = agent("read.sh", f'cat "{d.state_dir}/token" > token.txt\n')
    job = d.wait(d.submit(name, command=[reader])["id"])
    assert job["state"] == "succeeded", job["error"]
    assert (Path(job["worktree"]) / "token.txt").read_text().strip() == d.token  # as today
    log = d.api.get(f"/jobs/{job['id']}/log").text
    assert "sandbox: off (DISPATCHER_SANDBOX=off)" in log


def test_required_sandbox_without_bubblewrap_fails_the_job_with_one_line(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "bwrap"
    d = daemon_factory(DISPATCHER_SANDBOX="bwrap", DISPATCHER_SANDBOX_BWRAP=str(missing)).start()
    repo = init_repo(tmp_path / "r")
    name = d.add_repo(repo)
    job = d.wait(d.submit(name, command=["true"])["id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("DISPATCHER_SANDBOX=bwrap but bubblewrap"), job["error"]
    assert str(missing) in job["error"] and "\n" not in job["error"]
    assert job["started_at"] is None and job["worktree"] is None  # the agent never ran
    assert not git(repo, "branch", "--list", job["branch"])
    assert not list((d.state_dir / "worktrees" / name).glob("*"))


def test_auto_sandbox_without_bubblewrap_runs_the_job_and_says_why(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    fake = agent("bwrap", 'echo "bwrap: No permissions to create new namespace" >&2; exit 1\n')
    d = daemon_factory(DISPATCHER_SANDBOX_BWRAP=fake).start()
    name = d.add_repo(init_repo(tmp_path / "r"))
    job = d.wait(d.submit(name, command=[agent("work.sh", "echo done > done.txt\n")])["id"])
    assert job["state"] == "succeeded", job["error"]
    log = d.api.get(f"/jobs/{job['id']}/log").text
    assert (
        f"sandbox: none, bubblewrap ({fake}) cannot make a sandbox here: bwrap: No permissions "
        "to create new namespace: this job runs unsandboxed" in log
    ), log


# Job A's agent goes after another job's worktree and the checkout's own HEAD and index:
# a commondir pointing at a git dir whose config runs code would make the daemon's git
# in B's worktree (status, leftover commits) run it outside the box. Then it does what
# agents do with git: stash, a branch of its own, packed refs, its commit.
NEIGHBOUR = r"""
read -r MARK
mkdir saw
common=$(git rev-parse --git-common-dir)
self=$(cd "$(git rev-parse --git-dir)" && pwd -P)
git init -q --bare "$PWD/evil" && git config -f evil/config core.fsmonitor "touch $MARK"
for admin in "$common"/worktrees/*; do
  [ "$(cd "$admin" && pwd -P)" = "$self" ] && continue
  { echo "$PWD/evil" > "$admin/commondir"; } 2>> saw/plant-other-commondir
  { echo "gitdir: $PWD/evil" > "$admin/gitdir"; } 2>> saw/plant-other-gitdir
  { echo junk > "$admin/HEAD"; } 2>> saw/plant-other-head
  { mkdir "$common/worktrees/planted"; } 2> saw/plant-new-admin
done
{ echo "ref: refs/heads/evil" > "$common/HEAD"; } 2> saw/plant-head
{ echo junk > "$common/index"; } 2> saw/plant-index
echo one > stashed.txt && git add stashed.txt && git stash -q && git stash pop -q
echo $? > saw/stash
git checkout -q -b agent-side && git checkout -q - ; echo $? > saw/checkout-b
git pack-refs --all; echo $? > saw/pack-refs
git add stashed.txt saw && git commit -q -m "A's commit"; echo $? > saw/commit
"""


def target_repo(d: Daemon, tmp_path: Path) -> tuple[Path, str, Path]:
    """Repo ``app`` (a README) added to ``d``, and the mark file that a hostile agent's
    planted hook would make if the daemon's git ran it: (the repo, its name, the mark)."""
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    return repo, d.add_repo(repo), tmp_path / "PWNED"


@needs_bwrap
def test_an_agent_cannot_poison_another_jobs_worktree_or_the_checkouts_head_and_index(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory().start()
    repo, name, mark = target_repo(d, tmp_path)
    # B leaves work uncommitted: the daemon's git commits it in B's worktree afterwards.
    quiet = agent("quiet.sh", "echo b > b.txt\n")
    b = d.wait(d.submit(name, "b", command=[quiet])["id"])
    assert b["state"] == "succeeded", b["error"]
    admin = repo / ".git" / "worktrees" / Path(b["worktree"]).name
    before = {f: (admin / f).read_bytes() for f in ("commondir", "gitdir", "HEAD")}
    head, index = (repo / ".git" / "HEAD").read_bytes(), (repo / ".git" / "index").read_bytes()
    a = d.wait(d.submit(name, f"{mark}\n", command=[agent("a.sh", NEIGHBOUR)])["id"])
    assert a["state"] == "succeeded", a["error"]
    saw = seen(Path(a["worktree"]))
    for plant in ("other-commondir", "other-gitdir", "other-head", "new-admin", "head", "index"):
        assert b"Read-only file system" in saw[f"plant-{plant}"], (plant, saw[f"plant-{plant}"])
    assert {f: (admin / f).read_bytes() for f in before} == before
    assert (repo / ".git" / "HEAD").read_bytes() == head
    assert (repo / ".git" / "index").read_bytes() == index
    for step in ("stash", "checkout-b", "pack-refs", "commit"):
        assert saw[step] == b"0\n", step
    assert "A's commit" in git(repo, "log", "--format=%s", a["branch"]).splitlines()
    assert git(repo, "rev-parse", "--verify", "-q", "agent-side")
    # The daemon's git still works in B's worktree and runs nothing of A's.
    d.cli("discard", str(b["id"]))
    assert not mark.exists()


def test_the_daemon_runs_no_git_in_a_worktree_whose_git_files_were_repointed(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """Defence in depth, shown unsandboxed (where the agent can write them): a worktree
    whose commondir names another git dir fails the job with one line, before the
    daemon's git (leftover commits) runs there, and the branch is kept."""
    d = daemon_factory(DISPATCHER_SANDBOX="off").start()
    repo, name, mark = target_repo(d, tmp_path)
    repoint = agent(
        "repoint.sh",
        f'echo left > left.txt\ngit init -q --bare "$PWD/evil"\n'
        f'git config -f evil/config core.fsmonitor "touch {mark}"\n'
        'echo "$PWD/evil" > "$(git rev-parse --git-dir)/commondir"\n',
    )
    job = d.wait(d.submit(name, command=[repoint])["id"])
    assert job["state"] == "failed"
    assert "no longer points at" in job["error"] and "\n" not in job["error"], job["error"]
    assert not mark.exists()
    assert git(repo, "rev-parse", "--verify", "-q", job["branch"])


def test_a_global_git_config_an_agent_creates_is_never_read_by_the_daemons_git(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """The sandbox keeps the user's existing global git config read-only, but one that
    does not exist yet (here: the daemon's GIT_CONFIG_GLOBAL names a missing file) an
    agent can create, with core.fsmonitor set: the daemon's own git (the leftover
    commit, in the worktree) would then run it outside the box. The daemon's git reads
    the global config as it was at start."""
    d = daemon_factory()
    config = Path(d.env["GIT_CONFIG_GLOBAL"])
    config.unlink(missing_ok=True)
    d.start()
    repo, name, mark = target_repo(d, tmp_path)
    plant = agent(
        "plant.sh",
        f'printf "[core]\\n\\tfsmonitor = \\"touch {mark}\\"\\n" > "{config}"\n'
        "echo left > left.txt\n",  # so the daemon runs git status/add/commit here
    )
    job = d.wait(d.submit(name, command=[plant])["id"])
    assert config.read_text().count("fsmonitor") == 1  # the agent did plant it
    assert job["state"] == "succeeded", job["error"]
    assert git(repo, "show", f"{job['branch']}:left.txt") == "left"
    assert not mark.exists()

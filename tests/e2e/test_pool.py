"""The warm worktree pool, end to end: recycled trees are fast and leak nothing."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.daemon_fixture import Daemon
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]


def idle_trees(d: Daemon, repo_name: str) -> list[Path]:
    root = d.state_dir / "pool" / repo_name
    return sorted(root.glob("idle-*")) if root.is_dir() else []


def idle_inodes(d: Daemon, repo_name: str) -> set[int]:
    """The inodes of the idle trees; a tree the pool deletes meanwhile is left out
    (a stat right after the glob may find it gone)."""
    found = set()
    for tree in idle_trees(d, repo_name):
        try:
            found.add(tree.stat().st_ino)
        except FileNotFoundError:
            continue
    return found


def pool_daemon(daemon_factory: Callable[..., Daemon], size: int = 1) -> Daemon:
    return daemon_factory(DISPATCHER_POOL_SIZE=str(size)).start()


def wait_for_recycled(d: Daemon, repo_name: str, inode: int) -> None:
    """Until the tree a finished job used (a rename keeps its inode) is the only idle one.

    With a pool of one it displaces the refill made while the job ran; that tree is
    deleted after the recycled one is listed as idle, so waiting for both leaves the
    recycled tree as the one the next job takes.
    """
    wait_until(
        lambda: idle_inodes(d, repo_name) == {inode},
        "the released tree back in the pool, alone",
    )


# What a job sees: every path in its worktree but .git, written before it changes anything.
SNAPSHOT = 'find . -path ./.git -prune -o -print | sort > "$REPORT/$DISPATCHER_JOB_ID"\n'

# An agent that leaves every kind of trace: tracked edits, deletions, a commit,
# untracked and ignored files, a nested untracked directory, a nested git repo.
MESSY = (
    "echo changed > README.md\n"
    "rm src/app.py\n"
    "echo committed > committed.txt && git add committed.txt && git commit -qm agent\n"
    "echo untracked > untracked.txt\n"
    "mkdir -p build/deep && echo ignored > build/deep/out.log\n"
    "echo cache > debug.log\n"
    "mkdir -p node_modules/pkg && echo dep > node_modules/pkg/index.js\n"
    "mkdir -p vendor/lib && (cd vendor/lib && git init -q && echo x > x)\n"
)

BASE_FILES = {
    "README.md": "hello\n",
    "src/app.py": "print('hi')\n",
    ".gitignore": "*.log\nbuild/\nnode_modules/\n",
}


def test_a_recycled_worktree_holds_no_file_of_an_earlier_job(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = pool_daemon(daemon_factory)
    report = tmp_path / "report"
    report.mkdir()
    repo = init_repo(tmp_path / "r", files=BASE_FILES)
    name = d.add_repo(repo, "r")
    wait_until(lambda: idle_trees(d, name), "the pool to fill")
    messy = agent("messy.sh", MESSY)
    first = d.wait(d.submit(name, "mess", command=[messy])["id"])
    assert first["state"] == "succeeded"
    assert "recycled from the warm pool" in d.api.get(f"/jobs/{first['id']}/log").text
    inode = Path(first["worktree"]).stat().st_ino
    d.cli("discard", str(first["id"]))
    assert not Path(first["worktree"]).exists()
    assert not git(repo, "branch", "--list", first["branch"])  # released, then deleted
    wait_for_recycled(d, name, inode)

    looker = agent("look.sh", f'REPORT="{report}"\n' + SNAPSHOT)
    second = d.wait(d.submit(name, "look", command=[looker])["id"])
    assert second["state"] == "succeeded"
    assert "recycled from the warm pool" in d.api.get(f"/jobs/{second['id']}/log").text
    worktree = Path(second["worktree"])
    assert worktree.stat().st_ino == inode  # the very tree the messy job used
    seen = (report / str(second["id"])).read_text().splitlines()
    assert seen == [".", "./.gitignore", "./README.md", "./src", "./src/app.py"]
    assert (worktree / "README.md").read_text() == "hello\n"  # the tracked edit was reset
    assert git(worktree, "rev-parse", "HEAD") == second["base"]
    # The second job's branch starts at its own base, not at the first job's commits.
    assert git(repo, "rev-list", "--count", f"{second['base']}..{second['branch']}") == "0"


def test_keep_dirs_survive_recycling_but_nothing_else_does(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = pool_daemon(daemon_factory)
    report = tmp_path / "report"
    report.mkdir()
    files = {
        **BASE_FILES,
        ".dispatcher/triggers.yml": (
            "version: 1\nkeep: [node_modules]\ntriggers:\n  noop:\n    on: manual\n    prompt: x\n"
        ),
    }
    repo = init_repo(tmp_path / "r", files=files)
    name = d.add_repo(repo, "r")
    wait_until(lambda: idle_trees(d, name), "the pool to fill")
    first = d.wait(d.submit(name, "mess", command=[agent("messy.sh", MESSY)])["id"])
    inode = Path(first["worktree"]).stat().st_ino
    d.cli("discard", str(first["id"]))
    wait_for_recycled(d, name, inode)
    looker = agent("look.sh", f'REPORT="{report}"\n' + SNAPSHOT)
    second = d.wait(d.submit(name, "look", command=[looker])["id"])
    seen = (report / str(second["id"])).read_text().splitlines()
    assert "./node_modules/pkg/index.js" in seen  # kept: dependency installs are reused
    leaked = [
        p for p in seen
        if p.startswith(("./untracked", "./build", "./debug", "./vendor", "./committed"))
    ]  # fmt: skip
    assert leaked == []
    assert "./src/app.py" in seen  # a file the first job deleted is back


def test_pool_follows_the_default_branch_and_merge_returns_trees(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = pool_daemon(daemon_factory)
    repo = init_repo(tmp_path / "r", files=BASE_FILES)
    name = d.add_repo(repo, "r")
    wait_until(lambda: idle_trees(d, name), "the pool to fill")
    tip = commit_file(repo, "new.txt", "new\n", "main moves")
    wait_until(
        lambda: all(git(t, "rev-parse", "HEAD") == tip for t in idle_trees(d, name)),
        "the idle tree to follow main",
    )
    job = d.wait(d.submit(name, "x", command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    assert job["base"] == tip
    inode = Path(job["worktree"]).stat().st_ino
    d.cli("merge", str(job["id"]), "--strategy", "squash")
    assert (repo / "a.txt").read_text() == "a\n"
    assert git(repo, "status", "--porcelain") == ""
    # The merged job's own tree, not just any idle one (the refill made while it ran).
    wait_for_recycled(d, name, inode)
    # Every worktree git knows is the user's checkout or a pool tree.
    listed = [
        Path(line.split(" ", 1)[1])
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]
    assert all(p == repo or p.is_relative_to(d.state_dir / "pool") for p in listed), listed


def test_pool_survives_kill_9(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = pool_daemon(daemon_factory, size=2)
    repo = init_repo(tmp_path / "r", files=BASE_FILES)
    name = d.add_repo(repo, "r")
    wait_until(lambda: len(idle_trees(d, name)) == 2, "the pool to fill")
    gate = tmp_path / "go"
    hold = agent("hold.sh", f'while [ ! -f "{gate}" ]; do sleep 0.02; done\necho done > done.txt\n')
    job_id = d.submit(name, "x", command=[hold])["id"]
    d.wait(job_id, {"running"})
    d.stop(signal.SIGKILL)
    gate.touch()
    d.start()
    job = d.wait(job_id)
    assert job["state"] == "succeeded"
    assert git(repo, "show", f"{job['branch']}:done.txt") == "done"
    wait_until(lambda: len(idle_trees(d, name)) == 2, "the pool to be adopted and refilled")
    for tree in idle_trees(d, name):
        assert git(tree, "status", "--porcelain", "--ignored") == ""
    again = d.wait(d.submit(name, "y", command=["true"])["id"])
    assert again["state"] == "succeeded"
    assert "recycled from the warm pool" in d.api.get(f"/jobs/{again['id']}/log").text


def test_sparse_job_checks_out_only_its_dirs_commits_all_and_never_enters_the_pool(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = pool_daemon(daemon_factory)
    report = tmp_path / "report"
    report.mkdir()
    files = {**BASE_FILES, "docs/guide.md": "guide\n", "lib/deep/x.py": "x = 1\n"}
    repo = init_repo(tmp_path / "r", files=files)
    name = d.add_repo(repo, "r")
    wait_until(lambda: idle_trees(d, name), "the pool to fill")
    pooled = idle_inodes(d, name)
    # The agent sees only src/ and top-level files, then writes inside and outside its dirs.
    sparse_agent = agent(
        "sparse.sh",
        f'REPORT="{report}"\n' + SNAPSHOT + "echo more > src/new.py\n"
        "mkdir -p lib/other && echo out > lib/other/made.py\n",
    )
    job = d.wait(d.submit(name, "sparse", command=[sparse_agent], sparse=["src/"])["id"])
    assert job["state"] == "succeeded", job["error"]
    assert job["sparse"] == ["src"]
    log = d.api.get(f"/jobs/{job['id']}/log").text
    assert "worktree: fresh sparse checkout of src" in log
    worktree = Path(job["worktree"])
    assert worktree.stat().st_ino not in pooled
    seen = (report / str(job["id"])).read_text().splitlines()
    assert seen == [".", "./.gitignore", "./README.md", "./src", "./src/app.py"]
    # Both new files are committed on the job's branch, the one outside src/ too.
    changed = git(repo, "diff", "--name-only", f"{job['base']}..{job['branch']}").split()
    assert changed == ["lib/other/made.py", "src/new.py"]
    assert job["files_changed"] == 2
    # The user's checkout stays full and un-sparse.
    assert (repo / "docs" / "guide.md").is_file()
    main_sparse = subprocess.run(
        ["git", "config", "--get", "core.sparseCheckout"], cwd=repo, capture_output=True, text=True
    )
    assert main_sparse.stdout.strip() in ("", "false")
    # Discarded, the sparse tree is removed, not recycled: the next job gets a full tree.
    inode = worktree.stat().st_ino
    d.cli("discard", str(job["id"]))
    assert not worktree.exists()
    looker = agent("look.sh", f'REPORT="{report}"\n' + SNAPSHOT)
    full = d.wait(d.submit(name, "full", command=[looker])["id"])
    assert full["state"] == "succeeded"
    assert Path(full["worktree"]).stat().st_ino != inode
    assert "./docs/guide.md" in (report / str(full["id"])).read_text().splitlines()
    assert inode not in idle_inodes(d, name)
    # A path leaving the repo is refused at the door, with the reason.
    resp = d.api.post("/jobs", json={"repo": name, "prompt": "x", "sparse": ["../etc"]})
    assert resp.status_code == 422, resp.text
    assert "inside the repo" in resp.text


def test_pool_size_per_repo_is_kept_and_zero_turns_the_pool_off(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = pool_daemon(daemon_factory, size=2)
    warm = init_repo(tmp_path / "warm", files=BASE_FILES)
    cold = init_repo(tmp_path / "cold", files=BASE_FILES)
    d.add_repo(warm, "warm")
    d.cli("repo", "add", str(cold), "--name", "cold", "--pool-size", "0")
    assert d.api.get("/repos/cold").json()["pool_size"] == 0
    wait_until(lambda: len(idle_trees(d, "warm")) == 2, "the warm repo's pool to fill")
    job = d.wait(d.submit("cold", "x", command=["true"])["id"])
    assert job["state"] == "succeeded"
    assert "worktree: fresh checkout" in d.api.get(f"/jobs/{job['id']}/log").text
    assert idle_trees(d, "cold") == []


def test_show_says_when_a_job_waited_for_a_cold_checkout(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = pool_daemon(daemon_factory)
    warm = init_repo(tmp_path / "warm", files=BASE_FILES)
    cold = init_repo(tmp_path / "cold", files=BASE_FILES)
    d.add_repo(warm, "warm")
    # A file where the cold repo's pool directory goes: its pool can never make a tree,
    # so every job of it waits for a checkout of its own.
    (d.state_dir / "pool").mkdir(exist_ok=True)
    (d.state_dir / "pool" / "cold").write_text("in the way\n")
    d.add_repo(cold, "cold")
    wait_until(lambda: idle_trees(d, "warm"), "the warm repo's pool to fill")

    job = d.wait(d.submit("cold", "x", command=["true"])["id"])
    assert job["state"] == "succeeded"
    assert job["worktree_source"] == "cold"
    assert job["worktree_wait_s"] is not None and job["worktree_wait_s"] >= 0
    shown = d.cli("show", str(job["id"])).stdout
    assert "worktree from  cold, " in shown
    assert "the warm pool had none idle" in shown
    assert "worktree: cold checkout" in d.api.get(f"/jobs/{job['id']}/log").text

    pooled = d.wait(d.submit("warm", "x", command=["true"])["id"])
    assert pooled["worktree_source"] == "pool"
    shown = d.cli("show", str(pooled["id"])).stdout
    assert "worktree from  pool, " in shown and "none idle" not in shown
    sparse = d.wait(d.submit("warm", "x", command=["true"], sparse=["src"])["id"])
    assert sparse["worktree_source"] == "fresh"  # it never uses the pool: not cold

"""Costs that stay flat with the number of repos (issue 18), end to end.

The daemon's threads do not grow with its repos (one inotify reader for every
watch), ``file_change`` triggers still fire on each repo, repos come and go at
run time, and a restart hands out a pool tree it has not checked yet only
after checking it: a job never gets a dirty tree.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemon_fixture import Daemon, hold_fault, release_fault
from tests.e2e.test_pool import BASE_FILES, SNAPSHOT, idle_trees
from tests.e2e.test_triggers import FILES_YML
from tests.gitutil import git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]


def threads(d: Daemon) -> int:
    assert d.proc is not None
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def jobs_of(d: Daemon, repo: str) -> list[dict[str, Any]]:
    return list(d.api.get("/jobs", params={"repo": repo, "limit": 100}).json()["items"])


def trigger_repo(tmp_path: Path, agent: Agent, name: str) -> Path:
    bot = agent("ok.sh", "exit 0\n")
    return init_repo(
        tmp_path / name,
        files={"README.md": "hello\n", ".dispatcher/triggers.yml": FILES_YML.replace("BOT", bot)},
    )


def change_docs(repo: Path, name: str) -> None:
    (repo / "docs").mkdir(exist_ok=True)
    (repo / "docs" / name).write_text(f"{name}\n")


def wait_for_doc_job(d: Daemon, repo: str, doc: str) -> None:
    wait_until(
        lambda: any(doc in j["prompt"] for j in jobs_of(d, repo)),
        f"a file_change job of {repo} for {doc}",
        timeout=60,
    )


def test_threads_stay_flat_and_file_triggers_fire_on_every_repo(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_POOL_SIZE="0").start()
    repos = [trigger_repo(tmp_path, agent, "r00")]
    d.add_repo(repos[0], "r00")
    one = threads(d)
    for i in range(1, 20):
        repos.append(trigger_repo(tmp_path, agent, f"r{i:02d}"))
        d.add_repo(repos[i], f"r{i:02d}")
    # Was three threads more per repo (an emitter per watch: git dir, refs, work tree).
    assert threads(d) <= one + 4, (one, threads(d))
    for i in (0, 9, 19):
        change_docs(repos[i], f"note{i}.md")
    for i in (0, 9, 19):
        wait_for_doc_job(d, f"r{i:02d}", f"note{i}.md")

    # At run time: one removed (its watches go), one added (watched at once), the
    # removed one added back under the same name (watched again).
    d.api.delete("/repos/r05").raise_for_status()
    change_docs(repos[5], "while-removed.md")
    late = trigger_repo(tmp_path, agent, "late")
    d.add_repo(late, "late")
    change_docs(late, "late.md")
    wait_for_doc_job(d, "late", "late.md")
    d.add_repo(repos[5], "r05")
    change_docs(repos[5], "back.md")
    wait_for_doc_job(d, "r05", "back.md")
    assert [j["prompt"] for j in jobs_of(d, "r05")] == ['Docs changed: ["docs/back.md"]']
    wait_until(lambda: not d.api.get("/health").json()["jobs_active"], "every job to end")
    assert threads(d) <= one + 4, (one, threads(d))


def test_a_restarted_daemon_hands_out_an_unchecked_pool_tree_only_clean(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_POOL_SIZE="1", DISPATCHER_FAULT_DIR=str(faults)).start()
    repo = init_repo(tmp_path / "r", files=BASE_FILES)
    name = d.add_repo(repo, "r")
    wait_until(lambda: idle_trees(d, name), "the pool to fill")
    d.stop(signal.SIGTERM)
    [tree] = idle_trees(d, name)
    inode = tree.stat().st_ino
    (tree / "README.md").write_text("edited while the daemon was down\n")
    (tree / "untracked.txt").write_text("x\n")
    (tree / "debug.log").write_text("ignored\n")
    # Left locked (a daemon killed mid-take): `git worktree move` refuses a locked tree,
    # so only the check the job makes first (which unlocks it) lets the job have it.
    git(repo, "worktree", "lock", "--reason", "left by a killed daemon", str(tree))

    # Restarted with the pool's background check of that tree held: the job comes first.
    reached = hold_fault(faults, "pool.check-leftover")
    d.start()
    wait_until(reached.exists, "the pool's start-up check to be reached (and held)")
    report = tmp_path / "report"
    report.mkdir()
    looker = agent("look.sh", f'REPORT="{report}"\n' + SNAPSHOT)
    job = d.wait(d.submit(name, "look", command=[looker])["id"])
    assert job["state"] == "succeeded"
    assert "recycled from the warm pool" in d.api.get(f"/jobs/{job['id']}/log").text
    worktree = Path(job["worktree"])
    assert worktree.stat().st_ino == inode  # the very tree, taken before its check ran
    seen = (report / str(job["id"])).read_text().splitlines()
    assert seen == [".", "./.gitignore", "./README.md", "./src", "./src/app.py"]
    assert (worktree / "README.md").read_text() == "hello\n"

    release_fault(faults, "pool.check-leftover")
    wait_until(lambda: len(idle_trees(d, name)) == 1, "the pool to refill")
    for idle in idle_trees(d, name):
        wait_until(
            lambda idle=idle: git(idle, "status", "--porcelain", "--ignored") == "",
            "a clean idle tree",
        )

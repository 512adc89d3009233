"""The user's checkout is never damaged by a merge: concurrent merges, ignored files in
the way, the user's own git commands in the window, and kill -9 inside it. The real
daemon, real repositories, real concurrent HTTP requests and a real SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixture import Daemon, hold_fault, pid_alive, release_fault
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]


def post_merge(d: Daemon, job_id: int, strategy: str = "merge") -> httpx.Response:
    """One merge request on its own connection (so that several can be in flight)."""
    with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {d.token}"}) as c:
        return c.post(f"/jobs/{job_id}/merge", json={"strategy": strategy}, timeout=60)


def assert_checkout_pristine(repo: Path) -> None:
    """No change of any kind: tracked, staged, untracked or ignored; index == HEAD;
    no lock or scratch file of ours or git's left in the git dir."""
    assert git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""
    assert git(repo, "write-tree") == git(repo, "rev-parse", "HEAD^{tree}")
    leftovers = sorted(p.name for p in (repo / ".git").glob("index*") if p.name != "index")
    assert leftovers == [], leftovers


def file_job(d: Daemon, name: str, agent: Agent, rel: str, content: str) -> dict[str, Any]:
    script = agent(f"w-{rel.replace('/', '_')}.sh", f'mkdir -p "$(dirname {rel})"\n'
                   f'printf "%s\\n" "{content}" > {rel}\n')  # fmt: skip
    job = d.wait(d.submit(name, f"write {rel}", command=[script])["id"])
    assert job["state"] == "succeeded", job
    return job


# ------------------------------------------------------------------ concurrency


def test_concurrent_merges_into_the_checked_out_branch_both_land_cleanly(
    daemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    """Two merges of different jobs into `main`, checked out in the user's checkout,
    requested at the same moment, several rounds: both land, one after the other, and
    the checkout stays exactly at HEAD; a following merge works."""
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    name = daemon.add_repo(repo)
    # Many files per job widen the window in which two updates of one checkout overlap.
    many = agent(
        "many.sh",
        'i=0; while [ $i -lt 300 ]; do echo "$DISPATCHER_JOB_ID $i" > '
        '"j$DISPATCHER_JOB_ID-$i.txt"; i=$((i+1)); done\n',
    )
    for _ in range(3):
        jobs = [daemon.wait(daemon.submit(name, "many", command=[many])["id"]) for _ in range(2)]
        before = git(repo, "rev-parse", "main")
        together = threading.Barrier(2, timeout=30)

        def merge(job: dict[str, Any], together: threading.Barrier = together) -> httpx.Response:
            together.wait()
            return post_merge(daemon, job["id"])

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(merge, jobs))
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        assert git(repo, "rev-list", "--count", "--merges", f"{before}..main") == "2"
        for job in jobs:
            assert daemon.job(job["id"])["state"] == "merged"
            assert (repo / f"j{job['id']}-299.txt").read_text() == f"{job['id']} 299\n"
        assert_checkout_pristine(repo)
    third = file_job(daemon, name, agent, "third.txt", "third")
    assert post_merge(daemon, third["id"]).status_code == 200
    assert (repo / "third.txt").read_text() == "third\n"
    assert_checkout_pristine(repo)


def test_concurrent_conflicting_merges_one_lands_one_is_refused(
    daemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    name = daemon.add_repo(repo)
    jobs = [file_job(daemon, name, agent, "README.md", f"job {i}") for i in range(2)]
    before = git(repo, "rev-parse", "main")
    together = threading.Barrier(2, timeout=30)

    def merge(job: dict[str, Any]) -> httpx.Response:
        together.wait()
        return post_merge(daemon, job["id"])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(merge, jobs))
    assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
    refused = next(r for r in results if r.status_code == 409)
    assert refused.json()["error"]["code"] == "merge_conflict"
    assert git(repo, "rev-list", "--count", f"{before}..main") == "2"  # one merge commit + job
    assert_checkout_pristine(repo)


# ------------------------------------------------------------------ ignored files


@pytest.mark.parametrize(
    ("mine", "adds"),
    [("secrets.env", "secrets.env"), ("build", "build/out.txt")],
    ids=["same-path", "leading-directory"],
)
def test_ignored_file_in_the_way_is_refused_and_kept(
    daemon: Daemon, tmp_path: Path, agent: Agent, mine: str, adds: str
) -> None:
    """`git merge --ff-only` (and `read-tree -u`) overwrite ignored files by design: a
    job adding a file where the user keeps an ignored one is refused with its path."""
    repo = init_repo(tmp_path / "app", files={".gitignore": f"/{mine}\n", "README.md": "hi\n"})
    name = daemon.add_repo(repo)
    script = agent(
        "force.sh",
        f'mkdir -p "$(dirname {adds})"\necho job > {adds}\necho other > other.txt\n'
        f"git add -f {adds} other.txt\ngit commit -qm 'add {adds}'\n",
    )
    job = daemon.wait(daemon.submit(name, command=[script])["id"])
    assert job["commits_ahead"] == 1
    (repo / mine).write_text("API_KEY=mine\n")
    before = git(repo, "rev-parse", "main")
    for strategy in ("ff", "merge"):
        resp = post_merge(daemon, job["id"], strategy)
        assert resp.status_code == 409, resp.text
        error = resp.json()["error"]
        assert error["code"] == "dirty_checkout"
        assert error["details"]["files"] == [mine]
        assert mine in error["message"]
        assert (repo / mine).read_text() == "API_KEY=mine\n"
        assert git(repo, "rev-parse", "main") == before
        assert not (repo / "other.txt").exists()
        assert git(repo, "status", "--porcelain", "--ignored") == f"!! {mine}"
    assert daemon.job(job["id"])["state"] == "succeeded"
    (repo / mine).unlink()  # out of the way: the merge goes through
    assert post_merge(daemon, job["id"]).status_code == 200
    assert (repo / adds).read_text() == "job\n"


# ------------------------------------------------------------------ the user in the window


@pytest.mark.parametrize(
    ("window", "user_command"),
    [
        ("merge.computed", ("reset", "-q", "--hard")),
        ("merge.files-updated", ("reset", "-q", "--soft")),
    ],
    ids=["before-the-checkout-is-locked", "after-the-files-moved"],
)
def test_target_reset_to_an_ancestor_in_the_window_is_refused(
    daemon_factory: Callable[..., Daemon],
    tmp_path: Path,
    agent: Agent,
    window: str,
    user_command: tuple[str, ...],
) -> None:
    """The user moves the checked-out target back to an ancestor after the daemon read
    it and before it lands: a compare-and-swap refuses (409 ref_moved) and the job's
    files are not left in the checkout."""
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    name = d.add_repo(repo)
    job = file_job(d, name, agent, "job.txt", "job")
    ancestor = git(repo, "rev-parse", "main")
    commit_file(repo, "user.txt", "user\n", "user work")
    reached = hold_fault(faults, window)
    with ThreadPoolExecutor(1) as pool:
        pending: Future[httpx.Response] = pool.submit(post_merge, d, job["id"])
        wait_until(reached.exists, "the daemon to reach the fault point", 30)
        git(repo, *user_command, ancestor)
        release_fault(faults, window)
        resp = pending.result(timeout=60)
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"] == "ref_moved"
    assert git(repo, "rev-parse", "main") == ancestor
    assert not (repo / "job.txt").exists()
    assert d.job(job["id"])["state"] == "succeeded"
    if user_command[-1] == "--hard":
        assert_checkout_pristine(repo)
    else:  # a soft reset keeps the index (and the user's files) at the commit left
        assert not (repo / ".git" / "index.lock").exists()
        assert (repo / "user.txt").read_text() == "user\n"
        assert git(repo, "status", "--porcelain") == "A  user.txt"


def test_a_git_command_running_in_the_checkout_makes_the_merge_wait_its_turn(
    daemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    """The merge takes the checkout's index.lock as git does: while the user's git holds
    it the merge is refused (nothing moved); afterwards it goes through."""
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    name = daemon.add_repo(repo)
    job = file_job(daemon, name, agent, "job.txt", "job")
    before = git(repo, "rev-parse", "main")
    (repo / ".git" / "index.lock").write_text("")  # what a running `git commit` holds
    resp = post_merge(daemon, job["id"])
    assert resp.status_code == 409, resp.text
    assert "another git command is running" in resp.json()["error"]["message"]
    assert git(repo, "rev-parse", "main") == before
    assert not (repo / "job.txt").exists()
    assert (repo / ".git" / "index.lock").read_text() == ""  # the user's lock is left alone
    (repo / ".git" / "index.lock").unlink()
    assert post_merge(daemon, job["id"]).status_code == 200
    assert_checkout_pristine(repo)


# ------------------------------------------------------------------ kill -9 in the window


@pytest.mark.timeout(180)  # 2,000 files, twice, on a shared machine
@pytest.mark.parametrize("window", ["merge.files-updated", "merge.ref-moved"])
def test_kill_9_inside_a_merge_into_the_checkout_is_finished_or_undone(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent, window: str
) -> None:
    """kill -9 of the daemon while a squash of 2,000 new files updates the user's
    checkout: after the restart the checkout is exactly as before (no untracked files,
    no index.lock) or exactly as the merge makes it, with the job `merged`; the next
    merge works."""
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n", "keep.txt": "keep\n"})
    name = d.add_repo(repo)
    many = agent(
        "many.sh",
        "mkdir gen\ni=0; while [ $i -lt 2000 ]; do echo $i > gen/f$i.txt; i=$((i+1)); done\n"
        "echo changed > keep.txt\n",
    )
    job = d.wait(d.submit(name, "many", command=[many])["id"])
    assert job["state"] == "succeeded", job
    old = git(repo, "rev-parse", "main")
    reached = hold_fault(faults, window)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post_merge, d, job["id"], "squash")
        wait_until(reached.exists, "the daemon to reach the fault point", 30)
        if window == "merge.files-updated":  # the files really were written
            assert (repo / "gen" / "f1999.txt").exists()
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        with pytest.raises(httpx.TransportError):
            pending.result(timeout=60)
    release_fault(faults, window)
    d.start()
    after = d.job(job["id"])
    if window == "merge.files-updated":
        assert git(repo, "rev-parse", "main") == old
        assert after["state"] == "succeeded"
        assert not (repo / "gen").exists()
        assert (repo / "keep.txt").read_text() == "keep\n"
    else:
        assert git(repo, "rev-parse", "main^") == old
        assert after["state"] == "merged"
        assert after["merged_sha"] == git(repo, "rev-parse", "main")
        assert after["merge_strategy"] == "squash"
        assert len(list((repo / "gen").iterdir())) == 2000
        assert (repo / "keep.txt").read_text() == "changed\n"
    assert_checkout_pristine(repo)
    assert not list((d.state_dir / "merges").glob("*"))
    if window == "merge.files-updated":
        assert post_merge(d, job["id"], "squash").status_code == 200
        assert (repo / "gen" / "f1999.txt").read_text() == "1999\n"
    nxt = file_job(d, name, agent, "next.txt", "next")
    assert post_merge(d, nxt["id"]).status_code == 200
    assert (repo / "next.txt").read_text() == "next\n"
    assert_checkout_pristine(repo)


# ------------------------------------------------------------------ reconcile at start


def test_restart_marks_merged_the_jobs_whose_work_the_target_already_holds(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    d = daemon_factory().start()
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    name = d.add_repo(repo)
    by_hand = file_job(d, name, agent, "hand.txt", "hand")
    kept = file_job(d, name, agent, "kept.txt", "kept")
    empty = d.wait(d.submit(name, command=[agent("noop.sh", "true\n")])["id"])
    assert empty["state"] == "succeeded" and empty["commits_ahead"] == 0
    git(repo, "merge", "-q", "--no-ff", "-m", "merged by hand", by_hand["branch"])
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    garbage = d.state_dir / "merges" / "99.json"
    garbage.parent.mkdir(exist_ok=True)
    garbage.write_text("{not json")  # a journal that cannot be read never blocks start-up
    d.start()
    assert not garbage.exists()
    assert [p.name.startswith("99.json.bad-") for p in garbage.parent.iterdir()] == [True]
    assert "merge journal" in d.log_path.read_text()
    merged = d.job(by_hand["id"])
    assert merged["state"] == "merged"
    assert merged["merged_into"] == "main"
    assert d.job(kept["id"])["state"] == "succeeded"  # not in main
    assert d.job(empty["id"])["state"] == "succeeded"  # no commits: never "merged"


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below ``pid``: the git a daemon started."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def kill_if_same(pid: int, start: str) -> None:
    """SIGKILL ``pid`` only if it is still the process that started at ``start``."""
    fields = _stat(pid)
    if fields is not None and fields[19] == start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(180)  # 2,000 files, twice, on a shared machine
@pytest.mark.parametrize("crash", ["power-loss", "daemon-only"])
def test_crash_while_git_writes_the_checkout_leaves_it_as_it_was_or_as_merged(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent, crash: str
) -> None:
    """The daemon dies while git is half-way through writing 2,000 new files into the
    user's checkout (held there by a smudge filter). power-loss: git dies too, leaving
    its files and locks; daemon-only: the orphaned git goes on, and the next daemon
    waits for it. Either way the restart leaves the checkout exactly as before (or
    exactly as merged, with the job `merged`), and the next merge works."""
    d = daemon_factory().start()
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    name = d.add_repo(repo)
    many = agent(
        "many.sh",
        "mkdir gen\ni=0; while [ $i -lt 2000 ]; do echo $i > gen/f$i.txt; i=$((i+1)); done\n",
    )
    job = d.wait(d.submit(name, "many", command=[many])["id"])
    assert job["state"] == "succeeded", job
    old = git(repo, "rev-parse", "main")
    marks = tmp_path / "marks"
    marks.mkdir()
    # About half of the files sort before gen/f5.txt: git stops there, half done.
    git(repo, "config", "filter.gate.smudge",
        f"touch '{marks}/in'; while [ ! -f '{marks}/go' ]; do sleep 0.02; done; cat")  # fmt: skip
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("gen/f5.txt filter=gate\n")
    with ThreadPoolExecutor(2) as pool:
        pending = pool.submit(post_merge, d, job["id"], "ff")
        wait_until((marks / "in").exists, "the merge to reach the gated filter", 30)
        assert d.proc is not None
        git_processes = descendants(d.proc.pid)
        assert git_processes
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        with pytest.raises(httpx.TransportError):
            pending.result(timeout=60)
        if crash == "power-loss":
            for pid, start in git_processes:
                kill_if_same(pid, start)
            (marks / "go").touch()
            d.start()
        else:
            starting = pool.submit(d.start)
            # The new daemon says it waits for the orphan (or, not waiting, is up).
            wait_until(
                lambda: starting.done() or says(d, "waiting for git left running"),
                "the new daemon to wait for the orphaned git, or to be up",
                60,
            )
            (marks / "go").touch()
            starting.result(timeout=60)
            wait_until(
                lambda: not any(pid_alive(pid) for pid, _ in git_processes),
                "the orphaned git processes to end",
                60,
            )
    after = d.job(job["id"])
    if git(repo, "rev-parse", "main") == old:
        assert after["state"] == "succeeded"
        assert not (repo / "gen").exists()
    else:
        assert git(repo, "rev-parse", "main") == job["head"]
        assert after["state"] == "merged"
    assert_checkout_pristine(repo)
    if after["state"] == "succeeded":
        assert post_merge(d, job["id"], "ff").status_code == 200
        assert (repo / "gen" / "f1999.txt").read_text() == "1999\n"
        assert_checkout_pristine(repo)


def says(d: Daemon, text: str) -> bool:
    return d.log_path.exists() and text in d.log_path.read_text()


def test_kill_9_after_a_branch_moved_and_before_the_job_said_so_records_the_merge(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    """A squash into a branch that is not checked out: the ref moved, then the daemon
    died before recording it. The journal makes the job `merged` at the next start
    (a squash commit does not contain the job's head, so nothing else could tell)."""
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    repo = init_repo(tmp_path / "app", files={"README.md": "hello\n"})
    git(repo, "branch", "release")
    name = d.add_repo(repo)
    job = file_job(d, name, agent, "job.txt", "job")
    reached = hold_fault(faults, "merge.landed")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            lambda: d.api.post(
                f"/jobs/{job['id']}/merge", json={"strategy": "squash", "into": "release"}
            )
        )
        wait_until(reached.exists, "the daemon to reach the fault point", 30)
        landed = git(repo, "rev-parse", "release")
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        with pytest.raises(httpx.TransportError):
            pending.result(timeout=60)
    release_fault(faults, "merge.landed")
    d.start()
    after = d.job(job["id"])
    assert after["state"] == "merged", after
    assert (after["merged_sha"], after["merged_into"], after["merge_strategy"]) == (
        landed,
        "release",
        "squash",
    )
    assert git(repo, "show", "release:job.txt") == "job"
    assert not list((d.state_dir / "merges").glob("*"))

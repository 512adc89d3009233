"""The debouncer as a table with fake times; the watcher with real inotify and real git.

Watcher tests never sleep a fixed time: they wait on a condition with a
deadline. To show that something did *not* happen, they make a later change
in a second repo that travels the same path with the same quiet period and
wait for that one instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher.errors import InvalidInput
from dispatcher.git.refs import common_dir
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g
from tests.waiting import wait_until
from triggers.watch import Debouncer, RepoWatcher
from triggers.watches import InotifyWatches, ObserverWatches

DEADLINE = 30.0  # seconds; generous for a loaded CI machine, reached only on failure


# --- Debouncer ---------------------------------------------------------------------

# Steps: ("touch", key, time, item) or ("due", time, expected [(key, items)]).
Step = tuple[object, ...]


@pytest.mark.parametrize(
    ("quiet", "max_wait", "steps"),
    [
        pytest.param(
            1.0,
            None,
            [("touch", "a", 0.0, None), ("due", 0.99, []), ("due", 1.0, [("a", [])])],
            id="fires-after-quiet",
        ),
        pytest.param(
            1.0,
            None,
            [
                ("touch", "a", 0.0, None),
                ("touch", "a", 0.8, None),
                ("due", 1.5, []),
                ("due", 1.8, [("a", [])]),
                ("due", 5.0, []),  # handed out once
            ],
            id="touch-extends-quiet",
        ),
        pytest.param(
            1.0,
            3.0,
            [
                ("touch", "a", 0.0, None),
                ("touch", "a", 0.9, None),
                ("touch", "a", 1.8, None),
                ("touch", "a", 2.7, None),
                ("due", 2.99, []),
                ("due", 3.0, [("a", [])]),  # still busy, but max_wait since the first touch
                ("touch", "a", 3.1, None),
                ("due", 4.0, []),  # a new batch starts from its own first touch
                ("due", 4.1, [("a", [])]),
            ],
            id="max-wait-bounds-a-busy-key",
        ),
        pytest.param(
            1.0,
            None,
            [
                *[("touch", "a", t / 2, None) for t in range(20)],  # 0.0 .. 9.5
                ("due", 9.99, []),
                ("due", 10.0, [("a", [])]),  # default max_wait: 10 x quiet
            ],
            id="default-max-wait",
        ),
        pytest.param(
            2.0,
            1.0,
            [("touch", "a", 0.0, None), ("due", 1.5, []), ("due", 2.0, [("a", [])])],
            id="max-wait-never-shorter-than-quiet",
        ),
        pytest.param(
            1.0,
            None,
            [
                ("touch", "a", 0.0, "x.py"),
                ("touch", "a", 0.1, "y.py"),
                ("touch", "a", 0.2, "x.py"),
                ("touch", "a", 0.3, None),
                ("touch", "a", 0.4, "z.py"),
                ("due", 1.4, [("a", ["x.py", "y.py", "z.py"])]),
                ("touch", "a", 2.0, "x.py"),
                ("due", 3.0, [("a", ["x.py"])]),  # items belong to one batch
            ],
            id="items-deduplicated-first-seen-order",
        ),
        pytest.param(
            1.0,
            None,
            [
                ("touch", "b", 0.0, None),
                ("touch", "a", 0.5, None),
                ("touch", "c", 0.7, None),
                ("touch", "b", 0.6, None),
                ("due", 1.55, [("a", [])]),
                ("due", 1.7, [("b", []), ("c", [])]),
            ],
            id="keys-independent-in-first-touch-order",
        ),
        pytest.param(
            0.0,
            None,
            [("touch", "a", 5.0, None), ("due", 5.0, [("a", [])])],
            id="zero-quiet-fires-at-once",
        ),
    ],
)
def test_debouncer(quiet: float, max_wait: float | None, steps: list[Step]) -> None:
    d: Debouncer[str, str] = Debouncer(quiet, max_wait=max_wait)
    for step in steps:
        if step[0] == "touch":
            _, key, now, item = step
            d.touch(key, now, item=item)  # type: ignore[arg-type]
        else:
            _, now, expected = step
            assert d.due(now) == expected, step  # type: ignore[arg-type]


def test_debouncer_next_deadline_and_per_key_quiet() -> None:
    d: Debouncer[str, str] = Debouncer(1.0, max_wait=5.0)
    assert d.next_deadline() is None
    d.touch("a", 0.0)
    d.touch("b", 0.5)
    assert d.next_deadline() == 1.0
    d.set_quiet("a", 3.0)
    assert d.quiet_for("a") == 3.0
    assert d.next_deadline() == 1.5  # b's now
    assert d.due(1.5) == [("b", [])]
    assert d.next_deadline() == 3.0
    assert d.due(2.9) == []
    assert d.due(3.0) == [("a", [])]
    d.set_quiet("a", None)
    assert d.quiet_for("a") == 1.0
    assert d.max_wait_for("a") == 5.0


def test_debouncer_discard_and_forget() -> None:
    d: Debouncer[str, str] = Debouncer(1.0)
    d.set_quiet("a", 4.0)
    d.touch("a", 0.0, item="x")
    assert "a" in d
    assert len(d) == 1
    d.discard("a")
    assert "a" not in d
    assert d.due(100.0) == []
    assert d.quiet_for("a") == 4.0  # discard keeps the override
    d.forget("a")
    assert d.quiet_for("a") == 1.0


def test_debouncer_refuses_negative_times() -> None:
    with pytest.raises(ValueError, match="negative"):
        Debouncer(-1.0)
    with pytest.raises(ValueError, match="negative"):
        Debouncer[str, str](1.0).set_quiet("a", -0.5)


# --- RepoWatcher with real watchdog ----------------------------------------------


class Recorder:
    """Collects callback calls from the watcher's thread; waits on them with a deadline."""

    def __init__(self) -> None:
        self.refs: list[str] = []
        self.files: list[tuple[str, list[str]]] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()
        self.fail_refs = 0  # raise in on_refs this many times

    def on_refs(self, repo: str) -> None:
        with self._cond:
            self.refs.append(repo)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()
            if self.fail_refs:
                self.fail_refs -= 1
                raise RuntimeError("callback exploded")

    def on_files(self, repo: str, paths: list[str]) -> None:
        with self._cond:
            self.files.append((repo, paths))
            self._cond.notify_all()

    def wait(self, what: str, predicate: Callable[[], bool]) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=DEADLINE):
                raise AssertionError(
                    f"timed out waiting for {what}: refs={self.refs} files={self.files}"
                )

    def wait_refs(self, repo: str, count: int = 1) -> None:
        self.wait(f"on_refs({repo!r}) x{count}", lambda: self.refs.count(repo) >= count)

    def wait_files(self, repo: str, path: str) -> None:
        self.wait(
            f"on_files({repo!r}, [{path!r}])",
            lambda: any(r == repo and path in ps for r, ps in self.files),
        )

    def files_of(self, repo: str) -> list[list[str]]:
        with self._cond:
            return [ps for r, ps in self.files if r == repo]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def make_watcher(rec: Recorder) -> Iterator[Callable[..., RepoWatcher]]:
    made: list[RepoWatcher] = []

    def make(**kwargs: object) -> RepoWatcher:
        options: dict[str, object] = {"ref_quiet": 0.05, "file_quiet": 0.1, "poll_interval": None}
        options.update(kwargs)
        w = RepoWatcher(rec.on_refs, rec.on_files, git_dir=common_dir, **options)  # type: ignore[arg-type]
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


@pytest.fixture
def repo_a(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "a")


@pytest.fixture
def repo_b(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "b")


def test_a_commit_calls_on_refs(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    w = make_watcher()
    w.watch("a", repo_a, files=False)
    w.start()
    commit_file(repo_a, "x.txt", "1\n")
    rec.wait_refs("a")
    assert rec.threads == {"dispatcher-watch"}
    g(repo_a, "branch", "feature")  # a new branch is a ref change too
    rec.wait_refs("a", 2)
    g(repo_a, "branch", "-D", "feature")
    rec.wait_refs("a", 3)


def test_packed_refs_then_a_commit_is_still_seen(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    g(repo_a, "branch", "feature")
    w = make_watcher()
    w.watch("a", repo_a, files=False)
    w.start()
    g(repo_a, "pack-refs", "--all")  # rewrites packed-refs, deletes the loose refs
    rec.wait_refs("a")
    assert not (repo_a / ".git" / "refs" / "heads" / "main").exists()
    seen = len(rec.refs)
    commit_file(repo_a, "x.txt", "1\n")  # a loose ref again
    rec.wait_refs("a", seen + 1)
    seen = len(rec.refs)
    g(repo_a, "update-ref", "refs/heads/feature", "HEAD")  # a packed-only branch moves
    rec.wait_refs("a", seen + 1)


def test_objects_and_index_changes_do_not_call_on_refs(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path, repo_b: Path
) -> None:
    w = make_watcher()
    w.watch("a", repo_a, files=False)
    w.watch("b", repo_b, files=False)
    w.start()
    (repo_a / "staged.txt").write_text("staged\n")
    g(repo_a, "add", "staged.txt")  # writes .git/objects and .git/index, no ref
    g(repo_a, "tag", "v1")  # tags are not branches
    g(repo_a, "rev-parse", "HEAD")
    commit_file(repo_b, "x.txt", "1\n")  # the marker, after a's changes
    rec.wait_refs("b")
    assert "a" not in rec.refs


def test_a_work_tree_write_calls_on_files_once_with_the_relative_path(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    # The two writes below must fall into one quiet period: a second, not the usual
    # 0.1 s a loaded machine may pause this thread for between them.
    w = make_watcher(file_quiet=1.0)
    w.watch("a", repo_a, files=True)
    w.start()
    (repo_a / "src" / "pkg").mkdir(parents=True)
    target = repo_a / "src" / "pkg" / "mod.py"
    target.write_text("a = 1\n")
    target.write_text("a = 2\n")
    rec.wait_files("a", "src/pkg/mod.py")
    (repo_a / "notes.md").write_text("later\n")
    rec.wait_files("a", "notes.md")
    # One call per quiet batch; a path is never repeated within one, and the
    # first batch is not delivered again.
    assert rec.files_of("a") == [["src/pkg/mod.py"], ["notes.md"]]


def test_moves_and_deletes_are_reported(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    w = make_watcher()
    w.watch("a", repo_a, files=True)
    w.start()
    (repo_a / "README.md").rename(repo_a / "GUIDE.md")
    (repo_a / "gone.txt").write_text("x\n")
    (repo_a / "gone.txt").unlink()
    rec.wait_files("a", "gone.txt")
    paths = [p for batch in rec.files_of("a") for p in batch]
    assert {"README.md", "GUIDE.md", "gone.txt"} <= set(paths)


def test_a_renamed_directory_reports_its_files_under_both_paths(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    (repo_a / "src" / "sub").mkdir(parents=True)
    (repo_a / "src" / "a.py").write_text("a\n")
    (repo_a / "src" / "sub" / "b.py").write_text("b\n")
    w = make_watcher()
    w.watch("a", repo_a, files=True)
    w.start()
    (repo_a / "src").rename(repo_a / "lib")  # one rename: no event names a file
    rec.wait_files("a", "lib/sub/b.py")
    paths = {p for batch in rec.files_of("a") for p in batch}
    assert {"src/a.py", "src/sub/b.py", "lib/a.py", "lib/sub/b.py"} <= paths


def test_writes_inside_git_never_reach_on_files(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    nested = repo_a / "vendor" / "lib"
    init_repo(nested)  # a nested repo: its .git is inside the work tree too
    w = make_watcher()
    w.watch("a", repo_a, files=True)
    w.start()
    (repo_a / ".git" / "scratch").write_text("x\n")
    g(repo_a, "commit", "-q", "--allow-empty", "-m", "touch .git only")
    g(repo_a, "gc", "-q")
    commit_file(nested, "inner.txt", "1\n")  # writes the file and nested/.git
    (repo_a / "marker.txt").write_text("done\n")
    rec.wait_files("a", "marker.txt")
    paths = [p for batch in rec.files_of("a") for p in batch]
    assert paths
    assert not [p for p in paths if ".git" in p.split("/")]
    assert set(paths) <= {"marker.txt", "vendor/lib/inner.txt"}


def test_files_are_watched_only_when_asked_and_can_be_toggled(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path, repo_b: Path
) -> None:
    w = make_watcher()
    w.watch("a", repo_a, files=False)
    w.watch("b", repo_b, files=True)
    w.start()
    (repo_a / "one.txt").write_text("1\n")
    (repo_b / "marker1.txt").write_text("1\n")
    rec.wait_files("b", "marker1.txt")
    assert rec.files_of("a") == []
    w.watch("a", repo_a, files=True)  # toggled on while running
    w.watch("a", repo_a, files=True)  # idempotent
    (repo_a / "two.txt").write_text("2\n")
    rec.wait_files("a", "two.txt")
    w.watch("a", repo_a, files=False)  # and off again; refs still watched
    (repo_a / "three.txt").write_text("3\n")
    (repo_b / "marker2.txt").write_text("2\n")
    rec.wait_files("b", "marker2.txt")
    assert rec.files_of("a") == [["two.txt"]]
    commit_file(repo_a, "four.txt", "4\n")
    rec.wait_refs("a")


def test_set_file_quiet_per_repo(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path, repo_b: Path
) -> None:
    w = make_watcher()
    w.watch("a", repo_a, files=True)
    w.watch("b", repo_b, files=True)
    w.set_file_quiet("a", 600.0)
    w.start()
    (repo_a / "slow.txt").write_text("1\n")
    (repo_b / "marker.txt").write_text("1\n")
    rec.wait_files("b", "marker.txt")
    assert rec.files_of("a") == []  # still quiet-waiting
    w.set_file_quiet("a", 0.0)  # wakes the thread; the pending batch is now due
    rec.wait_files("a", "slow.txt")


def test_unwatch_stops_callbacks(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path, repo_b: Path
) -> None:
    w = make_watcher()
    w.watch("a", repo_a, files=True)
    w.watch("b", repo_b, files=True)
    w.start()
    commit_file(repo_a, "x.txt", "1\n")
    rec.wait_refs("a")
    # x.txt's own batch too: else it could be on its way to on_files as unwatch runs.
    rec.wait_files("a", "x.txt")
    w.unwatch("a")
    w.unwatch("a")  # no error
    w.unwatch("never-watched")
    refs_before, files_before = list(rec.refs), rec.files_of("a")
    commit_file(repo_a, "y.txt", "2\n")
    (repo_a / "z.txt").write_text("3\n")
    commit_file(repo_b, "marker.txt", "1\n")
    rec.wait_refs("b")
    rec.wait_files("b", "marker.txt")
    assert [r for r in rec.refs if r == "a"] == [r for r in refs_before if r == "a"]
    assert rec.files_of("a") == files_before
    w.watch("a", repo_a, files=False)  # and back
    commit_file(repo_a, "w.txt", "4\n")
    rec.wait_refs("a", refs_before.count("a") + 1)


def test_many_repos_share_two_threads_and_each_still_fires(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path, tmp_path: Path
) -> None:
    w = make_watcher()
    w.watch("a", repo_a, files=True)
    before = threading.active_count()
    w.start()
    assert threading.active_count() == before + 2  # the inotify reader and the delivery
    many = [init_repo(tmp_path / f"r{i}") for i in range(20)]
    for i, path in enumerate(many):
        w.watch(f"r{i}", path, files=True)  # while running: no thread more
    assert threading.active_count() == before + 2
    for i in (0, 7, 19):
        commit_file(many[i], f"x{i}.txt", "1\n")
    for i in (0, 7, 19):
        rec.wait_refs(f"r{i}")
        rec.wait_files(f"r{i}", f"x{i}.txt")
    # The same repo under two names: both get called; removing one keeps the other.
    w.watch("a-too", repo_a, files=False)
    w.unwatch("a")
    seen = rec.refs.count("a-too")
    commit_file(repo_a, "z.txt", "2\n")
    rec.wait_refs("a-too", seen + 1)
    for i in range(20):
        w.unwatch(f"r{i}")
    assert threading.active_count() == before + 2


def test_a_vanished_repo_stops_nothing_else(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path, repo_b: Path
) -> None:
    gone = init_repo(repo_a.with_name("gone"))
    w = make_watcher()
    for name, path in (("gone", gone), ("a", repo_a)):
        w.watch(name, path, files=True)
    shutil.rmtree(gone)  # between registration and start: logged, the others watched
    w.start()
    w.watch("b", repo_b, files=True)  # and one more while running
    for path, name in ((repo_a, "a"), (repo_b, "b")):
        commit_file(path, "x.txt", "1\n")
        rec.wait_refs(name)
        shutil.rmtree(repo_a, ignore_errors=True)  # while watched: b goes on
    rec.wait_files("b", "x.txt")
    w.unwatch("a")  # its watches went with its directory: no error
    w.unwatch("gone")


@pytest.fixture
def refs_of_a_and_b(
    make_watcher: Callable[..., RepoWatcher], repo_a: Path, repo_b: Path
) -> RepoWatcher:
    """A started watcher of the refs (only) of repos ``a`` and ``b``."""
    w = make_watcher()
    for name, path in (("a", repo_a), ("b", repo_b)):
        w.watch(name, path, files=False)
    w.start()
    return w


@pytest.mark.usefixtures("refs_of_a_and_b")
def test_job_branches_never_wake_the_ref_watcher(rec: Recorder, repo_a: Path, repo_b: Path) -> None:
    g(repo_a, "branch", "dispatcher/1-first")  # what the daemon writes for its jobs
    g(repo_a, "update-ref", "refs/heads/dispatcher/2-second", "HEAD")
    job_tree = repo_a.with_name("job-tree")  # a job's worktree, outside the repo
    g(repo_a, "worktree", "add", "-q", str(job_tree), "dispatcher/2-second")
    commit_file(repo_b, "marker.txt", "1\n")
    rec.wait_refs("b")
    assert rec.refs.count("a") <= 1  # at most once: the new refs/heads/dispatcher directory
    seen = rec.refs.count("a")
    commit_file(job_tree, "job.txt", "1\n")  # an agent's commit on its job branch
    g(repo_a, "branch", "dispatcher/3-third")
    commit_file(repo_b, "marker2.txt", "2\n")
    rec.wait_refs("b", 2)
    assert rec.refs.count("a") == seen
    g(repo_a, "branch", "feature")  # a user's branch still does
    rec.wait_refs("a", seen + 1)


def _dirs(top: Path, *, skip: str | None = None) -> int:
    """Directories at and below ``top``, not descending into ones named ``skip``."""
    count = 0
    for _root, dirnames, _ in os.walk(top):
        count += 1
        dirnames[:] = [d for d in dirnames if d != skip]
    return count


def test_git_directories_in_a_work_tree_are_never_watched(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    opened: list[InotifyWatches] = []

    def watches() -> InotifyWatches:
        opened.append(InotifyWatches())
        return opened[0]

    (repo_a / "src" / "pkg").mkdir(parents=True)
    w = make_watcher(watches=watches)
    w.watch("a", repo_a, files=True)
    w.start()
    git_dir = repo_a / ".git"

    def expected() -> int:  # the work tree but .git, the git dir itself, its refs/
        return _dirs(repo_a, skip=".git") + 1 + _dirs(git_dir / "refs")

    assert opened[0].watch_count() == expected()
    g(repo_a, "gc", "-q")  # new directories under .git/objects: not watched
    init_repo(repo_a / "vendor" / "lib")  # a nested repo: its work tree yes, its .git no
    (repo_a / "marker.txt").write_text("x\n")
    rec.wait_files("a", "marker.txt")
    wait_until(lambda: opened[0].watch_count() == expected(), "the nested work tree watched")


def test_the_observer_fallback_sees_refs_and_files(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path
) -> None:
    w = make_watcher(watches=ObserverWatches)
    w.watch("a", repo_a, files=True)
    w.watch("a-too", repo_a, files=True)  # the same watches twice: one emitter each
    w.start()
    commit_file(repo_a, "x.txt", "1\n")
    rec.wait_refs("a")
    rec.wait_files("a", "x.txt")
    w.unwatch("a-too")  # the other user keeps them
    (repo_a / "y.txt").write_text("2\n")
    (repo_a / ".git" / "scratch").write_text("x\n")
    rec.wait_files("a", "y.txt")
    assert not [p for ps in rec.files_of("a") for p in ps if p.startswith(".git")]


def test_the_poll_calls_on_refs_for_every_repo_without_events(
    make_watcher: Callable[..., RepoWatcher], rec: Recorder, repo_a: Path, repo_b: Path
) -> None:
    w = make_watcher(poll_interval=0.05)
    w.watch("a", repo_a, files=False)
    w.watch("b", repo_b, files=False)
    w.start()
    rec.wait_refs("a", 3)
    rec.wait_refs("b", 3)


def test_a_failing_callback_is_logged_and_the_thread_lives_on(
    make_watcher: Callable[..., RepoWatcher],
    rec: Recorder,
    repo_a: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="triggers.watch")
    rec.fail_refs = 1
    w = make_watcher()
    w.watch("a", repo_a, files=False)
    w.start()
    commit_file(repo_a, "x.txt", "1\n")
    rec.wait_refs("a")
    commit_file(repo_a, "y.txt", "2\n")
    rec.wait_refs("a", 2)
    assert "callback exploded" in caplog.text


def test_lifecycle(make_watcher: Callable[..., RepoWatcher], repo_a: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        make_watcher().watch("nope", tmp_path, files=False)
    never_started = make_watcher()
    never_started.watch("a", repo_a, files=True)
    never_started.stop()  # before start: fine
    never_started.stop()
    w = make_watcher()
    w.start()
    w.start()  # once
    w.stop()
    w.stop()
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        w.start()

"""Proof that an idle worktree is untouched since it was reset: inotify watches.

The warm pool resets a tree (``checkout -f`` + ``clean -ffdx``) when it enters the
pool, in the background; a job that takes it may skip the reset only if nothing
touched the tree since. Stat-walking 10,000 files to prove that costs about as much
as the reset itself (50 ms in Python on a loaded machine), so the proof is kept up
as it goes instead: an inotify watch on every directory of the tree (bar the kept
ones) and on its admin dir (``.git/worktrees/<id>``: index, HEAD, merge state),
set right after the reset. Any event there (a file created, written, truncated,
chmod-ed, renamed or deleted; a directory made or removed; the index or HEAD
replaced) marks the tree touched. Taking the tree reads the events queued so far
(the kernel queues each one before the write that caused it returns), so the answer
costs a ``read`` that finds nothing, whatever the repo's size.

What it does not see, and so what a tree must not meet while idle: a write through
a hard link made from outside the tree, or through a shared ``mmap``; a change made
after the reset ended but before the watch was set (the same window as a change
made right after today's ``clean``). Anything the watch cannot prove (no inotify,
the watch limit reached, the queue overflowed, a tree from a previous daemon) is
simply not untouched: the pool then resets at take time, as before.

Linux only (``inotify_init1``); elsewhere nothing is ever proven untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.git import dotgit

log = logging.getLogger(__name__)

# <sys/inotify.h>
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000
_CHANGES = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
    | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF
)  # fmt: skip
_MASK = _CHANGES | _IN_ONLYDIR | _IN_DONT_FOLLOW
_OVERFLOW = -1  # in Untouched._early: the queue overflowed
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
# Admin-dir files the pool itself writes while a tree is idle: not a touch.
_OWN_ADMIN_FILES = ("gitdir", "locked")


@dataclass
class _Tree:
    sha: str
    skip: frozenset[str]  # relative paths (of kept directories) whose events do not count
    wds: dict[int, str] = field(default_factory=dict)  # watch -> its dir, relative ("" top)
    admin: int | None = None  # the admin dir's watch
    touched: bool = False


class Untouched:
    """Which idle trees nothing touched since :meth:`start`, by inotify (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._libc: ctypes.CDLL | None = None
        self._failed = False  # no inotify here: never try again
        self._trees: dict[Path, _Tree] = {}
        self._owner: dict[int, Path] = {}  # watch -> its tree
        # Trees are watched outside the lock (a take never waits for a walk): events of
        # watches not registered yet are kept here while a start runs (_OVERFLOW: lost).
        self._starting = 0
        self._early: set[int] = set()

    def start(self, tree: Path, sha: str, *, skip: Sequence[str] = ()) -> bool:
        """Watch ``tree``, just reset to commit ``sha`` and clean (but the directories
        ``skip``, relative to it); True if it is watched, False if it cannot be (it then
        never counts as untouched)."""
        with self._lock:
            self._drop(tree)
            if not self._open():
                return False
            self._starting += 1
        entry = _Tree(sha, frozenset(s.strip("/") for s in skip))
        failure: OSError | None = None
        try:
            dirs = dotgit.git_dirs(tree)
            if dirs is None or dirs.gitdir == dirs.common:
                raise OSError(f"not a linked worktree: {tree}")
            entry.admin = self._add(dirs.gitdir)
            self._watch_dirs(tree, entry)
        except OSError as exc:
            failure = exc
        with self._lock:
            self._starting -= 1
            watches = [*entry.wds, *([entry.admin] if entry.admin is not None else [])]
            if failure is None:
                self._trees[tree] = entry
                self._owner.update(dict.fromkeys(watches, tree))
                self._read()  # anything since the watch began counts
                entry.touched = entry.touched or bool(self._early & {*watches, _OVERFLOW})
            if self._starting == 0:
                self._early.clear()
            if failure is not None:
                self._remove_watches(watches)
                log.info("untouched: cannot watch %s (%s); it is reset when taken", tree, failure)
                return False
            return not entry.touched

    def end(self, tree: Path) -> str | None:
        """Stop watching ``tree``; the commit it was reset to if nothing touched it since
        :meth:`start`, else None (never watched, touched, or unknown)."""
        with self._lock:
            entry = self._trees.get(tree)
            if entry is None:
                return None
            self._read()
            self._drop(tree)
            return None if entry.touched else entry.sha

    def close(self) -> None:
        with self._lock:
            for tree in list(self._trees):
                self._drop(tree)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # ------------------------------------------------------------ helpers
    # _open, _drop, _remove_watches, _read and _note run under the lock; _add and
    # _watch_dirs (a start's walk) outside it.

    def _open(self) -> bool:
        if self._fd is not None:
            return True
        if self._failed:
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):  # no libc inotify: not Linux
            fd = -1
        if fd < 0:
            log.info("untouched: no inotify here; idle trees are reset when taken")
            self._failed = True
            return False
        self._libc, self._fd = libc, fd
        return True

    def _add(self, directory: Path) -> int:
        """A watch on ``directory`` (not registered: the caller does that under the lock)."""
        assert self._libc is not None
        wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK))
        if wd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(directory))
        return wd

    def _watch_dirs(self, tree: Path, entry: _Tree) -> None:
        """Watch each directory before listing it: a subdirectory made after the listing
        is an event of its parent's watch."""
        todo = [""]
        while todo:
            rel = todo.pop()
            wd = self._add(tree / rel if rel else tree)
            entry.wds[wd] = rel
            with os.scandir(tree / rel if rel else tree) as listing:
                for item in listing:
                    sub = f"{rel}/{item.name}" if rel else item.name
                    if item.is_dir(follow_symlinks=False) and sub not in entry.skip:
                        todo.append(sub)

    def _drop(self, tree: Path) -> None:
        entry = self._trees.pop(tree, None)
        if entry is not None:
            self._remove_watches([*entry.wds, *([entry.admin] if entry.admin is not None else [])])

    def _remove_watches(self, watches: list[int]) -> None:
        assert self._libc is not None
        for wd in watches:
            self._owner.pop(wd, None)
            self._libc.inotify_rm_watch(self._fd, wd)  # gone already (deleted dir): harmless

    def _read(self) -> None:
        """Read every queued event and mark the trees they touch."""
        assert self._fd is not None
        while True:
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + _EVENT.size <= len(buf):
                wd, mask, _, size = _EVENT.unpack_from(buf, offset)
                name = buf[offset + _EVENT.size : offset + _EVENT.size + size].rstrip(b"\0")
                offset += _EVENT.size + size
                self._note(wd, mask, os.fsdecode(name))

    def _note(self, wd: int, mask: int, name: str) -> None:
        if mask & _IN_Q_OVERFLOW:  # events were lost: nothing is proven any more
            for each in self._trees.values():
                each.touched = True
            if self._starting:
                self._early.add(_OVERFLOW)
            return
        tree = self._owner.get(wd)
        entry = self._trees.get(tree) if tree is not None else None
        if entry is None:
            if self._starting:
                self._early.add(wd)  # maybe a watch being set: its start counts it
            return  # else a watch ended meanwhile (its IN_IGNORED, say)
        if wd == entry.admin:
            if name in _OWN_ADMIN_FILES or name.startswith(
                tuple(f"{own}.dispatcher-" for own in _OWN_ADMIN_FILES)
            ):
                return
            entry.touched = True
            return
        rel = entry.wds.get(wd)
        if rel is None:
            return
        path = f"{rel}/{name}" if rel and name else (name or rel)
        if path not in entry.skip:  # a kept directory made or removed: kept on purpose
            entry.touched = True

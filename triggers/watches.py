"""Directory watches for any number of repos at a constant number of threads.

watchdog's observer starts one emitter thread per scheduled watch, so a
watcher of the refs of 200 repos (the git dir and its ``refs/``: two watches
each) ran 400 threads. On Linux, :class:`InotifyWatches` uses watchdog's own
parts below the emitters instead: one inotify file descriptor read by one
thread (:class:`~watchdog.observers.inotify_c.InotifyFD`), and per watch an
:class:`~watchdog.observers.inotify.InotifyWatchGroup` (which keeps recursive
watches up to date as directories come and go) that hands each event straight
to its sink on that thread. A watch costs inotify watch descriptors, no thread.
Elsewhere :class:`ObserverWatches` is the plain watchdog observer (a thread per
watch): correct, not flat.

Both skip what they are told to at the source: a directory named in ``skip``
(``.git`` for work trees) is never watched, so the daemon's own writes there
(objects, refs and worktree files of job branches) are never even read.

A sink gets ``(paths, is_directory)`` with absolute paths (str), on the
reading thread; it must be quick. An exception in a sink is logged and
dropped: it never stops the reading thread nor another repo's watches, nor
does a watched directory that disappears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

logger = logging.getLogger(__name__)

LINUX = sys.platform.startswith("linux")  # a variable: mypy checks the other branch too

Sink = Callable[[list[str], bool], None]


class Watches(Protocol):
    def add(self, path: Path, *, recursive: bool, sink: Sink, skip: frozenset[str]) -> object:
        """Watch ``path`` (and below it if ``recursive``, but not in directories named in
        ``skip``); a handle for :meth:`remove`. Raises OSError if ``path`` cannot be
        watched."""
        ...

    def remove(self, handle: object) -> None:
        """Stop a watch (no error if its directory is gone)."""
        ...

    def close(self, timeout: float | None) -> None:
        """Stop every watch and the threads."""
        ...


def open_watches() -> Watches:
    """The shared inotify watches on Linux, else a watchdog observer (both started)."""
    if LINUX:
        return InotifyWatches()
    return ObserverWatches()


def _deliver(sink: Sink, paths: list[str], is_directory: bool) -> None:
    try:
        sink(paths, is_directory)
    except Exception:
        logger.exception("watch sink %r failed for %s", sink, paths)


# --- Linux: one inotify fd, one thread ---------------------------------------------

if sys.platform.startswith("linux"):
    from watchdog.observers.inotify import InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD, Mask
    from watchdog.observers.inotify_move_event_grouper import (
        GroupedInotifyEvent,
        InotifyMoveEventGrouper,
        PathedInotifyEvent,
    )

    # Changes only: no open, no close-without-write, no attribute-only events (our own git
    # scans read these files, and a chmod is not a change of content).
    _MASK = Mask(
        InotifyConstants.IN_CREATE
        | InotifyConstants.IN_MODIFY
        | InotifyConstants.IN_MOVE
        | InotifyConstants.IN_DELETE
        | InotifyConstants.IN_CLOSE_WRITE
        | InotifyConstants.IN_DELETE_SELF
    )
    _MOVES_KEPT = 256  # unpaired IN_MOVED_FROM events remembered, to pair a later IN_MOVED_TO

    class _Direct(InotifyMoveEventGrouper):
        """The group's event queue, replaced: each event goes to the sink at once (no
        thread reads a queue); moved-from events are remembered to pair renames."""

        def __init__(self, sink: Sink) -> None:  # no super(): its delayed queue is not used
            self._sink = sink
            self._moves: OrderedDict[int, PathedInotifyEvent] = OrderedDict()

        def read_event(self) -> GroupedInotifyEvent | None:
            return None

        def put_event(self, event: PathedInotifyEvent) -> None:
            ev = event.ev
            if ev.is_ignored:
                return
            if ev.is_moved_from:
                self._moves[ev.cookie] = event
                while len(self._moves) > _MOVES_KEPT:
                    self._moves.popitem(last=False)
            elif ev.is_moved_to:
                source = self._moves.pop(ev.cookie, None)
                if ev.is_directory:  # its files moved too: under their new and old paths
                    moved = _files_below(event.path, source.path if source else None)
                    if moved:
                        _deliver(self._sink, moved, False)
            _deliver(self._sink, [os.fsdecode(event.path)], ev.is_directory)

        def get_queued_moved_from_event(self, cookie: int) -> PathedInotifyEvent | None:
            return self._moves.get(cookie)

        def discard_pending_events(self) -> None:
            self._moves.clear()

        def close(self) -> None:
            self._moves.clear()

    def _files_below(directory: bytes, was: bytes | None) -> list[str]:
        """The files now below a directory that was renamed (from ``was``, when the rename
        happened inside the watch), each also under its old path, as watchdog's moved
        events for a directory's contents said."""
        found: list[str] = []
        for root, _, filenames in os.walk(directory):
            for name in filenames:
                path = os.path.join(root, name)
                found.append(os.fsdecode(path))
                if was is not None:
                    found.append(os.fsdecode(was + path[len(directory) :]))
        return found

    @dataclass
    class _Group(InotifyWatchGroup):
        """A watch group whose events go straight to ``sink``, never into ``skip``."""

        sink: Sink | None = None
        skip: frozenset[bytes] = field(default_factory=frozenset)

        def __post_init__(self) -> None:
            assert self.sink is not None
            self._move_event_grouper = _Direct(self.sink)  # before the first watch is added
            super().__post_init__()

        def on_event(self, event: InotifyEvent) -> None:
            try:
                super().on_event(event)
            except Exception:  # never let one watch stop the thread every watch shares
                logger.exception("inotify event %r below %r failed", event, self.path)

        def _add_all_callbacks(self, path: bytes) -> None:
            if path != self.path and os.path.basename(path) in self.skip:
                return
            self._add_callback(path)
            if not (self.is_recursive and os.path.isdir(path)):
                return
            for root, dirnames, _ in os.walk(path, followlinks=self.follow_symlink):
                dirnames[:] = [d for d in dirnames if d not in self.skip]
                for dirname in dirnames:
                    full = os.path.join(root, dirname)
                    if self.follow_symlink or not os.path.islink(full):
                        self._add_callback(full)

    class InotifyWatches:
        """Every watch on one inotify fd read by one thread (``watchdog`` InotifyFD)."""

        def __init__(self) -> None:
            self._fd = InotifyFD()
            self._fd.name = "dispatcher-inotify"
            self._fd.start()

        def add(self, path: Path, *, recursive: bool, sink: Sink, skip: frozenset[str]) -> object:
            return _Group(
                self._fd,
                os.fsencode(path),
                event_mask=_MASK,
                is_recursive=recursive,
                sink=sink,
                skip=frozenset(os.fsencode(s) for s in skip),
            )

        def remove(self, handle: object) -> None:
            assert isinstance(handle, _Group)
            with contextlib.suppress(KeyError, OSError):  # its directory is gone
                handle.deactivate()

        def close(self, timeout: float | None) -> None:
            self._fd.stop()
            self._fd.join(timeout)

        def watch_count(self) -> int:
            """inotify watch descriptors held (for tests: what is really watched)."""
            return len(self._fd._watch_for_wd)


# --- elsewhere: the watchdog observer ---------------------------------------------

_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, sink: Sink, skip: frozenset[str]) -> None:
        self._root = root
        self._sink = sink
        self._skip = skip

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        paths = [p for p in paths if not self._skipped(p)]
        if paths:
            _deliver(self._sink, paths, event.is_directory)

    def _skipped(self, path: str) -> bool:
        try:
            parts: Iterable[str] = Path(path).relative_to(self._root).parts
        except ValueError:
            return False
        return any(part in self._skip for part in parts)


class ObserverWatches:
    """A watchdog observer (an emitter thread per distinct watch). watchdog folds the
    same (path, recursive) scheduled twice into one watch: it is unscheduled when its
    last user goes."""

    def __init__(self) -> None:
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.start()
        self._users: dict[object, int] = {}

    def add(self, path: Path, *, recursive: bool, sink: Sink, skip: frozenset[str]) -> object:
        handler = _Handler(path, sink, skip)
        watch = self._observer.schedule(
            handler, str(path), recursive=recursive, event_filter=_EVENTS
        )
        self._users[watch] = self._users.get(watch, 0) + 1
        return (handler, watch)

    def remove(self, handle: object) -> None:
        assert isinstance(handle, tuple)
        handler, watch = handle
        users = self._users.get(watch, 0) - 1
        try:
            if users > 0:
                self._users[watch] = users
                self._observer.remove_handler_for_watch(handler, watch)
            else:
                self._users.pop(watch, None)
                self._observer.unschedule(watch)
        except (KeyError, OSError):  # the directory is gone and its emitter with it
            logger.debug("watch %s was already gone", watch, exc_info=True)

    def close(self, timeout: float | None) -> None:
        self._observer.stop()
        self._observer.join(timeout)

"""Read one bounded page of a job's log, by byte offset or from its tail.

Offsets are bytes into the current ``agent.log``. A page is the file's raw
bytes ``[start, next)``, at most ``limit`` long, with its end moved back so it
never splits a UTF-8 character (at most 3 bytes): the ``next`` offset handed
out is always on a character boundary, so pages read one after another
concatenate to the file exactly. A tail's start is moved forward to a
character boundary the same way. Bytes that are not UTF-8 are passed as they
are (a page never comes back empty because of them).

The log writer (:mod:`dispatcher.process.logpipe`) rotates a running agent's log by
renaming ``agent.log`` to ``agent.log.1`` and starting a new file, so an
offset may belong to a file that is gone. Each page names the file it was
read from (``file_id``: its inode); a reader that sends it back with its next
offset gets the new file from 0 when the id changed (``restarted`` says so).
Without an id, only an offset past the end of the file is known to be stale
(the page starts again at 0 the same way).

Standard library only; no state but the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MIB = 1024 * 1024
DEFAULT_LIMIT = MIB  # bytes in a page when the client names no limit
MAX_LIMIT = 8 * MIB  # the largest page (and tail) a client may ask for
FOLLOW_CHUNK = 64 * 1024  # the most a follower reads at once


@dataclass(frozen=True)
class LogPage:
    data: bytes
    start: int  # offset of data's first byte in agent.log
    size: int  # agent.log's size when it was read
    file_id: int = 0  # the inode of the agent.log read (0: none yet)
    restarted: bool = False  # the offset asked for was in another file: read from 0

    @property
    def next(self) -> int:
        """The offset to ask for next (on a character boundary)."""
        return self.start + len(self.data)


def is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


def _sequence_length(lead: int) -> int:
    """Bytes in the UTF-8 sequence that ``lead`` starts (1 for ASCII and invalid bytes)."""
    if 0xC0 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF7:
        return 4
    return 1


def complete_prefix(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 sequence cut short at its end.

    Never 0 for non-empty data: a lone incomplete sequence is kept, so a reader
    paging through always moves on.
    """
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if is_continuation(byte):
            continue
        cut = len(data) - back
        return cut if back < _sequence_length(byte) and cut > 0 else len(data)
    return len(data)


def _start(size: int, offset: int, tail: int | None, stale: bool) -> int:
    if tail is not None:
        return max(0, size - tail)
    return 0 if stale or offset > size else offset  # another file, or past the end: rotated


def read_page(
    path: Path,
    *,
    offset: int = 0,
    tail: int | None = None,
    limit: int = DEFAULT_LIMIT,
    file_id: int | None = None,
) -> LogPage:
    """Up to ``limit`` bytes of ``path`` from ``offset``, or from where its last ``tail``
    bytes begin (moved forward to a character boundary).

    An ``offset`` in another file than ``file_id`` (a page's ``file_id``) or past the
    end of the file (rotated since) reads from 0, with ``restarted`` set.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:  # no output yet
        return LogPage(b"", 0, 0)
    with fh:
        st = os.fstat(fh.fileno())
        size = st.st_size
        stale = file_id is not None and file_id != st.st_ino
        start = _start(size, offset, tail, stale)
        restarted = tail is None and start != offset
        fh.seek(start)
        data = fh.read(limit + (3 if tail is not None else 0))
    if tail is not None:  # skip the rest of a character cut at the start
        skip = 0
        while skip < min(3, len(data)) and is_continuation(data[skip]):
            skip += 1
        start, data = start + skip, data[skip : skip + limit]
    return LogPage(data[: complete_prefix(data)], start, size, st.st_ino, restarted)


@dataclass(frozen=True)
class LogChunk:
    """Text a follower read; ``offset``: where the next read starts, in the file it came
    from (``file_id``, its inode); ``data``: the bytes the text was decoded from."""

    offset: int
    text: str
    file_id: int = 0
    data: bytes = b""


@dataclass(frozen=True)
class LogEnd:
    """The job is in a terminal ``state`` and its log was read to ``offset``."""

    state: str
    offset: int


class LogTail:
    """The follower's open ``agent.log``: read on from an offset; when the path names
    another file (the writer rotated it), the old one is read to its end first, then
    the new one from 0. Blocking calls (run in a thread)."""

    def __init__(self, path: Path, offset: int, file_id: int | None = None) -> None:
        """``file_id``: the file ``offset`` is in (an inode a reader was given); another
        file (rotated since) is read from 0, as :func:`read_page` does."""
        self.path = path
        self.offset = offset
        self._want = file_id
        self._fh: BinaryIO | None = None

    @property
    def file_id(self) -> int:
        """The inode of the file being read (0 before it exists)."""
        return os.fstat(self._fh.fileno()).st_ino if self._fh is not None else 0

    def read(self) -> bytes:
        """The next chunk (cut on a character boundary); b"" when there is none yet."""
        if self._fh is None and not self._open():
            return b""
        assert self._fh is not None
        chunk = self._fh.read(FOLLOW_CHUNK)
        if not chunk and self._switched():
            return self.read()
        chunk = chunk[: complete_prefix(chunk)]
        self._fh.seek(self.offset + len(chunk))  # the cut bytes come with the next chunk
        self.offset += len(chunk)
        return chunk

    def _open(self) -> bool:
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 (closed by close or _switched)
        except FileNotFoundError:
            return False
        st = os.fstat(self._fh.fileno())
        if st.st_size < self.offset or (self._want is not None and self._want != st.st_ino):
            self.offset = 0  # past its end, or another file than the offset's: start over
        self._want = None
        self._fh.seek(self.offset)
        return True

    def _switched(self) -> bool:
        """At the end of the open file: True (and ready to read the new file from 0) if
        the path is now another file; an in-place truncation starts over at 0 too."""
        assert self._fh is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:  # between the rename and the new file
            return False
        if st.st_ino != os.fstat(self._fh.fileno()).st_ino:
            self.close()
            self.offset = 0
            return self._open()
        if st.st_size < self.offset:
            self.offset = 0
            self._fh.seek(0)
            return True
        return False

    def has_more(self) -> bool:
        """Bytes are waiting, in the open file or in a new one."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self._fh is None:
            return st.st_size > self.offset
        return st.st_ino != os.fstat(self._fh.fileno()).st_ino or st.st_size != self.offset

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

"""dispatcher.process.logpage on real files: bounded pages, cut on UTF-8 character boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.process import logpage


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"", 0),
        (b"abc", 3),
        (b"a\xc3\xa9", 3),  # é, whole
        (b"a\xc3", 1),  # é cut after its first byte
        (b"a\xe2\x9c", 1),  # ✓ cut after two of three
        (b"a\xe2\x9c\x93", 4),
        (b"a\xf0\x9f\x98", 1),  # an emoji cut after three of four
        (b"a\xf0\x9f\x98\x80", 5),
        (b"\xe2\x9c", 2),  # nothing but a cut character: kept, so a reader moves on
        (b"a\x80\x80\x80", 4),  # stray continuation bytes are not a character to wait for
        (b"a\xff", 2),  # not UTF-8 at all: passed as it is
    ],
)
def test_complete_prefix(data: bytes, kept: int) -> None:
    assert logpage.complete_prefix(data) == kept


def test_pages_concatenate_to_the_file_and_end_on_character_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    data = ("é✓😀x\n" * 5000).encode()
    path.write_bytes(data)
    pages, offset = [], 0
    while True:
        page = logpage.read_page(path, offset=offset, limit=1000)
        assert page.start == offset and page.size == len(data)
        if not page.data:
            break
        assert len(page.data) <= 1000
        page.data.decode("utf-8")  # whole characters only
        pages.append(page.data)
        offset = page.next
    assert b"".join(pages) == data


def test_tail_starts_on_a_character_and_an_offset_past_the_end_starts_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.log"
    path.write_bytes("a✓✓".encode())  # a, then two three-byte characters
    page = logpage.read_page(path, tail=5)  # from the middle of the first ✓
    assert (page.start, page.data) == (4, "✓".encode())
    page = logpage.read_page(path, tail=100, limit=2)
    assert (page.start, page.data) == (0, b"a")  # the ✓ would not fit whole
    page = logpage.read_page(path, offset=100, limit=4)
    assert (page.start, page.data) == (0, "a✓".encode())  # rotated since: from 0
    assert logpage.read_page(path, offset=7).data == b""


def test_a_log_not_written_yet_is_an_empty_page(tmp_path: Path) -> None:
    page = logpage.read_page(tmp_path / "agent.log", offset=10)
    assert (page.data, page.start, page.size, page.next) == (b"", 0, 0, 0)
    with pytest.raises(ValueError, match="limit"):
        logpage.read_page(tmp_path / "agent.log", limit=0)


def test_an_offset_in_a_renamed_file_starts_the_new_one_at_zero(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_bytes(b"old line\n" * 10)
    first = logpage.read_page(log, limit=45)
    assert first.file_id == log.stat().st_ino and not first.restarted
    log.rename(tmp_path / "agent.log.1")  # the writer's rotation
    log.write_bytes(b"new line\n" * 10)  # already past the old offset: size cannot tell
    page = logpage.read_page(log, offset=first.next, file_id=first.file_id)
    assert (page.start, page.restarted, page.data) == (0, True, log.read_bytes())
    assert page.file_id == log.stat().st_ino != first.file_id
    same = logpage.read_page(log, offset=first.next, file_id=page.file_id)
    assert (same.start, same.restarted) == (first.next, False)
    assert logpage.read_page(log, offset=first.next).start == first.next  # no id: no way to know


def test_a_tail_reads_on_in_its_file_and_starts_another_file_at_0(tmp_path: Path) -> None:
    """LogTail: an offset given with its file's inode reads on from there; with another
    file's inode (the log rotated since), from 0; each chunk's file is reported."""
    log = tmp_path / "agent.log"
    log.write_bytes(b"0123456789\n")
    inode = log.stat().st_ino
    same = logpage.LogTail(log, 5, file_id=inode)
    assert same.read() == b"56789\n" and same.file_id == inode
    same.close()
    other = logpage.LogTail(log, 5, file_id=inode + 1)
    assert other.read() == b"0123456789\n"
    other.close()
    plain = logpage.LogTail(tmp_path / "none.log", 3)
    assert plain.read() == b"" and plain.file_id == 0

"""Cap a log that a running agent appends to, rotating it without renaming it.

Agents' logs are capped as they are written by :mod:`dispatcher.logpipe`, which
uses the same names (:func:`rotated_path`); :func:`cap` remains for a log that a
process appends to directly (no writer in between), checked from outside.

An agent's stdout and stderr go straight to ``agent.log`` through a file
descriptor opened ``O_APPEND`` (see :func:`dispatcher.proc.spawn`), and keep
going there even while no daemon runs. Renaming the live file, as ``logrotate``
does, would not help: the agent's descriptor follows the inode, so it would
keep writing into the renamed copy. :func:`cap` therefore copies the output
aside and truncates the live file in place; ``O_APPEND`` writes then continue
at its new end, with no hole of zero bytes where the old content was.

Bounds and losses, for one caller calling :func:`cap` every few seconds:

* A rotated copy holds at most the newest ``max_bytes`` of the log (cut at a
  line boundary where there is one, after a line saying how much was dropped),
  plus what the agent wrote while it was being copied. Output beyond
  ``max_bytes`` that piled up between two calls is dropped, and said so.
* Output the agent writes between the end of the copy and the truncate is lost.
  The window is a few system calls long: the copy reads to end of file right
  before it (unless the agent outpaces the copy, which stops at twice
  ``max_bytes``).
* Disk use is bounded by ``(keep + 1) * max_bytes`` plus what the agent writes
  between two calls and during the copies (and one marker line per file).
* The ``[dispatcher] log rotated`` line is appended right after the truncate,
  so output the agent writes in between lands before it.

Readers that follow the log by byte offset must treat a file shorter than
their offset as rotated and start again from 0.

Standard library only; no state but the files.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


def rotated_path(path: Path, n: int) -> Path:
    """The ``n``-th rotated copy of ``path``: ``agent.log.1`` is the newest."""
    return path.with_name(f"{path.name}.{n}")


def cap(path: Path, *, max_bytes: int, keep: int = 1) -> bool:
    """Rotate the log at ``path`` if it holds more than ``max_bytes``; True if it did.

    The newest output goes to ``path.1``, older copies move up to ``path.keep``
    (the oldest is dropped; copies beyond ``keep`` left by an earlier, larger
    ``keep`` are removed), and ``path`` itself is truncated to a single line
    naming where the older output went. ``keep=0`` keeps no copy. A missing
    file is not an error. Not safe for two callers on one path at once.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    if keep < 0:
        raise ValueError(f"keep must not be negative, not {keep}")
    tmp = path.with_name(f"{path.name}.1.tmp")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= max_bytes:
                return False
            if keep:
                _copy_tail(fh, tmp, start=size - max_bytes, limit=2 * max_bytes)
            # The loss window: anything the agent appends from here to the truncate.
            os.truncate(path, 0)
    except FileNotFoundError:  # no log yet, or it went away meanwhile: nothing to cap
        return False
    if keep:
        note = f"older output in {rotated_path(path, 1).name}"
    else:
        note = f"{size} bytes of older output dropped"
    with open(path, "ab") as live:
        live.write(f"[dispatcher] log rotated: {note}\n".encode())
    if keep:
        for n in range(keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(rotated_path(path, n), rotated_path(path, n + 1))
        os.replace(tmp, rotated_path(path, 1))
    _remove_beyond(path, keep)
    return True


def _copy_tail(src: BinaryIO, dest: Path, *, start: int, limit: int) -> None:
    """Copy ``src`` from the first line start at or after ``start`` (> 0) to end of file.

    A line says how many earlier bytes were dropped. Reads run to end of file,
    not to the size seen before, to keep the loss window short; they stop after
    ``limit`` bytes, in case the agent writes as fast as this reads.
    """
    budget = limit + 1  # and the byte before ``start``, read to find where the next line begins
    with open(dest, "wb") as out:
        src.seek(start - 1)
        chunk = src.read(min(_CHUNK, budget))
        cut = chunk.find(b"\n") + 1 or 1  # no newline: cut mid-line, at ``start``
        out.write(f"[dispatcher] {start - 1 + cut} bytes of earlier output dropped\n".encode())
        out.write(chunk[cut:])
        budget -= len(chunk)
        while budget > 0 and (chunk := src.read(min(_CHUNK, budget))):
            out.write(chunk)
            budget -= len(chunk)


def _remove_beyond(path: Path, keep: int) -> None:
    """Remove rotated copies numbered above ``keep`` (from an earlier, larger ``keep``)."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)")
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and int(match.group(1)) > keep:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()

"""What the pages show, made from what the service returns: a unified diff split into
files, hunks and numbered lines with syntax colours; a review's comments as one
follow-up prompt. Pure: no I/O.

Every piece of text that reaches a page either goes through Jinja2's autoescape or, for
the coloured code, through Pygments' HTML formatter, which escapes it (each line is
lexed alone: a construct over several lines may be coloured as plain text)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, Literal

from markupsafe import Markup, escape
from pygments import highlight  # type: ignore[import-untyped]
from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]
from pygments.lexer import Lexer  # type: ignore[import-untyped]
from pygments.lexers import get_lexer_for_filename  # type: ignore[import-untyped]
from pygments.util import ClassNotFound  # type: ignore[import-untyped]

LineKind = Literal["add", "del", "ctx", "meta"]
MAX_DIFF_LINES: Final = 20_000
"""Past this many lines of patch, the rest is not shown (the page says so)."""
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")
_FORMATTER: Final = HtmlFormatter(nowrap=True, classprefix="tok-")


@dataclass
class DiffLine:
    kind: LineKind
    html: Markup  # the line's code, escaped, with colour spans
    old: int | None = None  # its number in the base, for ctx and del lines
    new: int | None = None  # its number in the job's version, for ctx and add lines


@dataclass
class SplitRow:
    """One row of the side-by-side view: the base's line and the job's (None: no line)."""

    left: DiffLine | None
    right: DiffLine | None


@dataclass
class Hunk:
    header: str
    lines: list[DiffLine] = field(default_factory=list)

    def split(self) -> list[SplitRow]:
        """The hunk side by side: unchanged lines on both sides, each run of removed lines
        beside the added lines that follow it."""
        rows: list[SplitRow] = []
        removed: list[DiffLine] = []
        added: list[DiffLine] = []

        def flush() -> None:
            for i in range(max(len(removed), len(added))):
                left = removed[i] if i < len(removed) else None
                rows.append(SplitRow(left, added[i] if i < len(added) else None))
            removed.clear()
            added.clear()

        for line in self.lines:
            if line.kind == "del":
                if added:  # a new run of removals begins
                    flush()
                removed.append(line)
            elif line.kind == "add":
                added.append(line)
            else:
                flush()
                rows.append(SplitRow(line, line))
        flush()
        return rows


@dataclass
class DiffFile:
    path: str
    old_path: str | None = None  # when renamed
    status: str = "modified"  # added, deleted, renamed, modified, binary
    added: int = 0
    removed: int = 0
    hunks: list[Hunk] = field(default_factory=list)
    anchor: str = ""  # the id of its section on the page


@dataclass
class Diff:
    files: list[DiffFile]
    cut: bool = False  # more lines than MAX_DIFF_LINES: the rest is not shown


def parse_diff(patch: str) -> Diff:
    """``git diff`` output (unified, with ``diff --git`` headers) as files and lines."""
    files: list[DiffFile] = []
    current: DiffFile | None = None
    hunk: Hunk | None = None
    old = new = 0
    for n, line in enumerate(patch.split("\n")):
        if n >= MAX_DIFF_LINES:
            return Diff(files, cut=True)
        if line.startswith("diff --git "):
            current = DiffFile(path=_b_path(line), anchor=f"file-{len(files) + 1}")
            files.append(current)
            hunk = None
            continue
        if current is None:
            continue
        found = _HUNK.match(line)
        if found is not None:
            old, new = int(found.group(1)), int(found.group(2))
            hunk = Hunk(line)
            current.hunks.append(hunk)
        elif hunk is None:
            _header_line(current, line)
        elif line.startswith("+"):
            hunk.lines.append(DiffLine("add", colour(current.path, line[1:]), new=new))
            current.added += 1
            new += 1
        elif line.startswith("-"):
            hunk.lines.append(DiffLine("del", colour(current.path, line[1:]), old=old))
            current.removed += 1
            old += 1
        elif line.startswith(" "):
            hunk.lines.append(DiffLine("ctx", colour(current.path, line[1:]), old=old, new=new))
            old += 1
            new += 1
        elif line.startswith("\\"):
            hunk.lines.append(DiffLine("meta", escape(line)))
    return Diff(files)


def _b_path(header: str) -> str:
    """The path of a ``diff --git a/X b/Y`` header, as a first guess: exact when both
    halves name one path (``docs b/x.py`` too); ``---``/``+++``/``rename to`` lines that
    follow correct it (:func:`_header_line`)."""
    rest = header.removeprefix("diff --git ")
    if rest.startswith('"'):  # a quoted name: the lines that follow say it exactly
        return _unquote(rest.split('" ', 1)[0] + '"').removeprefix("a/")
    size = (len(rest) - 5) // 2  # "a/" X " b/" X
    if (
        rest.startswith("a/")
        and rest[2 : 2 + size] == rest[size + 5 :]
        and rest[2 + size : size + 5] == " b/"
    ):
        return rest[2 : 2 + size]
    half = rest.rfind(" b/")
    return rest[half + 3 :] if half >= 0 else rest


def _unquote(name: str) -> str:
    """A path as git wrote it: C-quoted (``"a/\\303\\251.py"``, octal bytes of UTF-8)
    when it holds odd characters, else plain; a trailing tab (git adds one after a
    name with a space) dropped."""
    name = name.removesuffix("\t")
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    out = bytearray()
    body, i = name[1:-1], 0
    simple = {"n": 10, "t": 9, '"': 34, "\\": 92, "a": 7, "b": 8, "f": 12, "r": 13, "v": 11}
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567" and i + 3 < len(body) + 1:
                out.append(int(body[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            out.append(simple.get(nxt, ord(nxt)))
            i += 2
            continue
        out += ch.encode()
        i += 1
    return out.decode("utf-8", errors="replace")


def _header_line(f: DiffFile, line: str) -> None:
    if line.startswith("+++ ") and line != "+++ /dev/null":
        f.path = _unquote(line[4:]).removeprefix("b/")
    elif line.startswith("--- ") and line != "--- /dev/null" and f.status == "deleted":
        f.path = _unquote(line[4:]).removeprefix("a/")
    elif line.startswith("rename to "):
        f.path = _unquote(line.removeprefix("rename to "))
    elif line.startswith("new file mode"):
        f.status = "added"
    elif line.startswith("deleted file mode"):
        f.status = "deleted"
    elif line.startswith("rename from "):
        f.status, f.old_path = "renamed", _unquote(line.removeprefix("rename from "))
    elif line.startswith("Binary files "):
        f.status = "binary"


@lru_cache(maxsize=256)
def _lexer(path: str) -> Lexer | None:
    try:
        lexer = get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None
    return lexer


def colour(path: str, code: str) -> Markup:
    """One line of code, escaped, with Pygments' token classes (``tok-*``) for colours."""
    lexer = _lexer(path.rsplit("/", 1)[-1])
    if lexer is None or not code:
        return escape(code)
    # Pygments escapes the code it formats: its output is safe HTML.
    return Markup(highlight(code, lexer, _FORMATTER).rstrip("\n"))  # noqa: S704


@dataclass(frozen=True)
class Comment:
    path: str
    line: str  # "12" (the new side), "-12" (a removed line)
    text: str


def review_prompt(comments: list[Comment], note: str = "") -> str:
    """The follow-up prompt a review sends: every comment on its file and line, and the
    reviewer's general note, in one message."""
    parts = ["Review of your changes. Please address each comment below, then commit."]
    if note.strip():
        parts.append(note.strip())
    for c in comments:
        where = f"{c.path} line {c.line.removeprefix('-')}"
        if c.line.startswith("-"):
            where += " (a removed line)"
        parts.append(f"- {where}: {c.text.strip()}")
    return "\n\n".join(parts)

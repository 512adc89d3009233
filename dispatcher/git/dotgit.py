"""Read refs and HEAD straight from a repository's files, without starting git.

Starting a git process costs about 2 ms of CPU (PERF.md); a job's hot path
reads a handful of refs, so the git package asks here first. Every
function answers only when the files give a certain answer and returns None
otherwise, and the caller then asks git itself. Formats read (documented in
gitrepository-layout(5)):

* a ``.git`` *file* in a linked worktree: ``gitdir: <path>``; that directory
  holds the worktree's ``HEAD`` and a ``commondir`` file naming the shared dir;
* ``HEAD``: ``ref: refs/heads/<name>`` or a detached sha;
* loose refs ``<common>/refs/...`` (one sha per file) and ``packed-refs``
  (``<sha> <refname>`` lines, ``^<sha>`` peel lines, ``#`` header);
* a linked worktree's record, its admin dir ``<common>/worktrees/<id>``: a
  ``gitdir`` file naming the worktree's ``.git`` file (absolute, or relative to
  the admin dir), a ``locked`` file when it is locked, and its ``HEAD``.

Loose refs are read before ``packed-refs``: git writes ``packed-refs`` before
deleting the loose files it packs, so this order never misses a ref. A
repository on the reftable backend (a ``reftable`` directory) is never read
here. Nothing in this module writes.

A commit's parents are read from its loose object (``objects/xx/yyyy...``, zlib), when
it is one (a commit git just made is).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

_SHA = re.compile(r"[0-9a-f]{40}")
_PER_WORKTREE = ("refs/worktree/", "refs/bisect/", "refs/rewritten/")  # not in the common dir


@dataclass(frozen=True)
class GitDirs:
    gitdir: Path  # per-worktree dir (HEAD, index)
    common: Path  # shared dir (refs, objects)


def _small_file(path: str) -> str:
    """A small file's text (UTF-8), read in one ``read``: no text wrapper made."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        while len(data) % 65536 == 0 and data:  # (never for git's one-line files)
            more = os.read(fd, 65536)
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    return data.decode("utf-8")


def git_dirs(worktree: Path) -> GitDirs | None:
    """The git dirs of a work tree (main or linked); None if the files don't say plainly.

    Called about ten times per job: string paths inside, two ``Path`` made at the end."""
    top = os.fspath(worktree)
    dot = os.path.join(top, ".git")
    try:
        if os.path.isdir(dot):
            return GitDirs(Path(dot), Path(dot))
        text = _small_file(dot)
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = os.path.join(top, text.removeprefix("gitdir:").strip())  # absolute: as it is
    try:
        common_text = _small_file(os.path.join(gitdir, "commondir")).strip()
    except FileNotFoundError:
        return GitDirs(Path(gitdir), Path(gitdir))  # a separate git dir (`--separate-git-dir`)
    except (OSError, UnicodeDecodeError):
        return None
    common = os.path.join(gitdir, common_text)  # absolute: as it is
    return GitDirs(Path(gitdir), Path(os.path.normpath(common)))


def head_branch(worktree: Path) -> tuple[bool, str | None] | None:
    """(True, branch) when HEAD names a branch, (True, None) when detached; None: ask git."""
    dirs = git_dirs(worktree)
    if dirs is None:
        return None
    try:
        text = _small_file(os.path.join(dirs.gitdir, "HEAD")).strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.startswith("ref: refs/heads/"):
        return True, text.removeprefix("ref: refs/heads/")
    if _SHA.fullmatch(text):
        return True, None
    return None


def detached_head(worktree: Path) -> tuple[bool, str | None]:
    """(True, sha) when the work tree's HEAD file holds a sha; (False, None): ask git."""
    dirs = git_dirs(worktree)
    if dirs is None:
        return False, None
    try:
        text = _small_file(os.path.join(dirs.gitdir, "HEAD")).strip()
    except (OSError, UnicodeDecodeError):
        return False, None
    return (True, text) if _SHA.fullmatch(text) else (False, None)


def commit_parents(path: Path, sha: str) -> list[str] | None:
    """The parents of commit ``sha`` read from its loose object in the repository of
    work tree ``path`` (zlib: ``commit <size>\\0`` then ``tree``, ``parent`` lines);
    None when there is no such loose object or it is not a plain commit: ask git."""
    dirs = git_dirs(path)
    if dirs is None or not _SHA.fullmatch(sha) or _may_replace(dirs):
        return None
    try:
        raw = zlib.decompress((dirs.common / "objects" / sha[:2] / sha[2:]).read_bytes())
    except (OSError, zlib.error):
        return None
    if hashlib.sha1(raw).hexdigest() != sha:  # noqa: S324 - git's object id, not a secret
        return None  # a damaged file: git says what is wrong
    header, _, body = raw.partition(b"\0")
    if not header.startswith(b"commit ") or header[7:] != str(len(body)).encode():
        return None
    lines = body.split(b"\n")
    if not lines[0].startswith(b"tree "):
        return None
    parents = []
    for line in lines[1:]:
        if not line.startswith(b"parent "):
            break
        parent = line[7:].decode("ascii", "replace")
        if not _SHA.fullmatch(parent):
            return None
        parents.append(parent)
    return parents


def _may_replace(dirs: GitDirs) -> bool:
    """True if git might see other parents than a commit object names: grafts, or
    replace refs (``refs/replace/``, loose or packed)."""
    if (dirs.common / "info" / "grafts").exists() or (dirs.common / "refs" / "replace").exists():
        return True
    packed = _PACKED.get(dirs.common)
    return packed is None or any(name.startswith("refs/replace/") for name in packed)


def _usable(dirs: GitDirs) -> bool:
    return not (dirs.common / "reftable").exists()


def _loose(common: Path, ref: str) -> tuple[bool, str | None]:
    """(known, sha): (True, None) when the file does not exist."""
    try:
        text = _small_file(os.path.join(common, ref)).strip()
    except (FileNotFoundError, NotADirectoryError):
        return True, None
    except (OSError, UnicodeDecodeError):
        return False, None  # a directory (refs/heads/a when a/b exists), unreadable...
    return (True, text) if _SHA.fullmatch(text) else (False, None)  # symref: ask git


class _Packed:
    """``packed-refs`` parsed once per version of the file (by inode, size, mtime)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int, int], dict[str, str]]] = {}

    def get(self, common: Path) -> dict[str, str] | None:
        path = common / "packed-refs"
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        except OSError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError):
            return None
        refs: dict[str, str] = {}
        for line in text.splitlines():
            if not line or line[0] in "#^":
                continue
            sha, _, name = line.partition(" ")
            if not _SHA.fullmatch(sha) or not name:
                return None
            refs[name] = sha
        with self._lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[path] = (key, refs)
        return refs


_PACKED = _Packed()


def _read(dirs: GitDirs, ref: str) -> tuple[bool, str | None]:
    known, sha = _loose(dirs.common, ref)
    if not known or sha is not None:
        return known, sha
    packed = _PACKED.get(dirs.common)
    if packed is None:
        return False, None
    return True, packed.get(ref)


def read_ref(path: Path, ref: str) -> tuple[bool, str | None]:
    """(known, sha) of the full ref name ``ref`` (``refs/heads/main``) in the repository
    of work tree ``path``. ``known`` False means: ask git."""
    if not ref.startswith("refs/") or ref.startswith(_PER_WORKTREE) or ".." in ref:
        return False, None
    dirs = git_dirs(path)
    if dirs is None or not _usable(dirs):
        return False, None
    return _read(dirs, ref)


def resolve_branch_name(path: Path, name: str) -> tuple[bool, str | None]:
    """(known, sha) of ``name`` when git would resolve that plain name to the branch
    ``refs/heads/<name>``: git tries ``<gitdir>/<name>``, ``refs/<name>`` and
    ``refs/tags/<name>`` first, so any of those existing means: ask git."""
    if name.startswith(("refs/", "/")) or ".." in name or "\\" in name or name == "HEAD":
        return False, None
    dirs = git_dirs(path)
    if dirs is None or not _usable(dirs):
        return False, None
    if os.path.lexists(dirs.gitdir / name) or os.path.lexists(dirs.common / name):
        return False, None
    for shadow in (f"refs/{name}", f"refs/tags/{name}"):
        known, sha = _read(dirs, shadow)
        if not known or sha is not None:
            return False, None
    known, sha = _read(dirs, f"refs/heads/{name}")
    return (True, sha) if known and sha is not None else (False, None)


def foreign_worktree(worktree: Path, repo_path: Path) -> str:
    """Why ``worktree`` no longer belongs to ``repo_path`` ("" if it does): its ``.git``
    file must name an admin dir under the repo's ``<git dir>/worktrees/`` whose
    ``commondir`` leads back to that git dir. One that was repointed would make git
    run in it obey another git dir's config (``core.fsmonitor``, hooks)."""
    own = git_dirs(repo_path)
    if own is None:
        return ""  # the checkout itself is unreadable: git's own errors say more
    common = Path(os.path.realpath(own.common))
    dirs = git_dirs(worktree)
    if (
        dirs is not None
        and Path(os.path.realpath(dirs.common)) == common
        and Path(os.path.realpath(dirs.gitdir)).parent == common / "worktrees"
    ):
        return ""
    return (
        f"the worktree {worktree} no longer points at {repo_path}'s git dir (its .git file "
        "or commondir was changed); the daemon runs no git there"
    )


# ---------------------------------------------------------------- worktree records


@dataclass(frozen=True)
class Record:
    """git's record of a linked worktree (what ``git worktree list`` shows of it)."""

    admin: Path  # <common>/worktrees/<id>, real path
    path: Path  # the worktree its gitdir file names, real path
    locked: bool


def record_at(admin: Path) -> Record | None:
    """The record in admin dir ``admin``, as ``git worktree list`` reads it (its
    ``gitdir`` file, without the ``/.git``); None when that file is missing, unreadable
    or does not end in ``/.git`` (git lists no such record, or: ask git)."""
    try:
        text = _small_file(os.path.join(admin, "gitdir")).rstrip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.endswith("/.git"):
        return None
    path = os.path.realpath(os.path.join(admin, text.removesuffix("/.git")))  # relative: to admin
    return Record(Path(os.path.realpath(admin)), Path(path), (admin / "locked").exists())


def record_of(worktree: Path, common: Path) -> Record | None:
    """The record of the linked worktree at ``worktree`` among ``common``'s, read
    without listing them all: its ``.git`` file names an admin dir
    ``<common>/worktrees/<id>`` whose ``gitdir`` file names this worktree back. None
    when the files do not say so plainly (no ``.git`` file: gone, moved by hand or a
    main checkout; a record of another repository or of another path): ask git."""
    dot = worktree / ".git"
    if not dot.is_file() or dot.is_symlink():
        return None
    dirs = git_dirs(worktree)
    if dirs is None:
        return None
    admin = Path(os.path.realpath(dirs.gitdir))
    if admin.parent != Path(os.path.realpath(common)) / "worktrees":
        return None
    record = record_at(admin)
    if record is None or record.path != Path(os.path.realpath(worktree)):
        return None
    return record


def branch_holders(common: Path, branch: str) -> list[Path] | None:
    """The HEAD dirs (``common`` itself for the main checkout, else admin dirs) whose
    HEAD names ``refs/heads/<branch>``, read from every record's ``HEAD`` file as
    ``git worktree list`` would resolve them. None: ask git (a HEAD that is neither a
    branch nor a sha, a branch that is a symbolic ref, a reftable repository)."""
    if (common / "reftable").exists():
        return None
    records = common / "worktrees"
    try:
        heads = [common, *(Path(e.path) for e in os.scandir(records) if e.is_dir())]
    except FileNotFoundError:
        heads = [common]
    except OSError:
        return None
    holders = []
    for head_dir in heads:
        try:
            text = _small_file(os.path.join(head_dir, "HEAD")).strip()
        except FileNotFoundError:
            if head_dir != common and record_at(head_dir) is None:
                continue  # git lists no record without a gitdir (one being made or pruned)
            return None
        except (OSError, UnicodeDecodeError):
            return None
        if _SHA.fullmatch(text):
            continue  # detached
        if not text.startswith("ref: refs/heads/"):
            return None
        name = text.removeprefix("ref: refs/heads/")
        # git follows a branch that is itself a symbolic ref: then its target is "the" branch
        if not _loose(common, f"refs/heads/{name}")[0]:
            return None
        if name == branch:
            holders.append(head_dir)  # the caller sees whether git lists it (record_at)
    return holders

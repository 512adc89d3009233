"""Checks of what reaches git from outside: branch names, save refs, revisions, identities.

Untrusted names never reach an option position: branch names are checked
with ``git check-ref-format --branch``, revisions may not start with ``-``,
and callers put positional arguments after ``--end-of-options``. Paths of the
repo's files are checked by :func:`dispatcher.paths.inside_repo`.
"""

from __future__ import annotations

import functools
import re

from dispatcher.errors import InvalidInput
from dispatcher.git import cmd

_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_SAVE_REF_PREFIX = "refs/dispatcher/"


def _has_control(text: str) -> bool:
    """True if ``text`` holds a control character (which no name given to git may)."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _refuse_unplain(kind: str, value: str) -> None:
    """Refuse a ``kind`` of name that is empty, looks like an option or has control characters."""
    if not value:
        raise InvalidInput(f"{kind} is empty")
    if value.startswith("-"):
        raise InvalidInput(f"invalid {kind} {value!r}: must not start with '-'")
    if _has_control(value):
        raise InvalidInput(f"invalid {kind} {value!r}: contains control characters")


def check_rev(rev: str) -> str:
    """Refuse a revision that is empty, looks like an option or holds control characters."""
    _refuse_unplain("revision", rev)
    return rev


def identity(name: str, email: str) -> dict[str, str]:
    """Environment that makes ``name <email>`` both author and committer."""
    for value in (name, email):
        if not value.strip() or _has_control(value):
            raise InvalidInput(f"invalid git identity: {name!r} <{email}>")
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


# Names made only of these characters, with no empty component, pass every rule
# of git-check-ref-format(1) (no "..", no leading "." or "-", no ".lock" end, no
# "@{", no control or special characters): no git process is needed to know.
_PLAIN_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*")


def is_plain_branch(name: str) -> bool:
    """True if ``name`` passes every rule of git-check-ref-format(1) without asking git."""
    return _PLAIN_BRANCH.fullmatch(name) is not None and name != "HEAD"


@functools.lru_cache(maxsize=4096)
def _git_accepts_branch(name: str) -> bool:
    if is_plain_branch(name):
        return True
    # check-ref-format works outside a repository; "/" keeps any repo config out.
    return cmd.run(["check-ref-format", "--branch", name], "/", check=False).returncode == 0


def validate_branch_name(name: str) -> str:
    """Return ``name`` if it is a safe, valid branch name; else raise InvalidInput."""
    _refuse_unplain("branch name", name)
    if name in ("@", "HEAD") or "@{" in name:
        raise InvalidInput(f"invalid branch name {name!r}: reserved by git")
    if not _git_accepts_branch(name):
        raise InvalidInput(f"invalid branch name {name!r}: rejected by git check-ref-format")
    return name


def is_full_sha(rev: str) -> bool:
    """True if ``rev`` is a whole object name (40 hex digits): it names one commit forever."""
    return _FULL_SHA.fullmatch(rev) is not None


@functools.lru_cache(maxsize=4096)
def _git_accepts_ref(ref: str) -> bool:
    # No --end-of-options here (check-ref-format refuses it); callers pass "refs/...".
    return cmd.run(["check-ref-format", ref], "/", check=False).returncode == 0


def check_save_ref(ref: str) -> str:
    """Refuse a ref outside ``refs/dispatcher/`` or one git would not accept."""
    if not ref.startswith(_SAVE_REF_PREFIX) or len(ref) == len(_SAVE_REF_PREFIX):
        raise InvalidInput(f"invalid ref {ref!r}: must be under {_SAVE_REF_PREFIX}")
    if _has_control(ref) or not _git_accepts_ref(ref):
        raise InvalidInput(f"invalid ref {ref!r}: rejected by git check-ref-format")
    return ref

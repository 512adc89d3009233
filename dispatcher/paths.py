"""The one check of a path of the repo's files given in config, a request or to git
(``sparse:``, ``copy:``, ``link:``, a trigger's ``prompt-file``, the files the git
package reads from a commit). Standard library only, bar the error root."""

from __future__ import annotations

from pathlib import PurePosixPath

from dispatcher.errors import InvalidInput


def repo_subpath(value: str) -> str:
    """``value`` without surrounding ``/`` if it names a path inside the repo: relative,
    no ``..``, not the root itself, not git's own ``.git``, no control characters and
    no leading ``-`` or ``:`` (git's pathspec magic). Raises ValueError (for pydantic
    validators) saying what is wrong.
    """
    parts = PurePosixPath(value).parts
    if (
        not value
        or value.startswith(("/", "-", ":"))
        or "\\" in value
        or ".." in parts
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
    ):
        raise ValueError(f"'{value}' must be a relative path inside the repo (no '..')")
    value = value.strip("/")
    if value in ("", "."):
        raise ValueError("must name a path inside the repo, not its root")
    if ".git" in PurePosixPath(value).parts:
        raise ValueError(f"'{value}' is git's own data, not a path of the repo's files")
    return value


def inside_repo(value: str) -> str:
    """``value`` as given (a trailing ``/`` kept) if :func:`repo_subpath` accepts it;
    else :class:`~dispatcher.errors.InvalidInput` with its reason (for code, not pydantic)."""
    try:
        repo_subpath(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return value

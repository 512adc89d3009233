"""Forge repository names from git remote URLs, for routing webhook deliveries.

A delivery names its repository (``owner/name`` on GitHub, ``group/sub/name``
on GitLab); a registered repo is found by comparing that with the forge name
of its ``origin`` remote (or the ``--forge-name`` given at ``repo add``).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# git's scp-like syntax: [user@]host:path, with no slash before the colon.
_SCP = re.compile(r"(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")  # C:\repo is a local path, not host "C"


def forge_name_of(url: str) -> str | None:
    """``owner/name`` (or ``group/sub/name``) from a remote URL; ``None`` for local paths.

    Understands ``git@host:owner/name.git``, ``ssh://git@host:2222/owner/name.git``,
    ``https://[user:token@]host/owner/name[.git][/]`` and the ``git://`` forms.
    Case is kept as written; compare with :func:`same_repo`.
    """
    url = url.strip()
    if not url or _DRIVE.match(url):
        return None
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. a malformed IPv6 host
            return None
        if parts.scheme.lower() == "file" or not parts.hostname:
            return None
        path = parts.path
    else:
        match = _SCP.fullmatch(url)
        if match is None:
            return None  # a local path
        path = match["path"]
    return _name_of_path(path)


def _name_of_path(path: str) -> str | None:
    segments = [s for s in unquote(path).split("/") if s]
    if segments:
        segments[-1] = segments[-1].removesuffix(".git")
    if len(segments) < 2 or any(s in ("", ".", "..") for s in segments):
        return None
    return "/".join(segments)


def same_repo(a: str, b: str) -> bool:
    """Whether two forge names (or remote URLs) name the same repository.

    Forge names are case-insensitive (``Codertocat/Hello-World`` is
    ``codertocat/hello-world``); a trailing ``.git`` or slash does not matter.
    """
    key_a, key_b = _key(a), _key(b)
    return key_a is not None and key_a == key_b


def _key(value: str) -> str | None:
    name = forge_name_of(value) or _name_of_path(value.strip())
    return name.casefold() if name else None

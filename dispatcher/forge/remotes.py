"""A remote URL read as a forge location: scheme, host, port and repository path.

Understands ``https://host/owner/repo(.git)``, ``git@host:owner/repo.git`` and
``ssh://git@host[:port]/owner/repo.git``; anything else (a local path, ``file://``,
a URL with odd characters in its host or path) is not a forge remote. Pure, but for
:func:`clone_key`, which resolves a local path remote on the disk.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dispatcher.errors import InvalidInput

# git's scp-like syntax: [user@]host:path, with no slash before the colon.
_SCP = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/@\[\]]+):(?P<path>[^/].*)")
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_SEGMENT = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
_SCHEMES = frozenset({"https", "http", "ssh", "git"})


@dataclass(frozen=True)
class RemoteLocation:
    """Where a remote points: ``host`` (lower case), ``port`` (None: the default),
    ``scheme`` (``https``, ``http``, ``ssh``, ``git``) and ``path`` (``owner/repo``, or
    ``group/sub/repo`` on GitLab), without ``.git``."""

    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def owner(self) -> str:
        return self.path.rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def is_http(self) -> bool:
        return self.scheme in ("https", "http")


def parse_remote(url: str) -> RemoteLocation:
    """The forge location of ``url``; raises :class:`InvalidInput` (one line, the URL's
    credentials left out) when it is not a forge remote."""
    url = url.strip()
    if not url or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidInput("the remote URL is empty or has spaces or control characters")
    if "://" in url:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise InvalidInput(f"cannot read the remote URL {_shown(url)}") from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise InvalidInput(f"remote {_shown(url)} is not on a forge (scheme {scheme!r})")
        if parts.query or parts.fragment:
            raise InvalidInput(f"remote {_shown(url)} has a query or fragment")
        host, path = (parts.hostname or ""), parts.path
    else:
        match = _SCP.fullmatch(url)
        if match is None:
            raise InvalidInput(f"remote {_shown(url)} is a local path, not a forge")
        scheme, host, port, path = "ssh", match["host"], None, match["path"]
    host = host.lower().rstrip(".")
    if not _HOST.fullmatch(host) or len(host) > 253:
        raise InvalidInput(f"remote {_shown(url)} has no usable host name")
    return RemoteLocation(scheme=scheme, host=host, port=port, path=_repo_path(url, path))


def _repo_path(url: str, path: str) -> str:
    if "%" in path:
        path = unquote(path)
    segments = [s for s in path.split("/") if s]
    if segments:
        segments[-1] = segments[-1].removesuffix(".git")
    if len(segments) < 2 or not all(
        _SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments
    ):
        raise InvalidInput(f"remote {_shown(url)} does not name an owner/repository")
    return "/".join(segments)


def _shown(url: str) -> str:
    """The URL as it may appear in a message: no user or password, at most 200 chars."""
    text = re.sub(r"//[^/@]*@", "//", url)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return repr(text[:200])


def fork_of(fetch_url: str, push_url: str) -> str | None:
    """The fork (``owner/name``) a remote pushes to when its push URL (``git remote
    set-url --push``) names another repository than its fetch URL; None when both name
    the same one (by path: a push URL on another host or scheme that names the same
    repository is a mirror, not a fork) or either is no forge URL."""
    try:
        fetch, push = parse_remote(fetch_url), parse_remote(push_url)
    except InvalidInput:
        return None
    return None if push.path.lower() == fetch.path.lower() else push.path


def clone_key(url: str, top: Path) -> str | None:
    """What two clones of one repository have in common, whatever machine they are on
    and however they reach it: the normalised URL of their remote (docs/cluster.md,
    "Clones per node"); None for an empty URL.

    A forge remote is ``host/owner/name`` in lower case, without its scheme, user,
    port, trailing ``.git`` or ``/`` (``https://github.com/Owner/Name.git``,
    ``git@github.com:owner/name`` and ``ssh://git@github.com/owner/name`` are all
    ``github.com/owner/name``). A local path (``/srv/hub.git``, ``file:///srv/hub.git``,
    or one relative to the clone at ``top``) is its absolute real path (symlinks
    resolved; a trailing ``/.git`` dropped). Anything else is the URL with its
    credentials, trailing ``/`` and ``.git`` left out."""
    url = url.strip()
    if not url:
        return None
    try:
        where = parse_remote(url)
    except InvalidInput:
        pass
    else:
        return f"{where.host}/{where.path}".lower()
    local = _local_path(url)
    if local is not None:
        real = os.path.realpath(top / Path(local).expanduser())
        return real.removesuffix(os.sep + ".git") or os.sep
    text = re.sub(r"//[^/@]*@", "//", url).rstrip("/")
    return text.removesuffix(".git").rstrip("/") or text


def _local_path(url: str) -> str | None:
    """The path of a local remote (a plain path or ``file://``), else None."""
    if url.lower().startswith("file://"):
        return unquote(urlsplit(url).path) or None
    if "://" in url or _SCP.fullmatch(url):
        return None
    return url

"""The credentials a push (or fetch) of a remote is given (its host's token, for https),
and a repo's hub as the merge engine takes it."""

from __future__ import annotations

from pathlib import Path

from dispatcher.config import Settings
from dispatcher.errors import InvalidInput
from dispatcher.forge import hosts
from dispatcher.forge.remotes import parse_remote
from dispatcher.git import remote as git_remote
from dispatcher.git.merge import Hub


def push_credentials(settings: Settings, push_url: str) -> git_remote.Credentials | None:
    """The token of the push URL's host, for an https push (plain http to a loopback
    host only: elsewhere git would send it in clear after any 401); None otherwise
    (ssh, a local path: git's own ways)."""
    try:
        location = parse_remote(push_url)
    except InvalidInput:
        return None
    loopback = location.host in ("127.0.0.1", "localhost", "[::1]", "::1")
    if not (location.scheme == "https" or (location.scheme == "http" and loopback)):
        return None
    token = hosts.token_for(settings, location.host, location.port)
    if token is None:
        return None
    try:
        username = hosts.forge_for(settings, location).git_username
    except InvalidInput:
        username = "x-access-token"
    host = location.host + (f":{location.port}" if location.port is not None else "")
    return git_remote.Credentials(
        username, token.get_secret_value(), protocol=location.scheme, host=host
    )


def hub_of(settings: Settings, repo_path: Path, remote: str) -> Hub:
    """How a repo's hub (its shared remote, docs/cluster.md) is pushed to and fetched
    from: its name, the token of its push URL's host, the push timeout. NotFound when
    the clone has no such remote."""
    _, push_url = git_remote.remote_urls(repo_path, remote)
    return Hub(
        remote,
        credentials=push_credentials(settings, push_url),
        timeout=settings.push_timeout_seconds,
    )

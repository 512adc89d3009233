"""Which forge a remote is on: its kind, its API's base URL and its token (settings only).

``github.com`` is GitHub (API ``https://api.github.com``) and ``gitlab.com`` GitLab;
any other host is a forge only if ``DISPATCHER_FORGES`` names it. Tokens come from
``DISPATCHER_FORGE_TOKENS`` (per host) and nowhere else: never from a repo's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from dispatcher.config import Settings
from dispatcher.errors import InvalidInput
from dispatcher.forge.remotes import RemoteLocation

Kind = Literal["github", "gitlab", "gitea"]

_KNOWN: dict[str, tuple[Kind, str]] = {
    "github.com": ("github", "https://api.github.com"),
    "gitlab.com": ("gitlab", "https://gitlab.com/api/v4"),
    "codeberg.org": ("gitea", "https://codeberg.org/api/v1"),
}
_API_PATH: dict[Kind, str] = {"github": "/api/v3", "gitlab": "/api/v4", "gitea": "/api/v1"}
# The user name git sends with a token over https (the token is the password).
_GIT_USER: dict[Kind, str] = {
    "github": "x-access-token",
    "gitlab": "oauth2",
    "gitea": "x-access-token",
}
_NAMES: dict[Kind, str] = {"github": "GitHub", "gitlab": "GitLab", "gitea": "Gitea"}


@dataclass(frozen=True)
class Forge:
    """A forge repository as the API clients see it."""

    kind: Kind
    host: str
    api: str  # base URL, no trailing slash
    repo: str  # owner/name, or group/sub/name
    token: SecretStr | None

    @property
    def name(self) -> str:
        """``GitHub (github.com)``: how messages name it."""
        return f"{_NAMES[self.kind]} ({self.host})"

    @property
    def git_username(self) -> str:
        return _GIT_USER[self.kind]

    def __repr__(self) -> str:
        return f"Forge({self.kind}, {self.host}, {self.repo})"


def _key(location: RemoteLocation) -> list[str]:
    keys = [location.host]
    if location.port is not None:
        keys.insert(0, f"{location.host}:{location.port}")
    return keys


def token_for(settings: Settings, host: str, port: int | None = None) -> SecretStr | None:
    """The token set for ``host`` (``host:port`` first), or None."""
    tokens = {k.lower(): v for k, v in settings.forge_tokens.items()}
    for key in ([f"{host}:{port}"] if port is not None else []) + [host]:
        token = tokens.get(key)
        if token is not None and token.get_secret_value():
            return token
    return None


def forge_for(settings: Settings, location: RemoteLocation) -> Forge:
    """The forge of a remote; InvalidInput (one line) when its host is not a known forge."""
    forges = {k.lower(): v for k, v in settings.forges.items()}
    kind: Kind | None = None
    api = ""
    for key in _key(location):
        if key in forges:
            entry = forges[key]
            kind = "gitea" if entry.kind == "forgejo" else entry.kind
            web = location.host  # an https remote's port is the web's, and so the API's
            if location.port is not None and location.scheme == "https":
                web = f"{location.host}:{location.port}"
            api = entry.api or f"https://{web}{_API_PATH[kind]}"
            break
    else:
        if location.host in _KNOWN:
            kind, api = _KNOWN[location.host]
    if kind is None:
        raise InvalidInput(
            f"{location.host} is not a forge the daemon knows: name it in DISPATCHER_FORGES, "
            f'e.g. {{"{location.host}": {{"kind": "gitea"}}}} (docs/forge.md)'
        )
    return Forge(
        kind=kind,
        host=location.host,
        api=api.rstrip("/"),
        repo=location.path,
        token=token_for(settings, location.host, location.port),
    )

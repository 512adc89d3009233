"""The one interface of every forge's API: open a pull request, find the open one, label it.

Each forge's module (:mod:`.github`, :mod:`.gitlab`, :mod:`.gitea`) implements
:class:`ForgeClient` over one :class:`httpx.Client`; :func:`client_for` picks it.
Every failure is a :class:`ForgeError` of one line naming the forge and what to do;
no message ever holds the token (:func:`scrub`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from dispatcher.errors import ForgeError
from dispatcher.forge.hosts import Forge


class AlreadyExists(Exception):
    """The forge answered that an open pull request for the branch exists (internal)."""


@dataclass(frozen=True)
class PullRequest:
    """A pull (merge) request as the job records it."""

    number: int
    url: str
    state: str  # open, closed, merged, draft


@dataclass(frozen=True)
class ReviewNote:
    """A review's comment on a file (``line`` None: on the file, or the line is gone)."""

    path: str
    line: int | None
    body: str


@dataclass(frozen=True)
class NewPullRequest:
    head: str
    base: str
    title: str
    body: str
    draft: bool
    labels: tuple[str, ...]
    # The fork (``owner/name`` on the same forge) the head branch was pushed to; None:
    # the repository itself (docs/forge.md, "Forks").
    head_repo: str | None = None

    @property
    def head_owner(self) -> str | None:
        """The fork's owner (``owner`` of ``owner/name``), None for no fork."""
        return self.head_repo.rsplit("/", 1)[0] if self.head_repo else None


class ForgeClient(abc.ABC):
    """One forge repository's API."""

    def __init__(self, forge: Forge, http: httpx.Client) -> None:
        self.forge = forge
        self.http = http

    @abc.abstractmethod
    def headers(self) -> dict[str, str]:
        """The auth (and accept) headers of every request."""

    @abc.abstractmethod
    def create(self, new: NewPullRequest) -> PullRequest:
        """Open it; :class:`AlreadyExists` if one is open for the head branch."""

    @abc.abstractmethod
    def find_open(self, head: str, head_repo: str | None = None) -> PullRequest | None:
        """The open pull request whose head is the branch ``head`` (of the fork
        ``head_repo``, None: of the repository itself), if any."""

    labels_on_create = False  # True: a new pull request takes its labels with it

    @abc.abstractmethod
    def label(self, pr: PullRequest, labels: tuple[str, ...]) -> None:
        """Add ``labels`` to the pull request (forges whose create cannot)."""

    def review_comments(self, number: int, review_id: int) -> list[ReviewNote]:
        """The comments of one review of pull request ``number`` (forges whose review
        deliveries do not carry them; none: this forge's deliveries do, or it cannot)."""
        return []

    def open(self, new: NewPullRequest) -> tuple[PullRequest, bool]:
        """The pull request of ``new.head``: opened now (True) or the one already open.
        Labels are the caller's to add (:meth:`label`) once it has recorded the PR."""
        try:
            pr = self.create(new)
        except AlreadyExists:
            found = self.find_open(new.head, new.head_repo)
            if found is None:
                raise ForgeError(
                    f"{self.forge.name} says a pull request for {new.head} exists, but none "
                    "open was found for it; look on the forge"
                ) from None
            return found, False
        return pr, True

    # ----------------------------------------------------------------- requests

    def request(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        """``method`` ``api + path``; the JSON answer, or a one-line :class:`ForgeError`.
        A 409 or 422 that says "already exists" raises :class:`AlreadyExists`."""
        url = self.forge.api + path
        try:
            response = self.http.request(method, url, headers=self.headers(), **kwargs)
        except httpx.TimeoutException:
            raise ForgeError(f"{self.forge.name} did not answer in time ({what})") from None
        except httpx.HTTPError as exc:
            raise ForgeError(
                f"{self.forge.name} could not be reached ({what}): {scrub(str(exc), self.forge)}"
            ) from None
        if response.is_success:
            try:
                return response.json() if response.content else None
            except ValueError:
                raise ForgeError(f"{self.forge.name} answered {what} with no JSON") from None
        raise self.failure(response, what)

    def failure(self, response: httpx.Response, what: str) -> Exception:
        status = response.status_code
        said = scrub(_message(response), self.forge)
        name = self.forge.name
        host = self.forge.host
        if status in (409, 422) and "already exist" in said.lower():
            return AlreadyExists(said)
        if status == 429 or (status == 403 and _rate_limited(response)):
            return ForgeError(
                f"{name} rate-limited the request ({what}){_reset(response)}; try again later"
            )
        if status == 401:
            return ForgeError(
                f"{name} refused the token ({what}: 401); set a valid token for {host} in "
                "DISPATCHER_FORGE_TOKENS"
                if self.forge.token is not None
                else f"{name} wants a token ({what}: 401); set one for {host} in "
                "DISPATCHER_FORGE_TOKENS"
            )
        if status == 403:
            return ForgeError(
                f"{name} forbade {what} (403): the token for {host} lacks the permission"
                + (f": {said}" if said else "")
            )
        if status == 404:
            return ForgeError(
                f"{name} has no repository {self.forge.repo} or the token cannot see it "
                f"({what}: 404); check the remote URL and the token's access"
            )
        if status in (409, 422):
            return ForgeError(f"{name} refused {what} ({status}): {said or 'no reason given'}")
        return ForgeError(f"{name} answered {what} with {status}" + (f": {said}" if said else ""))


def _message(response: httpx.Response) -> str:
    """What the forge's error body says, on one line (at most 300 characters)."""
    try:
        data = response.json()
    except ValueError:
        return ""
    parts: list[str] = []
    if isinstance(data, dict):
        for key in ("message", "error", "error_description"):
            value = data.get(key)
            if isinstance(value, str):
                parts.append(value)
            elif isinstance(value, list):
                parts.extend(str(v) for v in value)
        for error in data.get("errors") or []:
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                parts.append(error["message"])
            elif isinstance(error, str):
                parts.append(error)
    text = "; ".join(parts)
    return " ".join(text.split())[:300]


def _rate_limited(response: httpx.Response) -> bool:
    return response.headers.get("x-ratelimit-remaining") == "0" or (
        "rate limit" in response.text.lower()
    )


def _reset(response: httpx.Response) -> str:
    reset = response.headers.get("x-ratelimit-reset") or response.headers.get("ratelimit-reset")
    if reset and reset.isdigit():
        when = datetime.fromtimestamp(int(reset), UTC).strftime("%H:%M:%S UTC")
        return f" until {when}"
    retry = response.headers.get("retry-after")
    return f" for {retry}s" if retry and retry.isdigit() else ""


def scrub(text: str, forge: Forge) -> str:
    """``text`` without the forge's token, should anything echo it."""
    if forge.token is not None:
        secret = forge.token.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return text


def client_for(forge: Forge, http: httpx.Client) -> ForgeClient:
    """The client of ``forge``'s kind."""
    from dispatcher.forge import gitea, github, gitlab

    kinds: dict[str, type[ForgeClient]] = {
        "github": github.GitHub,
        "gitlab": gitlab.GitLab,
        "gitea": gitea.Gitea,
    }
    return kinds[forge.kind](forge, http)


def head_in_repo(item: Any, repo: str) -> bool:
    """Whether a pull request's head branch is in ``repo`` itself, not a fork's branch of
    the same name (a head without its repo, as some versions answer, is taken as ours)."""
    head_repo = (item.get("head") or {}).get("repo") or {}
    name = head_repo.get("full_name") if isinstance(head_repo, dict) else None
    return name is None or str(name).lower() == repo.lower()


def issue_labels(
    client: ForgeClient, repo_path: str, pr: PullRequest, labels: tuple[str, ...]
) -> None:
    """Add ``labels`` to ``pr`` through its issue (GitHub's and Gitea's same route)."""
    client.request(
        "POST", f"{repo_path}/issues/{pr.number}/labels", what="labelling the pull request",
        json={"labels": list(labels)},
    )  # fmt: skip


def pull_of(data: Any, *, merged: bool) -> PullRequest:
    """A GitHub or Gitea pull request answer (``merged``: each says it its own way)."""
    state = "merged" if merged else str(data.get("state") or "open")
    if state == "open" and data.get("draft"):
        state = "draft"
    return PullRequest(number=int(data["number"]), url=str(data["html_url"]), state=state)

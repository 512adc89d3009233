"""Gitea's and Forgejo's REST API (v1): pulls, and labels by name on the PR's issue."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dispatcher.forge.client import (
    ForgeClient,
    NewPullRequest,
    PullRequest,
    head_in_repo,
    issue_labels,
    pull_of,
)


class Gitea(ForgeClient):
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "worktree-dispatcher"}
        if self.forge.token is not None:
            headers["Authorization"] = f"token {self.forge.token.get_secret_value()}"
        return headers

    def _repo(self) -> str:
        return "/repos/" + "/".join(quote(part, safe="") for part in self.forge.repo.split("/"))

    def create(self, new: NewPullRequest) -> PullRequest:
        # Gitea has no draft flag: a "WIP:" title prefix makes one.
        title = new.title if not new.draft else f"WIP: {new.title}"
        data = self.request(
            "POST", f"{self._repo()}/pulls", what="opening the pull request",
            json={"title": title, "body": new.body, "base": new.base,
                  # A fork's branch is named "owner:branch" (the fork on the same forge).
                  "head": f"{new.head_owner}:{new.head}" if new.head_owner else new.head},
        )  # fmt: skip
        return _pull(data)

    def find_open(self, head: str, head_repo: str | None = None) -> PullRequest | None:
        in_repo = head_repo or self.forge.repo
        page = 1
        while page <= 10:
            data = self.request(
                "GET", f"{self._repo()}/pulls", what="finding the open pull request",
                params={"state": "open", "page": page, "limit": 50},
            )  # fmt: skip
            for item in data or []:
                if item.get("head", {}).get("ref") == head and head_in_repo(item, in_repo):
                    return _pull(item)
            if not data or len(data) < 50:
                return None
            page += 1
        return None

    def label(self, pr: PullRequest, labels: tuple[str, ...]) -> None:
        issue_labels(self, self._repo(), pr, labels)


def _pull(data: Any) -> PullRequest:
    return pull_of(data, merged=bool(data.get("merged")))

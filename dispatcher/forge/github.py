"""GitHub's REST API (and GitHub Enterprise's at ``/api/v3``): pulls and issue labels."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dispatcher.forge.client import (
    ForgeClient,
    NewPullRequest,
    PullRequest,
    ReviewNote,
    head_in_repo,
    issue_labels,
    pull_of,
)


class GitHub(ForgeClient):
    def headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "worktree-dispatcher",
        }
        if self.forge.token is not None:
            headers["Authorization"] = f"Bearer {self.forge.token.get_secret_value()}"
        return headers

    def _repo(self) -> str:
        return "/repos/" + "/".join(quote(part, safe="") for part in self.forge.repo.split("/"))

    def create(self, new: NewPullRequest) -> PullRequest:
        data = self.request(
            "POST", f"{self._repo()}/pulls", what="opening the pull request",
            json={"title": new.title, "body": new.body, "base": new.base, "draft": new.draft,
                  # A fork's branch is named "owner:branch" (the fork on the same forge).
                  "head": f"{new.head_owner}:{new.head}" if new.head_owner else new.head},
        )  # fmt: skip
        return _pull(data)

    def find_open(self, head: str, head_repo: str | None = None) -> PullRequest | None:
        in_repo = head_repo or self.forge.repo
        owner = in_repo.split("/")[0]
        data = self.request(
            "GET", f"{self._repo()}/pulls", what="finding the open pull request",
            params={"head": f"{owner}:{head}", "state": "open"},
        )  # fmt: skip
        for item in data or []:
            if item.get("head", {}).get("ref") == head and head_in_repo(item, in_repo):
                return _pull(item)
        return None

    def label(self, pr: PullRequest, labels: tuple[str, ...]) -> None:
        issue_labels(self, self._repo(), pr, labels)

    def review_comments(self, number: int, review_id: int) -> list[ReviewNote]:
        data = self.request(
            "GET", f"{self._repo()}/pulls/{number}/reviews/{review_id}/comments",
            what="reading the review's comments", params={"per_page": 100},
        )  # fmt: skip
        notes = []
        for item in data if isinstance(data, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                continue
            line = item.get("line") if isinstance(item.get("line"), int) else None
            if line is None and isinstance(item.get("original_line"), int):
                line = item["original_line"]
            notes.append(ReviewNote(item["path"], line, str(item.get("body") or "")))
        return notes


def _pull(data: Any) -> PullRequest:
    return pull_of(data, merged=bool(data.get("merged_at")))

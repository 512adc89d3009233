"""GitLab's REST API (v4): merge requests of a project named by its url-encoded path."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dispatcher.forge.client import ForgeClient, NewPullRequest, PullRequest


class GitLab(ForgeClient):
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "worktree-dispatcher"}
        if self.forge.token is not None:
            headers["PRIVATE-TOKEN"] = self.forge.token.get_secret_value()
        return headers

    def _project(self) -> str:
        return "/projects/" + quote(self.forge.repo, safe="")

    def create(self, new: NewPullRequest) -> PullRequest:
        title = new.title if not new.draft else f"Draft: {new.title}"
        body: dict[str, Any] = {
            "source_branch": new.head, "target_branch": new.base, "title": title,
            "description": new.body, "remove_source_branch": False,
        }  # fmt: skip
        if new.labels:
            body["labels"] = ",".join(new.labels)
        data = self.request(
            "POST", f"{self._project()}/merge_requests", what="opening the merge request", json=body
        )
        return _merge_request(data)

    def find_open(self, head: str) -> PullRequest | None:
        data = self.request(
            "GET", f"{self._project()}/merge_requests", what="finding the open merge request",
            params={"source_branch": head, "state": "opened"},
        )  # fmt: skip
        for item in data or []:
            source, target = item.get("source_project_id"), item.get("target_project_id")
            if item.get("source_branch") == head and (source is None or source == target):
                return _merge_request(item)  # not a fork's of the same branch name
        return None

    labels_on_create = True  # a new merge request takes ``labels`` with it

    def label(self, pr: PullRequest, labels: tuple[str, ...]) -> None:
        """Add ``labels`` to a merge request found open (a new one took them already)."""
        self.request(
            "PUT", f"{self._project()}/merge_requests/{pr.number}",
            what="labelling the merge request", json={"add_labels": ",".join(labels)},
        )  # fmt: skip


def _merge_request(data: Any) -> PullRequest:
    state = {"opened": "open", "locked": "open"}.get(str(data.get("state")), str(data["state"]))
    if state == "open" and (data.get("draft") or data.get("work_in_progress")):
        state = "draft"
    return PullRequest(number=int(data["iid"]), url=str(data["web_url"]), state=state)

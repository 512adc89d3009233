"""GitLab's REST API (v4): merge requests of a project named by its url-encoded path.

A fork's merge request is made on the fork (the source project) with the upstream's
numeric ``target_project_id``, and lives in the upstream (its ``iid`` there)."""

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

    def _project(self, path: str | None = None) -> str:
        return "/projects/" + quote(path or self.forge.repo, safe="")

    def _project_id(self, path: str) -> int:
        """The numeric id of the project at ``path`` (a fork's or the upstream's)."""
        data = self.request("GET", self._project(path), what=f"reading the project {path}")
        return int(data["id"])

    def create(self, new: NewPullRequest) -> PullRequest:
        title = new.title if not new.draft else f"Draft: {new.title}"
        body: dict[str, Any] = {
            "source_branch": new.head, "target_branch": new.base, "title": title,
            "description": new.body, "remove_source_branch": False,
        }  # fmt: skip
        if new.labels:
            body["labels"] = ",".join(new.labels)
        source = self._project()
        if new.head_repo:  # made on the fork, aimed at the upstream
            body["target_project_id"] = self._project_id(self.forge.repo)
            source = self._project(new.head_repo)
        data = self.request(
            "POST", f"{source}/merge_requests", what="opening the merge request", json=body
        )
        return _merge_request(data)

    def find_open(self, head: str, head_repo: str | None = None) -> PullRequest | None:
        fork = self._project_id(head_repo) if head_repo else None
        data = self.request(
            "GET", f"{self._project()}/merge_requests", what="finding the open merge request",
            params={"source_branch": head, "state": "opened"},
        )  # fmt: skip
        for item in data or []:
            source, target = item.get("source_project_id"), item.get("target_project_id")
            if item.get("source_branch") != head:
                continue
            if fork is not None and source == fork:
                return _merge_request(item)
            if fork is None and (source is None or source == target):
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

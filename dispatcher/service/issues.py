"""The local issue inbox: file an issue (it emits ``issues`` ``opened``), list a repo's."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.events.intake import Intake
from dispatcher.store.database import AlreadyMade, Store
from dispatcher.store.models import IdempotencyKey, Issue, IssueCreate, IssuePublic, Repo
from triggers.events import Event


@dataclass(eq=False)
class Issues:
    """Local issues: each filed one is kept and emits its ``opened`` event once."""

    store: Store
    intake: Intake

    def file(
        self, repo_name: str, req: IssueCreate, *, idem: IdempotencyKey | None = None
    ) -> IssuePublic:
        """The local issue inbox: keep the issue, and emit ``issues`` ``opened``."""
        repo = self.store.repo_by_name(repo_name)
        assert repo.id is not None
        issue = self._add(repo.id, req, idem)
        assert issue.id is not None
        if issue.event_id is None:  # its event, once (its dedup key is the issue's)
            self._opened(repo, issue)
        return self._public(repo, self.store.issue(issue.id))

    def _add(self, repo_id: int, req: IssueCreate, idem: IdempotencyKey | None) -> Issue:
        """The new issue, or the one ``idem`` made already (the daemon stopped before it
        could answer)."""
        made = self.store.made_by(idem, "issue")
        if made is not None:
            return self.store.issue(made)
        new = Issue(repo_id=repo_id, number=0, title=req.title, body=req.body, labels=req.labels)
        try:
            return self.store.add_issue(new, idem=idem)
        except AlreadyMade as made_meanwhile:
            return self.store.issue(made_meanwhile.resource_id)

    def _opened(self, repo: Repo, issue: Issue) -> None:
        """Emit the issue's ``issues`` ``opened`` event and link it to the issue."""
        assert issue.id is not None
        event = Event(
            kind="issues",
            action="opened",
            source="local",
            dedup_key=f"local:{repo.name}:issue:{issue.number}:opened",
            repo=repo.name,
            payload={
                "action": "opened",
                "issue": {
                    "number": issue.number,
                    "title": issue.title,
                    "body": issue.body,
                    "labels": [{"name": label} for label in issue.labels],
                    "user": {"login": "local"},
                    "state": "open",
                },
                "repository": {"name": repo.name, "full_name": repo.forge_name or repo.name},
                "sender": {"login": "local"},
            },
            labels=list(issue.labels),
            author="local",
            text=f"{issue.title}\n{issue.body}",
        )
        result = self.intake.ingest(event, repo)
        if result.event_id is not None:
            self.store.set_issue_event(issue.id, result.event_id)

    def all(self, repo_name: str) -> list[IssuePublic]:
        repo = self.store.repo_by_name(repo_name)
        assert repo.id is not None
        return [self._public(repo, i) for i in self.store.issues(repo.id)]

    def _public(self, repo: Repo, issue: Issue) -> IssuePublic:
        jobs: list[int] = []
        if issue.event_id is not None:
            jobs = self.store.job_ids_for_events([issue.event_id]).get(issue.event_id, [])
        return IssuePublic(**issue.model_dump(exclude={"id", "repo_id"}), repo=repo.name, jobs=jobs)

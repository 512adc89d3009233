"""What a forge delivery says about a pull request: merged, closed, CI failed, changes asked.

The fix loop (docs/forge.md, "Fix loops") acts on a job's own pull request; it needs
fewer facts than a trigger and from more deliveries than the trigger events carry
(reviews, check suites, commit statuses, GitLab jobs). :func:`from_github` (GitHub,
Gitea, Forgejo) and :func:`from_gitlab` turn one delivery into a :class:`PrFact`, or
``None`` when it says nothing the fix loop acts on. Pure, like the rest of
:mod:`triggers.webhooks`: no I/O, and nothing here raises on an odd payload.

Everything in a fact but its kind is untrusted text from the forge (a comment body, a
check's output): the fix loop only ever puts it in a prompt, as data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict

from triggers.webhooks.github import _dig, _int, _list, _obj, _sha, _str

FactKind = Literal["merged", "closed", "ci_failed", "changes_requested", "comment"]

FAILED_CONCLUSIONS = frozenset({"failure", "timed_out", "startup_failure"})
"""GitHub check and workflow conclusions that count as a CI failure."""

MAX_TEXT = 8000  # characters of a log excerpt, review or comment kept for the prompt


@dataclass(frozen=True)
class ReviewComment:
    """One comment of a review on a line of a file (``line`` None: on the file)."""

    path: str
    line: int | None
    body: str


@dataclass(frozen=True)
class PrFact:
    """One delivery's news about a pull request, for the fix loop.

    The PR is named by whatever the delivery carries: its ``number``, its
    ``head_branch``, its ``head_sha`` (a commit status has only the sha and branches).
    """

    kind: FactKind
    number: int | None = None
    head_branch: str | None = None
    head_sha: str | None = None
    name: str | None = None  # the failing check, workflow or pipeline; the reviewer
    text: str = ""  # log excerpt, review body, comment body (untrusted)
    author: str | None = None  # forge login of the reviewer or commenter
    association: str | None = None  # GitHub's author_association (OWNER, MEMBER, ...)
    comments: tuple[ReviewComment, ...] = field(default_factory=tuple)
    review_id: int | None = None  # GitHub: its comments can be asked for
    url: str | None = None
    # Where the PR's head commits live: ``from_fork`` when not known to be the base repo
    # (another repository, or one deleted: ``head.repo`` null); ``same_repo`` only when
    # the delivery says it is the base repo. A fact with neither (a check run of no PR)
    # is acted on only if it names a PR by number (docs/forge.md, "Fix loops").
    from_fork: bool = False
    same_repo: bool = False

    @property
    def is_fix(self) -> bool:
        """A fact that asks for a follow-up (not a closed or merged PR)."""
        return self.kind in ("ci_failed", "changes_requested", "comment")


def _clip(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n…"


def _joined(*parts: str | None) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


class _Where(TypedDict, total=False):
    from_fork: bool
    same_repo: bool


def _same_repo(head: object, base: object) -> bool | None:
    """Whether the ``head`` repository object is the ``base`` one: its id and its full
    name, each that both say, agree; None when neither is said of both (a head repo
    null: a deleted fork)."""
    h, b = _obj(head), _obj(base)
    pairs = [
        (_int(h.get("id")), _int(b.get("id"))),
        ((_str(h.get("full_name")) or "").lower() or None,
         (_str(b.get("full_name")) or "").lower() or None),
    ]  # fmt: skip
    known = [(x, y) for x, y in pairs if x is not None and y is not None]
    return all(x == y for x, y in known) if known else None


def _where(head: object, base: object, *, pr: bool) -> _Where:
    """``from_fork`` and ``same_repo`` of a fact whose head repository is ``head``. A
    pull request's own head (``pr``) not known to be the base is a fork's; a check's or
    run's unknown head is neither (then only its PR number can name a job's PR)."""
    same = _same_repo(head, base)
    if pr:
        return _Where(from_fork=same is not True, same_repo=same is True)
    return _Where(from_fork=same is False, same_repo=same is True)


def _pr_where(payload: Mapping[str, Any], pr: Mapping[str, Any]) -> _Where:
    base = _dig(pr, "base", "repo") or payload.get("repository")
    return _where(_dig(pr, "head", "repo"), base, pr=True)


def _pr_numbers(items: object) -> int | None:
    """The first pull request number of a check's or run's ``pull_requests`` list."""
    for item in _list(items):
        number = _int(_obj(item).get("number"))
        if number is not None:
            return number
    return None


# --- GitHub, Gitea, Forgejo ------------------------------------------------------


def from_github(event: str, payload: Mapping[str, Any], source: str = "github") -> PrFact | None:
    """The fact of a GitHub (or Gitea/Forgejo) delivery of type ``event``, if any.
    ``source``: the forge that sent it (``github.source_of``); only GitHub's
    ``author_association`` is kept (Gitea's field of that name is not GitHub's word)."""
    body: object = payload
    if not isinstance(body, Mapping):
        return None
    reader = _GITHUB.get(event)
    fact = reader(payload) if reader is not None else None
    if fact is not None and source != "github" and fact.association is not None:
        fact = replace(fact, association=None)
    return fact


def _pull_request(payload: Mapping[str, Any]) -> PrFact | None:
    if _str(payload.get("action")) != "closed":
        return None
    pr = _obj(payload.get("pull_request"))
    merged = pr.get("merged") is True or bool(_str(pr.get("merged_at")))
    return PrFact(
        **_pr_where(payload, pr),
        kind="merged" if merged else "closed",
        number=_int(pr.get("number")) or _int(payload.get("number")),
        head_branch=_str(_dig(pr, "head", "ref")),
        head_sha=_sha(_dig(pr, "head", "sha")),
        author=_str(_dig(payload, "sender", "login")),
        url=_str(pr.get("html_url")),
    )


def _check_run(payload: Mapping[str, Any]) -> PrFact | None:
    check = _obj(payload.get("check_run"))
    if _str(payload.get("action")) != "completed":
        return None
    if _str(check.get("conclusion")) not in FAILED_CONCLUSIONS:
        return None
    output = _obj(check.get("output"))
    suite = _obj(check.get("check_suite"))
    return PrFact(
        **_where(suite.get("head_repository"), payload.get("repository"), pr=False),
        kind="ci_failed",
        number=_pr_numbers(check.get("pull_requests")),
        head_branch=_str(_dig(check, "check_suite", "head_branch")),
        head_sha=_sha(check.get("head_sha")),
        name=_str(check.get("name")) or "check run",
        text=_clip(
            _joined(
                _str(output.get("title")), _str(output.get("summary")), _str(output.get("text"))
            )
        ),
        url=_str(check.get("html_url")) or _str(check.get("details_url")),
    )


def _check_suite(payload: Mapping[str, Any]) -> PrFact | None:
    suite = _obj(payload.get("check_suite"))
    if _str(payload.get("action")) != "completed":
        return None
    if _str(suite.get("conclusion")) not in FAILED_CONCLUSIONS:
        return None
    app = _str(_dig(suite, "app", "name"))
    return PrFact(
        **_where(suite.get("head_repository"), payload.get("repository"), pr=False),
        kind="ci_failed",
        number=_pr_numbers(suite.get("pull_requests")),
        head_branch=_str(suite.get("head_branch")),
        head_sha=_sha(suite.get("head_sha")),
        name=f"{app} check suite" if app else "check suite",
        text=f"The check suite concluded {_str(suite.get('conclusion'))}.",
        url=_str(suite.get("url")),
    )


def _workflow_run(payload: Mapping[str, Any]) -> PrFact | None:
    run = _obj(payload.get("workflow_run"))
    if _str(payload.get("action")) != "completed":
        return None
    if _str(run.get("conclusion")) not in FAILED_CONCLUSIONS:
        return None
    name = _str(run.get("name")) or _str(_dig(payload, "workflow", "name")) or "workflow"
    return PrFact(
        **_where(run.get("head_repository"), payload.get("repository"), pr=False),
        kind="ci_failed",
        number=_pr_numbers(run.get("pull_requests")),
        head_branch=_str(run.get("head_branch")),
        head_sha=_sha(run.get("head_sha")),
        name=name,
        # Not its display_title: a fork's commit message or PR title, anyone's text.
        text=f"The workflow run concluded {_str(run.get('conclusion'))}.",
        url=_str(run.get("html_url")),
    )


def _status(payload: Mapping[str, Any]) -> PrFact | None:
    """A commit status (GitHub's ``status``, Gitea's and Forgejo's commit status)."""
    if _str(payload.get("state")) not in ("failure", "error"):
        return None
    branches = [_str(_obj(b).get("name")) for b in _list(payload.get("branches"))]
    branch = next((b for b in branches if b), None)
    return PrFact(
        same_repo=branch is not None,  # the commit is the tip of the base repo's branch
        kind="ci_failed",
        head_branch=branch,
        head_sha=_sha(payload.get("sha")),
        name=_str(payload.get("context")) or "commit status",
        text=_clip(
            _joined(_str(payload.get("description")), f"State: {_str(payload.get('state'))}.")
        ),
        url=_str(payload.get("target_url")),
    )


def _review(payload: Mapping[str, Any]) -> PrFact | None:
    """GitHub's ``pull_request_review`` submitted with changes requested."""
    review = _obj(payload.get("review"))
    state = (_str(review.get("state")) or "").lower()
    if _str(payload.get("action")) != "submitted" or state != "changes_requested":
        return None
    return _review_fact(payload, review, _str(review.get("body")))


def _gitea_review_rejected(payload: Mapping[str, Any]) -> PrFact | None:
    """Gitea's and Forgejo's ``pull_request_review_rejected`` (changes requested)."""
    review = _obj(payload.get("review"))
    return _review_fact(payload, review, _str(review.get("content")))


def _review_fact(payload: Mapping[str, Any], review: Mapping[str, Any], text: str | None) -> PrFact:
    pr = _obj(payload.get("pull_request"))
    user = _obj(review.get("user")) or _obj(payload.get("sender"))
    return PrFact(
        **_pr_where(payload, pr),
        kind="changes_requested",
        number=_int(pr.get("number")) or _int(payload.get("number")),
        head_branch=_str(_dig(pr, "head", "ref")),
        head_sha=_sha(_dig(pr, "head", "sha")),
        name=_str(user.get("login")),
        text=_clip(text),
        author=_str(user.get("login")),
        association=_str(review.get("author_association")),
        review_id=_int(review.get("id")),
        url=_str(review.get("html_url")),
    )


def _issue_comment(payload: Mapping[str, Any]) -> PrFact | None:
    """A new comment on a pull request (``issue.pull_request`` marks it one)."""
    if _str(payload.get("action")) != "created":
        return None
    issue = _obj(payload.get("issue"))
    on_pr = bool(_obj(issue.get("pull_request"))) or payload.get("is_pull") is True
    if not on_pr:  # GitHub marks a PR's comment by issue.pull_request; Gitea by is_pull
        return None
    comment = _obj(payload.get("comment"))
    pr = _obj(payload.get("pull_request"))  # a mapped GitLab note carries it
    return PrFact(
        **(_pr_where(payload, pr) if _dig(pr, "head", "repo") else _Where()),
        kind="comment",
        number=_int(issue.get("number")),
        head_branch=_str(_dig(pr, "head", "ref")),
        text=_clip(_str(comment.get("body"))),
        author=_str(_dig(comment, "user", "login")) or _str(_dig(payload, "sender", "login")),
        association=_str(comment.get("author_association")),
        url=_str(comment.get("html_url")),
    )


_GITHUB = {
    "pull_request": _pull_request,
    "check_run": _check_run,
    "check_suite": _check_suite,
    "workflow_run": _workflow_run,
    "status": _status,
    "pull_request_review": _review,
    "pull_request_review_rejected": _gitea_review_rejected,
    "issue_comment": _issue_comment,
    "pull_request_comment": _issue_comment,  # Gitea's and Forgejo's name for it on a PR
}


# --- GitLab ------------------------------------------------------------------------


def from_gitlab(hook: str, payload: Mapping[str, Any]) -> PrFact | None:
    """The fact of a GitLab delivery (``X-Gitlab-Event`` ``hook``), if any."""
    body: object = payload
    if not isinstance(body, Mapping):
        return None
    reader = _GITLAB.get(hook)
    return reader(payload) if reader is not None else None


def _merge_request_hook(payload: Mapping[str, Any]) -> PrFact | None:
    attrs = _obj(payload.get("object_attributes"))
    action = _str(attrs.get("action"))
    if action not in ("merge", "close"):
        return None
    return PrFact(
        **_gitlab_where(attrs),
        kind="merged" if action == "merge" else "closed",
        number=_int(attrs.get("iid")),
        head_branch=_str(attrs.get("source_branch")),
        head_sha=_sha(_dig(attrs, "last_commit", "id")),
        author=_str(_dig(payload, "user", "username")),
        url=_str(attrs.get("url")),
    )


def _gitlab_where(mr: Mapping[str, Any]) -> _Where:
    """A merge request is a fork's unless its source project is known to be its target."""
    source, target = _int(mr.get("source_project_id")), _int(mr.get("target_project_id"))
    same = source is not None and source == target
    return _Where(from_fork=not same, same_repo=same)


def _failed_builds(builds: object) -> str | None:
    """``stage/name: failure reason`` of a pipeline's failed jobs, one a line."""
    lines = []
    for build in _list(builds):
        b = _obj(build)
        if _str(b.get("status")) != "failed":
            continue
        reason = _str(b.get("failure_reason"))
        where = "/".join(x for x in (_str(b.get("stage")), _str(b.get("name"))) if x)
        lines.append(f"- {where or 'a job'} failed" + (f": {reason}" if reason else ""))
    return "Failed jobs:\n" + "\n".join(lines) if lines else None


def _pipeline_hook(payload: Mapping[str, Any]) -> PrFact | None:
    attrs = _obj(payload.get("object_attributes"))
    if _str(attrs.get("status")) != "failed":
        return None
    mr = _obj(payload.get("merge_request"))
    ref = _str(attrs.get("ref"))
    if mr:  # a merge request's pipeline runs its source branch (ref: refs/merge-requests/..)
        ref = _str(mr.get("source_branch")) or ref
    name = _str(attrs.get("name")) or "pipeline"
    # No merge request: a branch pipeline of the project the hook is of.
    where = _gitlab_where(mr) if mr else _Where(from_fork=False, same_repo=True)
    return PrFact(
        **where,
        kind="ci_failed",
        number=_int(mr.get("iid")) if mr else None,
        head_branch=ref,
        head_sha=_sha(attrs.get("sha")),
        name=name,
        text=_clip(_joined("The pipeline failed.", _failed_builds(payload.get("builds")))),
        url=_str(attrs.get("url")),
    )


def _job_hook(payload: Mapping[str, Any]) -> PrFact | None:
    """A CI job's end (``Job Hook``; older GitLab: ``Build Hook``)."""
    if _str(payload.get("build_status")) != "failed":
        return None
    if payload.get("build_allow_failure") is True:
        return None
    stage, name = _str(payload.get("build_stage")), _str(payload.get("build_name"))
    reason = _str(payload.get("build_failure_reason"))
    ref = _str(payload.get("ref")) if payload.get("tag") is not True else None
    branch = ref if ref and not ref.startswith("refs/") else None  # not refs/merge-requests/..
    return PrFact(
        same_repo=branch is not None,  # a job on a branch of the project the hook is of
        kind="ci_failed",
        head_branch=branch,
        head_sha=_sha(payload.get("sha")),
        name=name or "job",
        text=_clip(
            f"The job {'/'.join(x for x in (stage, name) if x) or '?'} failed"
            + (f": {reason}." if reason else ".")
        ),
    )


def _note_hook(payload: Mapping[str, Any]) -> PrFact | None:
    attrs = _obj(payload.get("object_attributes"))
    if attrs.get("system") is True or _str(attrs.get("noteable_type")) != "MergeRequest":
        return None
    if (_str(attrs.get("action")) or "create") != "create":
        return None
    mr = _obj(payload.get("merge_request"))
    position = _obj(attrs.get("position"))
    path = _str(position.get("new_path")) or _str(position.get("old_path"))
    comments: tuple[ReviewComment, ...] = ()
    if path:
        line = _int(position.get("new_line")) or _int(position.get("old_line"))
        comments = (ReviewComment(path, line, _clip(_str(attrs.get("note")))),)
    return PrFact(
        **_gitlab_where(mr),
        kind="comment",
        number=_int(mr.get("iid")),
        head_branch=_str(mr.get("source_branch")),
        head_sha=_sha(_dig(mr, "last_commit", "id")),
        text=_clip(_str(attrs.get("note"))),
        author=_str(_dig(payload, "user", "username")),
        comments=comments,
        url=_str(attrs.get("url")),
    )


_GITLAB = {
    "Merge Request Hook": _merge_request_hook,
    "Pipeline Hook": _pipeline_hook,
    "Job Hook": _job_hook,
    "Build Hook": _job_hook,
    "Note Hook": _note_hook,
}

"""Forge webhooks: real HMAC signatures over GitHub's and GitLab's documented examples.

The payloads under ``tests/fixtures/webhooks/`` are byte-identical copies of the
published examples (sources and licenses in its README). Each one is signed
with a real HMAC and verified, tampered with and refused, and normalized into
an Event whose facts are checked. Hostile payloads (wrong types everywhere,
huge strings) must normalize or be ignored, never raise.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from triggers.config import parse
from triggers.events import Event
from triggers.match import matching
from triggers.webhooks import forge_name_of, github, gitlab, same_repo

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
GITHUB = sorted((FIXTURES / "github").glob("*.json"))
GITLAB = sorted((FIXTURES / "gitlab").glob("*.json"))
SECRET = "It's a Secret to Everybody"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"

# sha256 of each copy: the fixtures are the published examples, unedited.
FIXTURE_SHA256 = {
    "github/check_run.completed.json": (
        "0c8bef19e50e4c66848fe3c109efdf1ccc70429ce9d866beb7c2898af0950aae"
    ),
    "github/issue_comment.created.json": (
        "d68665d981f7bcbdaf1d9475a192926a541fdfcb0f371e0cac21dee6cf61e992"
    ),
    "github/issues.labeled.json": (
        "3dad29fe34322cf1950124aeabcd9fc9e54defe0a1a6866beba7bbce2af8d909"
    ),
    "github/issues.opened.json": (
        "1ea1371002b77529f6cf97deb68533261b5c71f081ac360fe275933289de5ece"
    ),
    "github/pull_request.closed.json": (
        "938c4ee2271312ff3ce6821bb485a46e414e6ba3c202ca2d8611dd8ebc3128f9"
    ),
    "github/pull_request.opened.json": (
        "d34772e6b4b912586626b71101fd7e9f529943866c895dcb3381ec476003e834"
    ),
    "github/pull_request.synchronize.json": (
        "f44e3cd19cbaab487e59bfe89ce571661927247c229ccd051238c73f5c014792"
    ),
    "github/push.json": ("c1cab5f4e9bc7d5c85665397a008a2a0410e9db8fb566d347c30f85fe5526292"),
    "github/push.deleted-tag.json": (
        "909b4665b3d1ee7c6c0430f0d4d25167169954e57bfb0c80c9f70152b5fed288"
    ),
    "github/workflow_run.completed.json": (
        "57eccd50c2f8be579477d5c8c7e0197b9fc64978688e149c97352185b163506a"
    ),
    "gitlab/issue.json": ("2aaadf6f4467abc7b018854a57dffa08b468d4217b67240832972a0f3302db3b"),
    "gitlab/merge_request.json": (
        "3ba17ad8707bc65f82ad77985d6017910f170e37517a1c008975a1b77cd75500"
    ),
    "gitlab/note.json": ("089a8c94699882d5bb445eb31b0312363dcc83d7c4e5b73ab9db0b3a49d8750d"),
    "gitlab/pipeline.json": ("ac5fd129867b6d8b5ef6ca425100cd9c533d2782703f4eac10244c2847abbdbb"),
    "gitlab/push.json": ("aee5e0eac8a4692fa54dbb83c120595da4996be4c3c287ce855754384433aac0"),
}

GITLAB_EVENTS = {
    "issue.json": "Issue Hook",
    "note.json": "Note Hook",
    "merge_request.json": "Merge Request Hook",
    "push.json": "Push Hook",
    "pipeline.json": "Pipeline Hook",
}


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_bytes())
    assert isinstance(data, dict)
    return data


def github_event(path: Path) -> str:
    return path.name.split(".", 1)[0]  # issues.opened.json -> issues


def sign(body: bytes, secret: str = SECRET, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, algorithm).hexdigest()


def gh(name: str) -> Event:
    path = FIXTURES / "github" / name
    event = github.normalize(github_event(path), DELIVERY, load(path))
    assert event is not None
    return event


def gl(name: str, payload: dict[str, Any] | None = None) -> Event | None:
    path = FIXTURES / "gitlab" / name
    return gitlab.normalize(GITLAB_EVENTS[name], DELIVERY, payload or load(path))


# --- the fixtures themselves --------------------------------------------------


def test_fixtures_are_the_published_examples() -> None:
    found = {str(p.relative_to(FIXTURES)): p for p in FIXTURES.glob("*/*.json")}
    assert set(found) == set(FIXTURE_SHA256)
    for name, path in found.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == FIXTURE_SHA256[name], name
    readme = (FIXTURES / "README.md").read_text()
    assert "MIT" in readme
    assert "CC BY-SA 4.0" in readme


# --- GitHub signatures ----------------------------------------------------------


def test_github_documented_test_vector() -> None:
    # From GitHub's "Validating webhook deliveries": this secret and body give this signature.
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github.verify(b"Hello, World!", {"X-Hub-Signature-256": signature}, SECRET)
    assert not github.verify(b"Hello, World?", {"X-Hub-Signature-256": signature}, SECRET)


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_signature_accepted(path: Path) -> None:
    body = path.read_bytes()
    headers = {"X-Hub-Signature-256": "sha256=" + sign(body)}
    assert github.verify(body, headers, SECRET)
    # Header names are case-insensitive (ASGI servers hand them over lower-cased).
    assert github.verify(body, {"x-hub-signature-256": headers["X-Hub-Signature-256"]}, SECRET)


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_signature_refused(path: Path) -> None:
    body = path.read_bytes()
    good = sign(body)
    middle = len(body) // 2
    tampered = body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]
    assert not github.verify(tampered, {"X-Hub-Signature-256": "sha256=" + good}, SECRET)
    assert not github.verify(body + b" ", {"X-Hub-Signature-256": "sha256=" + good}, SECRET)
    wrong_secret = "sha256=" + sign(body, "not the secret")
    assert not github.verify(body, {"X-Hub-Signature-256": wrong_secret}, SECRET)
    assert not github.verify(body, {}, SECRET)
    assert not github.verify(body, {"X-GitHub-Event": github_event(path)}, SECRET)
    for garbage in (
        "sha256=garbage",
        "sha256=",
        "sha256",
        "",
        good,  # the right digest without its "sha256=" prefix
        "sha256=" + good[:-1],
        "sha256=" + good + "0",
        "sha256= " + good,
        "SHA256=" + good,
        "sha256=" + "é" * 64,
        "sha1=" + sign(body, algorithm="sha1"),
        "sha256=" + sign(body, algorithm="sha1"),
        "sha256=" + sign(body, algorithm="sha512"),
        "sha512=" + sign(body, algorithm="sha512"),
        "sha256=" + hashlib.sha256(body).hexdigest(),  # a plain hash, no secret
    ):
        assert not github.verify(body, {"X-Hub-Signature-256": garbage}, SECRET), garbage
    # The legacy SHA-1 header alone is not enough.
    assert not github.verify(
        body, {"X-Hub-Signature": "sha1=" + sign(body, algorithm="sha1")}, SECRET
    )
    # An empty secret verifies nothing, not even a signature made with it.
    assert not github.verify(body, {"X-Hub-Signature-256": "sha256=" + sign(body, "")}, "")


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_gitea_and_forgejo_signatures(path: Path) -> None:
    body = path.read_bytes()
    good = sign(body)
    assert github.verify(body, {"X-Gitea-Signature": good}, SECRET)
    assert github.verify(body, {"x-forgejo-signature": good}, SECRET)
    assert github.verify(body, {"X-Gitea-Signature": good.upper()}, SECRET)
    assert not github.verify(body + b"x", {"X-Gitea-Signature": good}, SECRET)
    assert not github.verify(body, {"X-Gitea-Signature": sign(body, "other")}, SECRET)
    assert not github.verify(body, {"X-Gitea-Signature": "sha256=" + good}, SECRET)
    assert not github.verify(body, {"X-Forgejo-Signature": ""}, SECRET)
    # A present but wrong X-Hub-Signature-256 is not rescued by a Gitea header.
    headers = {"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-Gitea-Signature": good}
    assert not github.verify(body, headers, SECRET)


def test_github_headers() -> None:
    headers = {"x-github-delivery": f" {DELIVERY} ", "X-GitHub-Event": "issues"}
    assert github.delivery_id(headers) == DELIVERY
    assert github.event_name(headers) == "issues"
    assert github.source_of(headers) == "github"
    assert github.delivery_id({}) is None
    assert github.event_name({}) is None
    assert github.delivery_id({"X-GitHub-Delivery": "  "}) is None
    # Gitea sends its own headers next to the GitHub-compatible ones.
    gitea = {"X-Gitea-Delivery": "g-1", "X-Gitea-Event": "push", "X-GitHub-Event": "push"}
    assert github.delivery_id(gitea) == "g-1"
    assert github.event_name(gitea) == "push"
    assert github.source_of(gitea) == "gitea"
    forgejo = {"X-Forgejo-Delivery": "f-1", "X-Forgejo-Event": "pull_request"}
    assert github.delivery_id(forgejo) == "f-1"
    assert github.event_name(forgejo) == "pull_request"
    assert github.source_of(forgejo) == "gitea"


# --- GitHub normalize ------------------------------------------------------------

CODERTOCAT = "Codertocat/Hello-World"
PR_HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
PR_TEXT = (
    "Update the README with new information.\n"
    "This is a pretty simple change that we need to pull into master."
)
ISSUE_TEXT = (
    "Spelling error in the README file\n"
    "It looks like you accidently spelled 'commit' with two 't's."
)

# What every example pull request event of GitHub's says (but its action and before).
PR_FACTS = {
    "kind": "pull_request",
    "branch": "master",
    "head_branch": "changes",
    "sha": PR_HEAD,
    "labels": ["bug"],
    "text": PR_TEXT,
}

# Facts each fixture must produce; every Event field not named must be at its default.
GITHUB_FACTS: dict[str, dict[str, Any]] = {
    "issues.opened.json": {
        "kind": "issues",
        "action": "opened",
        "labels": ["bug"],
        "text": ISSUE_TEXT,
    },
    "issues.labeled.json": {
        "kind": "issues",
        "action": "labeled",
        "labels": ["bug"],
        "added_label": "bug",
        "text": ISSUE_TEXT,
    },
    "issue_comment.created.json": {
        "kind": "issue_comment",
        "action": "created",
        "labels": ["bug"],
        "text": "You are totally right! I'll get this fixed right away.",
    },
    "pull_request.opened.json": {**PR_FACTS, "action": "opened"},
    "pull_request.synchronize.json": {
        **PR_FACTS,
        "action": "synchronize",
        "before": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
    },
    "pull_request.closed.json": {**PR_FACTS, "action": "closed"},
    "push.json": {
        "kind": "push",
        "branch": "master",
        "sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "before": None,  # all zeros: the push created the branch
        "paths": ["README.md"],
    },
    "push.deleted-tag.json": {
        "kind": "push",
        "action": "deleted",  # fires no `on: push`
        "branch": None,  # a tag
        "sha": None,  # all zeros: the push deleted the ref
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    },
    "workflow_run.completed.json": {
        "kind": "workflow_run",
        "action": "completed",
        "forge_repo": "octo-org/octo-repo",
        "branch": "master",
        "sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
        "workflow": "test",  # the run's own name is empty in GitHub's example
        "conclusion": "success",
    },
    "check_run.completed.json": {
        "kind": "check_run",
        "action": "completed",
        "branch": "changes",
        "sha": PR_HEAD,
        "workflow": "Octocoders-linter",
        "conclusion": "success",
    },
}

DEFAULTS = Event(kind="manual", source="api", dedup_key="x").model_dump()
FACT_FIELDS = (
    "action",
    "forge_repo",
    "branch",
    "head_branch",
    "sha",
    "before",
    "paths",
    "labels",
    "added_label",
    "author",
    "text",
    "workflow",
    "conclusion",
)


def assert_facts(event: Event, expected: dict[str, Any]) -> None:
    got = event.model_dump()
    for field in ("kind", *FACT_FIELDS):
        want = expected.get(field, DEFAULTS.get(field))
        assert got[field] == want, f"{field}: {got[field]!r} != {want!r}"


def gl_facts(name: str, expected: dict[str, Any], payload: dict[str, Any] | None = None) -> Event:
    """GitLab's example ``name`` (or ``payload`` sent as that hook) normalized, with the
    facts ``expected``."""
    event = gl(name, payload)
    assert event is not None
    assert_facts(event, expected)
    return event


def test_github_facts_cover_every_fixture() -> None:
    assert set(GITHUB_FACTS) == {p.name for p in GITHUB}


@pytest.mark.parametrize("name", sorted(GITHUB_FACTS))
def test_github_normalize(name: str) -> None:
    payload = load(FIXTURES / "github" / name)
    event = gh(name)
    expected = {"forge_repo": CODERTOCAT, "author": "Codertocat", **GITHUB_FACTS[name]}
    assert_facts(event, expected)
    assert event.source == "github"
    assert event.dedup_key == f"github:{DELIVERY}"
    assert event.repo is None
    assert event.payload == payload  # GitHub's payload is already the shape triggers see
    assert github.forge_repo(payload) == expected["forge_repo"]
    Event.model_validate_json(event.model_dump_json())  # storable as JSON


def test_github_ignores_other_events() -> None:
    payload = load(FIXTURES / "github" / "push.json")
    for event in ("ping", "create", "pull_request_review", "star", "", "PUSH"):
        assert github.normalize(event, DELIVERY, payload) is None


def test_github_tag_push_and_branch_delete() -> None:
    tag = {"ref": "refs/tags/v1.0", "before": "0" * 40, "after": "a" * 40, "commits": []}
    event = github.normalize("push", "d", tag)
    assert event is not None
    assert (event.action, event.branch, event.sha, event.paths) == (None, None, "a" * 40, None)
    deleted = {"ref": "refs/heads/gone", "before": "b" * 40, "after": "0" * 40, "deleted": True}
    event = github.normalize("push", "d", deleted)
    assert event is not None
    assert (event.action, event.branch, event.sha, event.before) == (
        "deleted",
        "gone",
        None,
        "b" * 40,
    )
    # Either sign of a deletion is enough: `deleted: true`, or an all-zero new tip.
    for sign_of_it in ({"deleted": True}, {"after": "0" * 40}, {"after": "0" * 64}):
        event = github.normalize("push", "d", {"ref": "refs/heads/gone", **sign_of_it})
        assert event is not None
        assert event.action == "deleted", sign_of_it
    for not_deleted in ({"deleted": False, "after": "a" * 40}, {"deleted": "yes"}, {}):
        event = github.normalize("push", "d", {"ref": "refs/heads/x", **not_deleted})
        assert event is not None
        assert event.action is None, not_deleted


def test_github_push_paths_union() -> None:
    payload = {
        "ref": "refs/heads/feature/x",
        "commits": [
            {"added": ["b.py"], "modified": ["a.py"], "removed": []},
            {"added": [], "modified": ["a.py", 7, None], "removed": ["c.py"]},
            "not a commit",
        ],
    }
    event = github.normalize("push", "d", payload)
    assert event is not None
    assert event.branch == "feature/x"
    assert event.paths == ["a.py", "b.py", "c.py"]


def test_gitea_source_and_actions() -> None:
    payload = load(FIXTURES / "github" / "pull_request.synchronize.json")
    payload["action"] = "synchronized"  # Gitea's word for it
    event = github.normalize("pull_request", "g-1", payload, source="gitea")
    assert event is not None
    assert (event.source, event.dedup_key, event.action) == ("gitea", "gitea:g-1", "synchronize")
    assert event.payload["action"] == "synchronized"  # the payload is kept as sent
    with pytest.raises(ValueError, match="not a forge source"):
        github.normalize("push", "d", payload, source="local")


def test_dedup_key_fits_the_column() -> None:
    event = github.normalize("push", "x" * 5000, {})
    assert event is not None
    assert len(event.dedup_key) <= 300
    assert event.dedup_key.startswith("github:sha256:")
    again = github.normalize("push", "x" * 5000, {})
    assert again is not None
    assert again.dedup_key == event.dedup_key


# --- GitLab ------------------------------------------------------------------


def test_gitlab_token() -> None:
    assert gitlab.verify({"X-Gitlab-Token": SECRET}, SECRET)
    assert gitlab.verify({"x-gitlab-token": SECRET}, SECRET)
    assert gitlab.verify({"X-Gitlab-Token": "clé-ünïcode"}, "clé-ünïcode")
    assert not gitlab.verify({"X-Gitlab-Token": SECRET + "x"}, SECRET)
    assert not gitlab.verify({"X-Gitlab-Token": SECRET[:-1]}, SECRET)
    assert not gitlab.verify({"X-Gitlab-Token": ""}, SECRET)
    assert not gitlab.verify({"X-Gitlab-Token": "\udcff"}, SECRET)
    assert not gitlab.verify({}, SECRET)
    assert not gitlab.verify({"X-Hub-Signature-256": SECRET}, SECRET)
    assert not gitlab.verify({"X-Gitlab-Token": ""}, "")


def test_gitlab_headers() -> None:
    everything = {
        "Idempotency-Key": "idem-1",
        "X-Gitlab-Event-UUID": "event-1",
        "X-Gitlab-Webhook-UUID": "hook-1",
        "X-Gitlab-Event": "Push Hook",
    }
    assert gitlab.delivery_id(everything) == "idem-1"  # stable across resends
    assert gitlab.delivery_id({"x-gitlab-event-uuid": "event-1"}) == "event-1"
    # The webhook UUID names the hook, not the delivery: never a dedup key.
    assert gitlab.delivery_id({"X-Gitlab-Webhook-UUID": "hook-1"}) is None
    assert gitlab.delivery_id({}) is None
    assert gitlab.event_name(everything) == "Push Hook"
    assert gitlab.event_name({}) is None


GL_PROJECT = "gitlabhq/gitlab-test"


def test_gitlab_issue() -> None:
    event = gl_facts(
        "issue.json",
        {
            "kind": "issues",
            "action": "opened",
            "forge_repo": GL_PROJECT,
            "labels": ["API"],
            "author": "root",
            "text": (
                "New API: create/update/delete file\n"
                "Create new API for manipulations with repository"
            ),
        },
    )
    assert (event.source, event.dedup_key) == ("gitlab", f"gitlab:{DELIVERY}")
    issue = event.payload["issue"]
    assert issue["number"] == 23
    assert issue["title"] == "New API: create/update/delete file"
    assert issue["labels"] == [{"name": "API"}]
    assert issue["user"] == {"login": "root"}  # the actor opened it
    assert issue["html_url"] == "http://example.com/diaspora/issues/23"
    assert issue["state"] == "open"
    assert event.payload["repository"]["full_name"] == GL_PROJECT
    assert event.payload["repository"]["html_url"] == "http://example.com/gitlabhq/gitlab-test"
    assert event.payload["sender"] == {"login": "root"}
    assert event.payload["gitlab"] == load(FIXTURES / "gitlab" / "issue.json")
    assert gitlab.forge_repo(load(FIXTURES / "gitlab" / "issue.json")) == GL_PROJECT


@pytest.mark.parametrize(
    ("gitlab_action", "expected"),
    [("open", "opened"), ("close", "closed"), ("reopen", "reopened"), ("update", "labeled")],
)
def test_gitlab_issue_actions(gitlab_action: str, expected: str) -> None:
    payload = load(FIXTURES / "gitlab" / "issue.json")
    payload["object_attributes"]["action"] = gitlab_action
    event = gl("issue.json", payload)
    assert event is not None
    assert event.action == expected
    # changes.labels went from [API] to [Platform]: an update added Platform.
    assert event.added_label == ("Platform" if expected == "labeled" else None)
    if expected != "opened":
        assert event.payload["issue"]["user"] is None  # author 51 is not actor 1


@pytest.mark.parametrize("name", ["issue.json", "merge_request.json"])
def test_gitlab_update_without_new_labels_is_edited(name: str) -> None:
    payload = load(FIXTURES / "gitlab" / name)
    payload["object_attributes"]["action"] = "update"
    del payload["changes"]["labels"]
    event = gl(name, payload)
    assert event is not None
    assert (event.action, event.added_label) == ("edited", None)


def test_gitlab_confidential_issue_is_an_issue() -> None:
    payload = load(FIXTURES / "gitlab" / "issue.json")
    payload["object_attributes"]["action"] = "update"
    del payload["changes"]["labels"]
    confidential = gitlab.normalize("Confidential Issue Hook", "d", payload)
    assert confidential is not None
    assert confidential.kind == "issues"


def test_gitlab_note_on_issue() -> None:
    event = gl_facts(
        "note.json",
        {
            "kind": "issue_comment",
            "action": "created",
            "forge_repo": "gitlab-org/gitlab-test",
            "labels": ["Afterpod", "Element"],
            "author": "root",
            "text": "Hello world",
        },
    )
    assert event.payload["comment"]["body"] == "Hello world"
    assert event.payload["comment"]["user"] == {"login": "root"}
    issue = event.payload["issue"]
    assert (issue["number"], issue["title"], issue["body"], issue["state"]) == (
        17,
        "test",
        "test",
        "closed",
    )
    assert issue["html_url"] == "http://example.com/gitlab-org/gitlab-test/issues/17"
    assert "pull_request" not in issue


def test_gitlab_note_on_merge_request() -> None:
    payload = load(FIXTURES / "gitlab" / "note.json")
    del payload["issue"]
    payload["object_attributes"]["noteable_type"] = "MergeRequest"
    payload["object_attributes"]["note"] = "@bot please fix the tests"
    payload["merge_request"] = load(FIXTURES / "gitlab" / "merge_request.json")["object_attributes"]
    event = gl_facts(
        "note.json",
        {
            "kind": "issue_comment",
            "action": "created",
            "forge_repo": "gitlab-org/gitlab-test",
            "branch": "master",
            "head_branch": "ms-viewport",
            "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "labels": ["API"],
            "author": "root",
            "text": "@bot please fix the tests",
        },
        payload,
    )
    url = "http://example.com/diaspora/merge_requests/1"
    assert event.payload["issue"]["pull_request"] == {"html_url": url}
    assert event.payload["issue"]["number"] == 1
    assert event.payload["pull_request"]["head"]["ref"] == "ms-viewport"


def test_gitlab_ignored_notes() -> None:
    payload = load(FIXTURES / "gitlab" / "note.json")
    for noteable in ("Commit", "Snippet", None):
        payload["object_attributes"]["noteable_type"] = noteable
        assert gl("note.json", payload) is None
    payload = load(FIXTURES / "gitlab" / "note.json")
    payload["object_attributes"]["system"] = True  # "added ~bug label"
    assert gl("note.json", payload) is None


def test_gitlab_merge_request() -> None:
    event = gl_facts(
        "merge_request.json",
        {
            "kind": "pull_request",
            "action": "opened",
            "forge_repo": GL_PROJECT,
            "branch": "master",
            "head_branch": "ms-viewport",
            "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "labels": ["API"],
            "author": "root",
            "text": "MS-Viewport",  # the description is empty
        },
    )
    pr = event.payload["pull_request"]
    assert pr["number"] == event.payload["number"] == 1
    assert pr["head"] == {
        "ref": "ms-viewport",
        "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "repo": {"full_name": "awesome_space/awesome_project"},
    }
    assert pr["base"]["ref"] == "master"
    assert pr["merged"] is False
    assert pr["state"] == "open"
    assert pr["html_url"] == "http://example.com/diaspora/merge_requests/1"
    assert pr["labels"] == [{"name": "API"}]


@pytest.mark.parametrize(
    ("gitlab_action", "oldrev", "expected", "merged"),
    [
        ("open", None, "opened", False),
        ("close", None, "closed", False),
        ("reopen", None, "reopened", False),
        ("merge", None, "closed", True),
        ("update", "95790bf891e76fee5e1747ab589903a6a1f80f22", "synchronize", False),
        ("update", None, "labeled", False),
        ("approved", None, "approved", False),
    ],
)
def test_gitlab_merge_request_actions(
    gitlab_action: str, oldrev: str | None, expected: str, merged: bool
) -> None:
    payload = load(FIXTURES / "gitlab" / "merge_request.json")
    payload["object_attributes"]["action"] = gitlab_action
    if oldrev:
        payload["object_attributes"]["oldrev"] = oldrev
    event = gl("merge_request.json", payload)
    assert event is not None
    assert event.action == expected
    assert event.payload["pull_request"]["merged"] is merged
    assert event.before == oldrev
    if expected == "synchronize":
        assert event.payload["before"] == oldrev
        assert event.payload["after"] == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert event.added_label == ("Platform" if expected == "labeled" else None)


def test_gitlab_push() -> None:
    event = gl_facts(
        "push.json",
        {
            "kind": "push",
            "forge_repo": "mike/diaspora",
            "branch": "master",
            "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
            # total_commits_count is 4 but only 2 are listed: the changed
            # paths are not known, rather than known wrongly.
            "paths": None,
            "author": "jsmith",
        },
    )
    shaped = event.payload
    assert shaped["ref"] == "refs/heads/master"
    assert (shaped["created"], shaped["deleted"]) == (False, False)
    assert shaped["commits"][0] == {
        "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
        "message": "Update Catalan translation to e38cb41.\n\n"
        "See https://gitlab.com/gitlab-org/gitlab for more information",
        "timestamp": "2011-12-12T14:27:31+02:00",
        "url": "http://example.com/mike/diaspora/commit/b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
        "author": {"name": "Jordi Mallach", "email": "jordi@softcatala.org"},
        "added": ["CHANGELOG"],
        "modified": ["app/controller/application.rb"],
        "removed": [],
    }
    assert shaped["head_commit"]["id"] == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert shaped["pusher"] == {"name": "John Smith", "email": "john@example.com"}


def test_gitlab_push_paths_when_every_commit_is_listed() -> None:
    payload = load(FIXTURES / "gitlab" / "push.json")
    payload["total_commits_count"] = 2
    payload["commits"][1]["removed"] = ["old.txt"]
    event = gl("push.json", payload)
    assert event is not None
    assert event.paths == ["CHANGELOG", "app/controller/application.rb", "old.txt"]


def test_gitlab_push_new_branch_and_tag() -> None:
    payload = load(FIXTURES / "gitlab" / "push.json")
    payload["before"] = "0" * 40
    event = gl("push.json", payload)
    assert event is not None
    assert (event.before, event.payload["created"]) == (None, True)
    payload["ref"] = "refs/tags/v1.0.0"
    tag = gitlab.normalize("Tag Push Hook", "d", payload)
    assert tag is not None
    assert (tag.kind, tag.branch, tag.sha) == ("push", None, payload["after"])


def test_gitlab_pipeline() -> None:
    event = gl_facts(
        "pipeline.json",
        {
            "kind": "workflow_run",
            "action": "completed",
            "forge_repo": "gitlab-org/gitlab-test",
            "branch": "master",
            "sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
            "workflow": "Pipeline for branch: master",
            "conclusion": "success",
            "author": "root",
        },
    )
    run = event.payload["workflow_run"]
    assert run["head_branch"] == "master"
    assert run["status"] == "completed"
    assert run["html_url"] == "http://example.com/gitlab-org/gitlab-test/-/pipelines/31"
    assert run["pull_requests"][0]["number"] == 1
    assert event.payload["workflow"] == {"name": "Pipeline for branch: master"}


@pytest.mark.parametrize(
    ("status", "action", "conclusion"),
    [
        ("success", "completed", "success"),
        ("failed", "completed", "failure"),
        ("canceled", "completed", "cancelled"),
        ("skipped", "completed", "skipped"),
        ("running", "in_progress", None),
        ("pending", "in_progress", None),
        ("created", "in_progress", None),
        (None, "in_progress", None),
    ],
)
def test_gitlab_pipeline_status(status: str | None, action: str, conclusion: str | None) -> None:
    payload = load(FIXTURES / "gitlab" / "pipeline.json")
    payload["object_attributes"]["status"] = status
    del payload["object_attributes"]["name"]
    event = gl("pipeline.json", payload)
    assert event is not None
    assert (event.action, event.conclusion, event.workflow) == (action, conclusion, "pipeline")


def test_gitlab_merge_request_pipeline_branch() -> None:
    payload = load(FIXTURES / "gitlab" / "pipeline.json")
    payload["object_attributes"]["ref"] = "refs/merge-requests/1/head"
    event = gl("pipeline.json", payload)
    assert event is not None
    assert event.branch == "test"  # the merge request's source branch


def test_gitlab_ignores_other_hooks() -> None:
    payload = load(FIXTURES / "gitlab" / "push.json")
    for hook in ("Job Hook", "Wiki Page Hook", "System Hook", "push", ""):
        assert gitlab.normalize(hook, "d", payload) is None


# --- hostile and odd payloads -------------------------------------------------

HUGE = "A" * 1_000_000
ODD_VALUES: list[Any] = [None, [], [{}], "x", 0, True, {}, {"name": []}]


def mutations(node: Any) -> Iterator[Any]:
    """Copies of ``node`` with one value (at any depth) replaced by an odd one."""
    if isinstance(node, dict):
        for key, value in node.items():
            for odd in ODD_VALUES:
                yield {**node, key: odd}
            for changed in mutations(value):
                yield {**node, key: changed}
    elif isinstance(node, list):
        for index, value in enumerate(node[:2]):
            for changed in mutations(value):
                yield [*node[:index], changed, *node[index + 1 :]]


HOSTILE: list[Any] = [
    {},
    {"repository": "x"},
    {"repository": {"full_name": ["a"]}, "sender": "x", "action": 7},
    {"issue": [], "comment": [], "pull_request": "x", "label": []},
    {"ref": 1, "before": [], "after": {}, "commits": {"added": ["a"]}},
    {"commits": [[], None, {"added": "a", "modified": [1, None, []]}]},
    {"workflow_run": [], "check_run": {"check_suite": []}, "workflow": "x"},
    {"object_attributes": [], "project": [], "user": "x", "changes": []},
    {"object_attributes": {"action": "update", "labels": "x"}, "changes": {"labels": []}},
    {"object_attributes": {"noteable_type": "MergeRequest"}, "merge_request": []},
    {"object_attributes": {"status": ["failed"], "ref": 3}, "merge_request": "x"},
    {"total_commits_count": "4", "commits": "x"},
    {"action": HUGE, "issue": {"title": HUGE, "body": HUGE, "labels": [{"name": HUGE}]}},
    {"ref": "refs/heads/" + HUGE, "after": HUGE, "repository": {"full_name": HUGE}},
    {"object_attributes": {"note": HUGE, "noteable_type": "Issue", "url": HUGE}},
    [],
    [{"action": "opened"}],
    "x",
    None,
    7,
]

GITHUB_EVENTS = sorted(github.HANDLED)
GITLAB_HOOKS = sorted(set(GITLAB_EVENTS.values()) | {"Tag Push Hook", "Confidential Note Hook"})


def check(event: Event | None) -> None:
    if event is not None:
        assert isinstance(event, Event)
        Event.model_validate_json(event.model_dump_json())


@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_payloads_never_raise(payload: Any) -> None:
    for event in GITHUB_EVENTS:
        for source in ("github", "gitea"):
            check(github.normalize(event, DELIVERY, payload, source=source))
    for hook in GITLAB_HOOKS:
        check(gitlab.normalize(hook, DELIVERY, payload))
    if not isinstance(payload, dict):
        assert github.normalize("push", DELIVERY, payload) is None
        assert gitlab.normalize("Push Hook", DELIVERY, payload) is None


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_fixture_mutations_never_raise(path: Path) -> None:
    event = github_event(path)
    for payload in mutations(load(path)):
        check(github.normalize(event, DELIVERY, payload))


@pytest.mark.parametrize("path", GITLAB, ids=lambda p: p.name)
def test_gitlab_fixture_mutations_never_raise(path: Path) -> None:
    hook = GITLAB_EVENTS[path.name]
    original = load(path)
    for payload in mutations(original):
        check(gitlab.normalize(hook, DELIVERY, payload))
    assert load(path) == original  # nothing was changed in place


def test_normalize_does_not_change_its_input() -> None:
    for path in GITHUB:
        payload = load(path)
        before = copy.deepcopy(payload)
        github.normalize(github_event(path), DELIVERY, payload)
        assert payload == before
    for path in GITLAB:
        payload = load(path)
        before = copy.deepcopy(payload)
        gitlab.normalize(GITLAB_EVENTS[path.name], DELIVERY, payload)
        assert payload == before


# --- remotes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("git@github.com:Codertocat/Hello-World.git", "Codertocat/Hello-World"),
        ("git@github.com:Codertocat/Hello-World", "Codertocat/Hello-World"),
        ("github.com:owner/name.git", "owner/name"),
        ("git@github.com:/owner/name.git", "owner/name"),
        ("ssh://git@github.com/owner/name.git", "owner/name"),
        ("ssh://git@host.example:2222/owner/name.git", "owner/name"),
        ("ssh://git@[::1]:2222/owner/name.git", "owner/name"),
        ("git+ssh://git@github.com/owner/name.git", "owner/name"),
        ("git://github.com/owner/name.git", "owner/name"),
        ("https://github.com/owner/name", "owner/name"),
        ("https://github.com/owner/name.git", "owner/name"),
        ("https://github.com/owner/name/", "owner/name"),
        ("https://github.com/owner/name.git/", "owner/name"),
        ("https://user:token@github.com/owner/name", "owner/name"),
        ("https://x-access-token:ghp_abc@github.com/owner/name.git", "owner/name"),
        ("https://gitlab.com/group/sub/name.git", "group/sub/name"),
        ("git@gitlab.com:group/sub/name.git", "group/sub/name"),
        ("http://localhost:3000/owner/name.git", "owner/name"),
        ("  https://github.com/owner/name.git\n", "owner/name"),
        ("https://github.com/owner/my.repo.git", "owner/my.repo"),
        # Not a forge repository:
        ("/home/me/src/project", None),
        ("./project", None),
        ("../other/project.git", None),
        ("project", None),
        ("owner/name", None),
        ("file:///home/me/project.git", None),
        ("file://localhost/srv/git/project.git", None),
        ("C:\\Users\\me\\project", None),
        ("C:/Users/me/project", None),
        ("https://github.com/", None),
        ("https://github.com/name", None),
        ("git@github.com:name.git", None),
        ("https://github.com/owner/../name", None),
        ("https://[::1/owner/name", None),
        ("", None),
    ],
)
def test_forge_name_of(url: str, name: str | None) -> None:
    assert forge_name_of(url) == name


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Codertocat/Hello-World", "codertocat/hello-world", True),
        ("Codertocat/Hello-World", "git@github.com:codertocat/hello-world.git", True),
        ("https://github.com/Owner/Name.git", "owner/name", True),
        ("group/sub/name", "https://gitlab.com/group/sub/name", True),
        ("owner/name", "owner/name.git", True),
        ("owner/name", "owner/other", False),
        ("owner/name", "other/name", False),
        ("group/sub/name", "sub/name", False),
        ("", "", False),
        ("name", "name", False),
    ],
)
def test_same_repo(a: str, b: str, same: bool) -> None:
    assert same_repo(a, b) is same
    assert same_repo(b, a) is same


# --- a push that deletes its ref fires no `on: push` (as the local ref source makes nothing) ---

ON_PUSH = parse(
    "version: 1\ntriggers:\n"
    "  any-push: {on: push, prompt: x}\n"
    "  main-push: {on: {push: {branches: [master]}}, prompt: x}\n"
)


def _deleted_branch_github() -> dict[str, Any]:
    """GitHub's push.json turned into the deletion of the branch it pushed."""
    payload = load(FIXTURES / "github" / "push.json")
    payload.update(
        before=payload["after"], after="0" * 40, created=False, deleted=True,
        commits=[], head_commit=None,
    )  # fmt: skip
    return payload


def _deleted_branch_gitlab() -> dict[str, Any]:
    """GitLab's push.json as GitLab sends a branch deletion: `after` all zeros, no commits."""
    payload = load(FIXTURES / "gitlab" / "push.json")
    payload.update(before=payload["after"], after="0" * 40, commits=[], total_commits_count=0)
    return payload


def test_github_branch_and_tag_deletions_match_no_push_trigger() -> None:
    tag = gh("push.deleted-tag.json")
    branch = github.normalize("push", DELIVERY, _deleted_branch_github())
    gitea = github.normalize("push", DELIVERY, _deleted_branch_github(), source="gitea")
    for event in (tag, branch, gitea):
        assert event is not None
        assert event.action == "deleted"
        assert matching(ON_PUSH, event) == []
    assert branch is not None
    assert branch.branch == "master"  # the deleted branch is still known (and shown)
    # A normal push still fires both.
    assert [t.name for t in matching(ON_PUSH, gh("push.json"))] == ["any-push", "main-push"]


def test_gitlab_branch_and_tag_deletions_match_no_push_trigger() -> None:
    branch = gitlab.normalize("Push Hook", DELIVERY, _deleted_branch_gitlab())
    tag_payload = _deleted_branch_gitlab()
    tag_payload["ref"] = "refs/tags/v1.0.0"
    tag = gitlab.normalize("Tag Push Hook", DELIVERY, tag_payload)
    for event in (branch, tag):
        assert event is not None
        assert (event.kind, event.action, event.sha) == ("push", "deleted", None)
        assert event.payload["deleted"] is True
        assert matching(ON_PUSH, event) == []
    normal = gl("push.json")
    assert normal is not None
    assert normal.action is None
    assert [t.name for t in matching(ON_PUSH, normal)] == ["any-push", "main-push"]

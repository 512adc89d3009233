"""Each forge's client against the fake forge (tests/forgefake.py): requests, answers, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from dispatcher.errors import ForgeError
from dispatcher.forge.client import NewPullRequest, client_for
from dispatcher.forge.hosts import Forge
from tests.forgefake import FakeForge

TOKEN = "tok-unit-77"
API = {"github": "/gh", "gitlab": "/api/v4", "gitea": "/api/v1"}
NAMES = {"github": "GitHub", "gitlab": "GitLab", "gitea": "Gitea"}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeForge]:
    f = FakeForge(tmp_path, TOKEN).start()
    f.repos.add("team/app")
    yield f
    f.stop()


def forge(fake: FakeForge, kind: str, token: str | None = TOKEN, repo: str = "team/app") -> Forge:
    return Forge(
        kind=kind,  # type: ignore[arg-type]
        host=f"{kind}.test",
        api=fake.url + API[kind],
        repo=repo,
        token=SecretStr(token) if token else None,
    )


NEW = NewPullRequest(
    head="dispatcher/1-x", base="main", title="Fix it", body="b", draft=False, labels=("agent",)
)


@pytest.mark.parametrize("kind", list(API))
def test_open_then_open_again_finds_the_same(fake: FakeForge, kind: str) -> None:
    with httpx.Client(timeout=10) as http:
        client = client_for(forge(fake, kind), http)
        first, opened = client.open(NEW)
        client.label(first, NEW.labels)
        again, opened_again = client.open(NEW)
    assert opened and not opened_again
    assert (first.number, first.url, first.state) == (again.number, again.url, "open")
    assert fake.pulls[(kind, "team/app")][0].labels == ["agent"]


@pytest.mark.parametrize("kind", list(API))
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong token", "refused the token"),
        ("no token", "wants a token"),
        ("no repo", "has no repository team/gone"),
        ("rate limit", "rate-limited"),
    ],
)
def test_errors_are_one_line_naming_the_forge_without_the_token(
    fake: FakeForge, kind: str, case: str, expected: str
) -> None:
    target = forge(fake, kind)
    if case == "wrong token":
        target = forge(fake, kind, token="nope-secret")
    elif case == "no token":
        target = forge(fake, kind, token=None)
    elif case == "no repo":
        target = forge(fake, kind, repo="team/gone")
    fake.rate_limited = case == "rate limit"
    with httpx.Client(timeout=10) as http, pytest.raises(ForgeError) as caught:
        client_for(target, http).open(NEW)
    message = caught.value.message
    assert message.startswith(f"{NAMES[kind]} ({kind}.test)"), message
    assert expected in message and "\n" not in message
    assert TOKEN not in message and "nope-secret" not in message
    assert not fake.pulls.get((kind, "team/app"))


def test_an_unreachable_forge_is_one_line(tmp_path: Path) -> None:
    target = Forge("gitea", "gitea.test", "http://127.0.0.1:9/api/v1", "o/r", SecretStr(TOKEN))
    with httpx.Client(timeout=5) as http, pytest.raises(ForgeError, match="could not be reached"):
        client_for(target, http).open(NEW)

"""Remote URLs read as forge locations, hostile ones refused; which forge a host is."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from dispatcher.config import ForgeHost, Settings
from dispatcher.errors import InvalidInput
from dispatcher.forge.client import scrub
from dispatcher.forge.hosts import forge_for, token_for
from dispatcher.forge.remotes import fork_of, parse_remote


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path"),
    [
        ("https://github.com/owner/repo.git", "https", "github.com", None, "owner/repo"),
        ("https://github.com/owner/repo", "https", "github.com", None, "owner/repo"),
        ("https://github.com/owner/repo/", "https", "github.com", None, "owner/repo"),
        ("https://user:pw@GitHub.com/Owner/Repo.git", "https", "github.com", None, "Owner/Repo"),
        ("git@github.com:owner/repo.git", "ssh", "github.com", None, "owner/repo"),
        ("github.com:owner/repo", "ssh", "github.com", None, "owner/repo"),
        (
            "ssh://git@git.example.com:2222/owner/repo.git",
            "ssh",
            "git.example.com",
            2222,
            "owner/repo",
        ),
        ("ssh://git@gitlab.com/group/sub/repo.git", "ssh", "gitlab.com", None, "group/sub/repo"),
        ("http://127.0.0.1:3000/o/r.git", "http", "127.0.0.1", 3000, "o/r"),
        ("https://gitlab.com/group/my.repo.git", "https", "gitlab.com", None, "group/my.repo"),
    ],
)
def test_remote_urls_are_read(
    url: str, scheme: str, host: str, port: int | None, path: str
) -> None:
    location = parse_remote(url)
    assert (location.scheme, location.host, location.port, location.path) == (
        scheme,
        host,
        port,
        path,
    )


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/srv/git/repo.git",
        "../repo",
        "C:\\repos\\x",
        "file:///srv/git/repo.git",
        "https://github.com/only-owner",
        "https://github.com/owner/../etc/passwd",
        "https://github.com/owner/%2e%2e/x",
        "https://github.com/owner/repo?x=1",
        "https://github.com/owner/repo#frag",
        "https://github.com/own er/repo",
        "https://github.com/owner/re\npo",
        "https://github.com/-owner/repo",
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "https://[::1/owner/repo",
        "https://github.com:99999/owner/repo",
        "https://bad_host!/owner/repo",
        "git@github.com:/../../etc",
        "https://github.com/owner/repo%00.git",
        "https://github.com/owner/$(id).git",
    ],
)
def test_hostile_or_local_urls_are_not_forges(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_remote(url)
    assert "\n" not in caught.value.message


def test_a_refusal_does_not_show_the_urls_credentials() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_remote("https://x:supersecret@github.com/only-owner")
    assert "supersecret" not in caught.value.message


def test_known_hosts_and_settings_pick_the_forge_and_its_token() -> None:
    settings = Settings(
        forges={
            "git.example.com": ForgeHost(kind="gitea"),
            "ghe.corp:8443": ForgeHost(kind="github", api="https://ghe.corp:8443/api/v3/"),
            "forgejo.example": ForgeHost(kind="forgejo", api="http://127.0.0.1:1/api/v1"),
        },
        forge_tokens={"github.com": SecretStr("gh"), "GIT.example.com": SecretStr("ge")},
    )
    gh = forge_for(settings, parse_remote("git@github.com:o/r.git"))
    assert (gh.kind, gh.api, gh.repo) == ("github", "https://api.github.com", "o/r")
    assert gh.token is not None and gh.token.get_secret_value() == "gh"
    assert "gh" not in repr(gh) and "gh" not in repr(settings.forge_tokens)
    gl = forge_for(settings, parse_remote("https://gitlab.com/g/s/r.git"))
    assert (gl.kind, gl.api, gl.repo, gl.token) == (
        "gitlab",
        "https://gitlab.com/api/v4",
        "g/s/r",
        None,
    )
    gt = forge_for(settings, parse_remote("https://git.example.com/o/r"))
    assert (gt.kind, gt.api) == ("gitea", "https://git.example.com/api/v1")
    assert token_for(settings, "git.example.com") is not None
    ghe = forge_for(settings, parse_remote("https://ghe.corp:8443/o/r.git"))
    assert (ghe.kind, ghe.api) == ("github", "https://ghe.corp:8443/api/v3")
    assert forge_for(settings, parse_remote("https://forgejo.example/o/r")).kind == "gitea"
    with pytest.raises(InvalidInput, match="DISPATCHER_FORGES"):
        forge_for(settings, parse_remote("https://elsewhere.example/o/r"))


def test_tokens_come_from_the_settings_env_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_FORGE_TOKENS", '{"github.com": "ghp_abc"}')
    monkeypatch.setenv("DISPATCHER_FORGES", '{"git.x": {"kind": "gitlab"}}')
    settings = Settings()
    assert "ghp_abc" not in repr(settings) and "ghp_abc" not in str(settings.model_dump())
    token = token_for(settings, "github.com")
    assert token is not None and token.get_secret_value() == "ghp_abc"
    assert settings.forges["git.x"].kind == "gitlab"


def test_scrub_removes_the_token_from_any_message() -> None:
    settings = Settings(forge_tokens={"github.com": SecretStr("t0ken")})
    forge = forge_for(settings, parse_remote("https://github.com/o/r"))
    assert scrub("echoed t0ken back", forge) == "echoed *** back"


def test_tokens_are_trimmed_and_control_characters_refused_without_showing_them() -> None:
    """A token file read with its CRLF works; a byte the HTTP library would refuse (its
    message would hold the token escaped, past the scrubbing) is refused at start-up."""
    trimmed = Settings(forge_tokens={"git.test": SecretStr("tok-123\r\n")})  # type: ignore[dict-item]
    assert trimmed.forge_tokens["git.test"].get_secret_value() == "tok-123"
    for bad in ("tok\r-123", "tok 123", "tok\x00123", "tök123"):
        with pytest.raises(ValueError, match=r"the forge token for 'git\.test' holds") as info:
            Settings(forge_tokens={"git.test": SecretStr(bad)})  # type: ignore[dict-item]
        assert bad not in str(info.value)


def test_a_self_hosted_forge_on_its_own_https_port_is_asked_on_that_port() -> None:
    settings = Settings(forges={"git.example.com:3000": ForgeHost(kind="gitea")})
    https = forge_for(settings, parse_remote("https://git.example.com:3000/o/r.git"))
    assert https.api == "https://git.example.com:3000/api/v1"
    ssh = forge_for(settings, parse_remote("ssh://git@git.example.com:3000/o/r.git"))
    assert ssh.api == "https://git.example.com/api/v1"  # an ssh port says nothing of the web's


@pytest.mark.parametrize(
    ("fetch", "push", "fork"),
    [
        ("https://github.com/up/app.git", "https://github.com/up/app.git", None),
        ("https://github.com/up/app.git", "git@github.com:me/app.git", "me/app"),
        ("git@github.com:up/app.git", "ssh://git@github.com/Up/App", None),  # same, by case
        ("https://gitea.test/up/app", "http://127.0.0.1:3000/up/app.git", None),  # a mirror
        ("https://gitlab.com/g/sub/app", "https://gitlab.com/me/app", "me/app"),
        ("https://github.com/up/app", "/srv/git/app.git", None),  # a local path: no forge
    ],
)
def test_a_push_url_naming_another_repository_is_a_fork(
    fetch: str, push: str, fork: str | None
) -> None:
    assert fork_of(fetch, push) == fork


def test_clone_keys_match_one_repository_however_it_is_reached(tmp_path: Path) -> None:
    """docs/cluster.md, "Clones per node": clones are matched across machines by this."""
    from dispatcher.forge.remotes import clone_key

    hub = tmp_path / "hub.git"
    hub.mkdir()
    (tmp_path / "link.git").symlink_to(hub)
    top = tmp_path / "clone"
    top.mkdir()
    same = {
        "github.com/owner/name": [
            "https://github.com/owner/name.git",
            "https://github.com/owner/name",
            "https://github.com/owner/name/",
            "https://user:token@GitHub.com/Owner/Name.git",
            "http://github.com/owner/name",
            "git@github.com:owner/name.git",
            "git@github.com:owner/name",
            "github.com:owner/name",
            "ssh://git@github.com/owner/name.git",
            "ssh://git@github.com:22/owner/name",
            "git://github.com/owner/name.git",
        ],
        "gitlab.com/group/sub/name": [
            "https://gitlab.com/group/sub/name.git",
            "git@gitlab.com:group/sub/name.git",
        ],
        str(hub): [
            str(hub),
            f"{hub}/",
            f"file://{hub}",
            str(tmp_path / "link.git"),  # symlinks resolved
            "../hub.git",  # relative to the clone
        ],
        str(tmp_path / "plain"): [str(tmp_path / "plain"), str(tmp_path / "plain" / ".git")],
    }
    for key, urls in same.items():
        assert {url: clone_key(url, top) for url in urls} == dict.fromkeys(urls, key)
    assert clone_key("", top) is None
    assert clone_key("https://github.com/owner/other", top) != clone_key(
        "https://github.com/owner/name", top
    )
    assert clone_key("https://github.com/owner/name", top) != clone_key(
        "https://gitlab.com/owner/name", top
    )
    # Not a forge, not a path: kept, but never with its credentials.
    assert clone_key("svn+ssh://me:pw@host/x/repo.git/", top) == "svn+ssh://host/x/repo"

"""End to end: a fork's pull request, and the push, pull request and rebase MCP tools
(docs/forge.md "Forks", docs/mcp.md), through the real daemon and the fake forge.

The repo's origin fetches from the upstream (``https://HOST/upstream/...``) and pushes
(``git remote set-url --push``) to the fork, a second bare repository of the fake
forge; the pull request is opened on the upstream with the fork's branch as its head.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import Daemon
from tests.e2e.test_forge import KINDS, fdaemon, finished_job, forge  # noqa: F401 (fixtures)
from tests.e2e.test_mcp import call, connect, refusal, running_job_token
from tests.forgefake import FakeForge, Pull
from tests.gitutil import commit_file, git, init_repo


def fork_repo(tmp_path: Path, fake: FakeForge, host: str, name: str) -> tuple[Path, Path, Path]:
    """A checkout fetching from upstream/NAME on HOST and pushing to forker/NAME; the
    checkout and the two bare repos (upstream, fork)."""
    path = init_repo(tmp_path / "app")
    upstream, fork = fake.bare(f"upstream/{name}"), fake.bare(f"forker/{name}")
    git(path, "remote", "add", "origin", f"https://{host}/upstream/{name}.git")
    git(path, "remote", "set-url", "--push", "origin", f"{fake.url}/forker/{name}.git")
    return path, upstream, fork


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_fork_is_pushed_to_and_its_pr_opened_on_the_upstream(
    fdaemon: Daemon,  # noqa: F811
    forge: FakeForge,  # noqa: F811
    tmp_path: Path,
    agent: Any,
    kind: str,
) -> None:
    name = f"forked-{kind}"
    host = KINDS[kind][0]
    repo, upstream, fork = fork_repo(tmp_path, forge, host, name)
    job = finished_job(fdaemon, repo, agent)
    branch = job["branch"]
    resp = fdaemon.api.post(f"/jobs/{job['id']}/pr")
    assert resp.status_code == 200, resp.text
    assert git(fork, "rev-parse", branch) == job["head"]  # pushed to the fork
    assert git(upstream, "for-each-ref", f"refs/heads/{branch}") == ""  # not upstream
    (pull,) = forge.pulls[(kind, f"upstream/{name}")]
    assert (pull.head, pull.head_repo, pull.base) == (branch, f"forker/{name}", "main")
    assert resp.json()["job"]["pr_number"] == pull.number
    (sent,) = [s for s in forge.requests(kind) if s.method == "POST"]
    if kind == "gitlab":  # made on the fork, aimed at the upstream's id
        assert sent.path == f"/api/v4/projects/forker%2F{name}/merge_requests"
        assert sent.body["target_project_id"] == forge.project_id(f"upstream/{name}")
        assert sent.body["source_branch"] == branch
    else:
        assert sent.path.endswith(f"/repos/upstream/{name}/pulls")
        assert sent.body["head"] == f"forker:{branch}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_forks_pr_open_already_is_found_not_the_upstreams_branch_of_that_name(
    fdaemon: Daemon,  # noqa: F811
    forge: FakeForge,  # noqa: F811
    tmp_path: Path,
    agent: Any,
    kind: str,
) -> None:
    name = f"forkfound-{kind}"
    repo, _, _ = fork_repo(tmp_path, forge, KINDS[kind][0], name)
    job = finished_job(fdaemon, repo, agent)
    pulls = forge.pulls.setdefault((kind, f"upstream/{name}"), [])
    pulls.append(Pull(1, job["branch"], "main", "the upstream's own branch", "", False))
    pulls.append(Pull(2, job["branch"], "main", "ours", "", False, head_repo=f"forker/{name}"))
    resp = fdaemon.api.post(f"/jobs/{job['id']}/pr")
    assert resp.status_code == 200, resp.text
    assert resp.json()["changed"] is False and resp.json()["job"]["pr_number"] == 2
    assert len(pulls) == 2


def test_mcp_push_pr_and_rebase_tools_call_the_same_use_cases(
    fdaemon: Daemon,  # noqa: F811
    forge: FakeForge,  # noqa: F811
    tmp_path: Path,
    agent: Any,
) -> None:
    repo = init_repo(tmp_path / "app")
    forge.bare("team/mcp-tools")
    git(repo, "remote", "add", "origin", "https://gitea.test/team/mcp-tools.git")
    git(repo, "config", "remote.origin.pushurl", f"{forge.url}/team/mcp-tools.git")
    job = finished_job(fdaemon, repo, agent)
    jid, branch = job["id"], job["branch"]
    bare = forge.root / "team/mcp-tools.git"

    async def scenario() -> None:
        async with connect(fdaemon.url + "/mcp", fdaemon.token) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"push_job", "open_pull_request", "rebase_job"} <= names
            pushed = await call(client, "push_job", job_id=jid)
            assert pushed["changed"] and pushed["message"].startswith(f"job {jid}: pushed")
            assert git(bare, "rev-parse", branch) == job["head"]
            opened = await call(client, "open_pull_request", job_id=jid, labels=["agent"])
            assert opened["job"]["pr_number"] == 1 and opened["job"]["pr_state"] == "open"
            # main moves; the rebase rewrites the branch and, the job having a PR, pushes
            # it again with lease.
            tip = commit_file(repo, "OTHER.md", "main moved\n")
            rebased = await call(client, "rebase_job", job_id=jid)
            assert rebased["changed"] and rebased["job"]["base"] == tip
            assert rebased["message"].endswith(
                "; pushed to origin with --force-with-lease: pull request #1 shows it"
            )
            assert git(bare, "rev-parse", branch) == git(repo, "rev-parse", branch)
            bad = await refusal(client, "push_job", job_id=jid, remote="nosuch")
            assert bad == "the repo has no remote 'nosuch' (its remotes: origin)"
            assert (await refusal(client, "rebase_job", job_id=999999)) == ("no job with id 999999")

    asyncio.run(scenario())


def test_a_job_token_pushes_opens_and_rebases_its_own_children_only(
    daemon_factory: Any, tmp_path: Path
) -> None:
    repo = init_repo(tmp_path / "app")
    d, _, parent, token = running_job_token(daemon_factory, repo)
    other = d.wait(d.submit(d.job(parent["id"])["repo"], "x", command=["true"])["id"])

    async def scenario() -> None:
        async with connect(d.url + "/mcp", token) as client:
            for tool in ("push_job", "open_pull_request", "rebase_job"):
                assert (await refusal(client, tool, job_id=parent["id"])) == (
                    f"the job token of job {parent['id']} may read job {parent['id']} but not "
                    "act on it: only on the jobs it created"
                ), tool
                assert (await refusal(client, tool, job_id=other["id"])) == (
                    f"job {other['id']} is outside the scope of the job token of job "
                    f"{parent['id']}: it reaches itself, the jobs it created and its team's jobs"
                ), tool
            child = await call(
                client, "create_job", repo=parent["repo"], prompt="a child",
                command=["sh", "-c", "echo child > child.txt"],
            )  # fmt: skip
            done = d.wait(child["id"], timeout=60)
            assert done["state"] == "succeeded" and done["commits_ahead"] == 1
            # Its child is within reach: the use-case answers (no remote to push to).
            assert (await refusal(client, "push_job", job_id=child["id"])) == (
                "the repo has no remote 'origin' (its remotes: none)"
            )
            rebased = await call(client, "rebase_job", job_id=child["id"])
            assert rebased["message"] == (
                f"job {child['id']}: {done['branch']} is on {parent['branch']}'s tip "
                f"({done['base'][:12]}) already"
            )

    asyncio.run(scenario())

"""``dispatcher repo update`` end to end: each setting changed through the CLI against a
real daemon, in effect for the next job without a restart; the repo's jobs and events
stay; bad values and an unknown repo are refused in one line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import Daemon
from tests.gitutil import git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
FAKES = Path(__file__).resolve().parents[1] / "fakeagents"


# Measured by the daemon's background disk-use pass, whenever it runs: not settings.
MEASURED = ("worktrees_bytes", "worktrees_measured_at")


def show(d: Daemon, name: str) -> dict[str, Any]:
    shown = dict(json.loads(d.cli("repo", "show", name, "--json").stdout))
    return {key: value for key, value in shown.items() if key not in MEASURED}


def test_only_the_settings_given_change_and_the_history_stays(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    git(repo, "remote", "add", "origin", "https://github.com/acme/app.git")
    name = daemon.add_repo(repo)
    before = show(daemon, name)
    assert before["forge_name"] == "acme/app" and before["max_parallel"] is None
    job = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    daemon.cli("issue", name, "a bug")
    events = daemon.api.get("/events", params={"repo": name}).json()
    assert events

    out = daemon.cli(
        "repo", "update", name, "--max-parallel", "3", "--forge-name", "other/app",
        "--daily-cost-usd", "5",
    ).stdout  # fmt: skip
    assert out == f"updated {name}: daily_cost_usd 5.0, forge_name other/app, max_parallel 3\n"
    after = show(daemon, name)
    assert (after["max_parallel"], after["forge_name"], after["daily_cost_usd"]) == (
        3,
        "other/app",
        5,
    )
    assert after["pool_size"] is None  # not given: unchanged
    for key in ("id", "path", "default_branch", "created_at"):
        assert after[key] == before[key], key

    out = daemon.cli("repo", "update", name, "--clear", "forge-name", "--clear", "max-parallel")
    assert out.stdout == f"updated {name}: forge_name acme/app, max_parallel default\n"
    cleared = show(daemon, name)
    assert cleared["forge_name"] == "acme/app"  # the default: what the origin remote names
    assert cleared["max_parallel"] is None and cleared["daily_cost_usd"] == 5

    # The repo's jobs and events survived both updates.
    assert daemon.job(job["id"])["state"] == job["state"] == "succeeded"
    assert cleared["jobs"] == {"succeeded": 1}
    assert daemon.api.get("/events", params={"repo": name}).json() == events


def test_a_new_parallel_limit_applies_to_the_next_claim(
    daemon: Daemon, repo: Path, tmp_path: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    elsewhere = daemon.add_repo(init_repo(tmp_path / "elsewhere"))
    release = tmp_path / "release"
    block = agent("block.sh", f'while [ ! -f "{release}" ]; do sleep 0.05; done\n')
    daemon.cli("repo", "update", name, "--max-parallel", "1")
    try:
        first = daemon.submit(name, command=[block])
        daemon.wait(first["id"], {"running"})
        second = daemon.submit(name, command=[block])
        # A claim after the second was queued: the other repo's job started, this one not.
        daemon.wait(daemon.submit(elsewhere, command=[block])["id"], {"running"})
        assert daemon.job(second["id"])["state"] == "queued"

        daemon.cli("repo", "update", name, "--max-parallel", "2")
        daemon.wait(second["id"], {"running"})
    finally:
        release.touch()
    assert daemon.wait(second["id"])["state"] == "succeeded"


def idle_trees(d: Daemon, name: str) -> list[Path]:
    root = d.state_dir / "pool" / name
    return sorted(root.glob("idle-*")) if root.is_dir() else []


def test_a_new_pool_size_resizes_the_warm_pool_now(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)  # the test daemon keeps no warm trees (pool size 0)
    assert idle_trees(daemon, name) == []

    def pool_is(n: int) -> bool:
        listed = git(repo, "worktree", "list", "--porcelain")
        in_git = listed.count(str(daemon.state_dir / "pool" / name))
        return len(idle_trees(daemon, name)) == n and in_git == n

    daemon.cli("repo", "update", name, "--pool-size", "2")
    wait_until(lambda: pool_is(2), "two warm trees")
    assert show(daemon, name)["pool_size"] == 2
    daemon.cli("repo", "update", name, "--pool-size", "1")
    wait_until(lambda: pool_is(1), "one warm tree")
    daemon.cli("repo", "update", name, "--clear", "pool-size")
    wait_until(lambda: pool_is(0), "no warm tree (the daemon's default, 0)")
    assert show(daemon, name)["pool_size"] is None


def test_a_new_daily_budget_holds_for_the_next_job(
    daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    env = {"PATH": f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}"}
    if os.geteuid() == 0:
        env["IS_SANDBOX"] = "1"  # what docs/agents/claude.md tells a root user to set
    d = daemon_factory(**env).start()
    name = d.add_repo(repo)
    job = d.wait(d.submit(name, agent="claude")["id"])
    assert job["state"] == "succeeded" and job["cost_usd"] == pytest.approx(0.0123)

    d.cli("repo", "update", name, "--daily-cost-usd", "0.01")
    refused = d.cli("run", name, "--prompt", "more", "--agent", "claude", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"dispatcher: repo {name} has spent $0.01 of its $0.01")
    d.cli("repo", "update", name, "--clear", "daily-cost-usd")
    assert d.cli("run", name, "--prompt", "more", "--agent", "claude").stdout.strip().isdigit()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-parallel", "0"], "max_parallel: Input should be greater than or equal to 1"),
        (["--pool-size", "65"], "pool_size: Input should be less than or equal to 64"),
        (["--forge-name", "not a name"], "forge_name: String should match pattern"),
        (["--daily-cost-usd", "-1"], "daily_cost_usd: Input should be greater than 0"),
    ],
)
def test_bad_values_are_refused_as_by_repo_add(
    daemon: Daemon, repo: Path, args: list[str], says: str
) -> None:
    name = daemon.add_repo(repo)
    before = show(daemon, name)
    for command in (["repo", "update", name], ["repo", "add", str(repo), "--name", "x" + name]):
        result = daemon.cli(*command, *args, check=False)
        assert result.returncode == 1, result
        assert result.stderr.startswith("dispatcher: invalid request: ")
        assert says in result.stderr and len(result.stderr.splitlines()) == 1
    assert show(daemon, name) == before


def test_an_unknown_repo_is_one_line_and_a_404(daemon: Daemon) -> None:
    result = daemon.cli("repo", "update", "no-such-repo", "--pool-size", "1", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "dispatcher: no repo named 'no-such-repo'; see `dispatcher repo list`\n"
    )
    resp = daemon.api.patch("/repos/no-such-repo", json={"pool_size": 1})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_patch_takes_null_to_clear_and_refuses_a_new_path_or_name(
    daemon: Daemon, repo: Path
) -> None:
    name = daemon.add_repo(repo)
    assert daemon.api.patch(f"/repos/{name}", json={"max_parallel": 2}).json()["max_parallel"] == 2
    assert daemon.api.patch(f"/repos/{name}", json={}).json()["max_parallel"] == 2
    assert (
        daemon.api.patch(f"/repos/{name}", json={"max_parallel": None}).json()["max_parallel"]
        is None
    )
    for field in ({"name": "renamed"}, {"path": "/elsewhere"}):
        resp = daemon.api.patch(f"/repos/{name}", json=field)
        assert (
            resp.status_code == 422
            and "Extra inputs are not permitted" in resp.json()["error"]["message"]
        )
    assert show(daemon, name)["name"] == name

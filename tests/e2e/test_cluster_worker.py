"""docker-compose.yml's cluster workers (docs/cluster.md#docker-compose): the start
script each worker container runs, ``docker/cluster-worker``, run here as it runs
there (no docker on the test machines): two workers on one PostgreSQL database and one
hub dir of bare repositories, each with its own state dir. Each clones the hub's
repository into its clones dir, starts the daemon, registers its clone with the hub as
the shared remote; a job asked of either ends with its branch on the hub; a restarted
worker keeps its clone and registration; SIGTERM ends the daemon and the script."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixture import Daemon
from tests.e2e.test_postgres import FIRST_START_S
from tests.gitutil import git
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "cluster-worker"


def _worker(make: Callable[..., Daemon], pg_url: str, hub_dir: Path) -> Daemon:
    d = make(DISPATCHER_DATABASE_URL=pg_url)
    d.env.update(
        DISPATCHER_STATE_DIR=str(d.state_dir), DISPATCHER_PORT=str(d.port),
        DISPATCHER_HUB_DIR=str(hub_dir), DISPATCHER_CLONES_DIR=str(d.state_dir.parent / "clones"),
        DISPATCHER_BIND="127.0.0.1",
        DISPATCHER_ADVERTISE_URL=d.url, PATH=f"{Path(sys.executable).parent}:{d.env['PATH']}",
    )  # fmt: skip
    d.argv = ("sh", str(SCRIPT))
    return d


def _registered(d: Daemon) -> dict[str, object] | None:
    resp = d.api.get("/repos/app")
    return resp.json() if resp.status_code == 200 else None


def test_two_compose_workers_clone_the_hub_register_it_and_push_results_to_it(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path, tmp_path: Path
) -> None:
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    hub = hub_dir / "app.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(hub))
    (hub_dir / "notes.txt").write_text("not a repository: skipped\n")
    a, b = (_worker(daemon_factory, pg_url, hub_dir) for _ in range(2))
    for d in (a, b):
        d.start(timeout=FIRST_START_S)
        row = wait_until(lambda d=d: _registered(d), "the worker to register its clone", 60)
        clone = d.state_dir.parent / "clones" / "app"
        assert row["path"] == str(clone) and row["hub"] == "origin", row
        assert git(clone, "remote", "get-url", "origin").strip() == str(hub)

    jobs = [d.submit("app", command=["sh", "-c", "echo done > done.txt"]) for d in (a, b)]
    for job in jobs:
        end = wait_until(
            lambda job=job: (j := a.job(job["id"]))["state"] == "succeeded" and j["hub_sha"] and j,
            lambda job=job: f"job {job['id']} to succeed with its branch on the hub: {a.job(job['id'])}",
            60,
        )  # fmt: skip
        assert git(hub, "rev-parse", f"refs/heads/{end['branch']}").strip() == end["hub_sha"]
        assert git(hub, "show", f"{end['hub_sha']}:done.txt") == "done"

    # A restart keeps the clone and its registration (the second `repo add` is refused
    # and logged), and serves as before.
    assert a.stop() == 0
    with pytest.raises(httpx.TransportError):  # the script's daemon went with it
        httpx.get(f"{a.url}/health", timeout=2)
    head = git(a.state_dir.parent / "clones" / "app", "rev-parse", "HEAD")
    a.start(timeout=FIRST_START_S)
    wait_until(lambda: "not registered" in a.log_path.read_text(), "the refused add logged", 60)
    assert _registered(a)["path"] == str(a.state_dir.parent / "clones" / "app")  # type: ignore[index]
    assert git(a.state_dir.parent / "clones" / "app", "rev-parse", "HEAD") == head
    assert a.stop(signal.SIGINT) == 0 and b.stop() == 0


def test_the_compose_workers_run_this_script_with_their_own_dirs_and_addresses() -> None:
    # What the compose file cannot be run here to show: each worker runs the script the
    # image installs, mounts the dirs the script reads at the paths it is told, and
    # advertises the address the other worker reaches it by.
    import yaml

    root = SCRIPT.parents[1]
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    dockerfile = (root / "Dockerfile").read_text()
    installed = "COPY docker/cluster-worker /usr/local/bin/dispatcher-cluster-worker"
    assert installed in dockerfile
    assert dockerfile.index(installed) < dockerfile.index("\nUSER dispatcher")
    sources: set[str] = set()
    host_ports: set[str] = set()
    for name in ("worker-a", "worker-b"):
        worker = services[name]
        env = worker["environment"]
        assert worker["command"] == ["dispatcher-cluster-worker"]
        assert worker["profiles"] == ["cluster"]
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert env["DISPATCHER_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["DISPATCHER_DATABASE_URL"]
        assert env["DISPATCHER_ADVERTISE_URL"] == f"http://{name}:8765"
        assert env["DISPATCHER_WORKER_STOPPED_GRACE_SECONDS"] == "0"  # its agents went too
        mounts = dict(reversed(v.rsplit(":", 1)) for v in worker["volumes"])
        for var in ("DISPATCHER_STATE_DIR", "DISPATCHER_CLONES_DIR", "DISPATCHER_HUB_DIR"):
            assert env[var] in mounts, (name, var)
        assert mounts[env["DISPATCHER_HUB_DIR"]].endswith("/hub")  # the one hub, shared
        own = {mounts[env["DISPATCHER_STATE_DIR"]], mounts[env["DISPATCHER_CLONES_DIR"]]}
        assert not own & sources, f"{name} shares a state or clones dir"
        sources |= own
        (port,) = worker["ports"]
        assert port.startswith("127.0.0.1:") and port.endswith(":8765") and port not in host_ports
        host_ports.add(port)
    assert "postgres" in services and services["postgres"]["profiles"] == ["cluster"]
    assert "profiles" not in services["dispatcher"]  # a plain `docker compose up` as before

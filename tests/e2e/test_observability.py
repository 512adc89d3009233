"""``GET /metrics`` and the JSON log, against the real daemon (docs/observability.md).

The jobs are run by the fake agents of tests/fakeagents (the fake claude reports its
cost) and by real commands; notifications go to a local HTTP receiver, and to a
closed port for a failed delivery. The scrape is parsed with prometheus-client's
own parser.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_fixture import Daemon
from tests.daemonproc import dispatcher_argv, free_port
from tests.e2e.test_environments import fake_daemon, repo_with
from tests.notify.helpers import Receiver
from tests.waiting import wait_until

MANUAL = "version: 1\ntriggers:\n  by-hand:\n    on: manual\n    prompt: hi\n    agent: claude\n"

Labels = frozenset[tuple[str, str]]


def scrape(d: Daemon, **headers: str) -> dict[tuple[str, Labels], float]:
    """Every sample of ``GET /metrics``, by (sample name, labels)."""
    resp = d.api.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


SECRET = "metrics-test-secret"
WEBHOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


def of(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def summed(samples: dict[tuple[str, Labels], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def deliveries_settled(d: Daemon, job_ids: list[int], want: dict[int, int]) -> bool:
    return all(len(d.api.get(f"/jobs/{j}/deliveries").json()) >= want[j] for j in job_ids)


@pytest.mark.timeout(150)  # five jobs, their notices and a restart, on a shared machine
def test_metrics_match_the_jobs_events_and_deliveries(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    receiver = Receiver()
    try:
        targets = [
            {"type": "webhook", "url": receiver.url("/hook"), "on": ["succeeded", "failed"]},
            {"type": "ntfy", "url": f"http://127.0.0.1:{free_port()}/t", "on": ["failed"]},
        ]
        d = fake_daemon(
            daemon_factory, FAKE_AGENT_COST="0.25", DISPATCHER_NOTIFY=json.dumps(targets),
            DISPATCHER_NOTIFY_ATTEMPTS="1", DISPATCHER_GITHUB_WEBHOOK_SECRET=SECRET,
        )  # fmt: skip
        a = d.add_repo(repo_with(tmp_path / "a", MANUAL), "alpha")
        b = d.add_repo(repo_with(tmp_path / "b"), "beta")
        ids = [d.submit(a, f"job {i}", agent="claude")["id"] for i in range(2)]
        ids += [
            d.submit(b, "one", agent="claude")["id"],
            d.submit(b, "no", command=["false"])["id"],
        ]
        posted = d.api.post("/events", json={"repo": a, "kind": "manual", "dedup_key": "k1"})
        assert posted.status_code == 200, posted.text
        event_jobs = posted.json()["jobs"]
        assert len(event_jobs) == 1
        ids += event_jobs
        again = d.api.post("/events", json={"repo": a, "kind": "manual", "dedup_key": "k1"})
        assert again.json()["duplicate"] is True
        unmatched = d.api.post("/events", json={"repo": b, "kind": "push", "branch": "x"})
        assert unmatched.json()["matched"] == []
        # A forge delivery for a repo nobody registered (an org-wide hook): not kept, counted.
        body = (WEBHOOKS / "github" / "push.json").read_bytes()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        elsewhere = httpx.post(
            d.url + "/webhooks/github", content=body, timeout=30,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature},
        )  # fmt: skip
        assert "no registered repo" in elsewhere.json()["ignored"], elsewhere.text
        jobs = [d.wait(i) for i in ids]
        assert Counter(j["state"] for j in jobs) == {"succeeded": 4, "failed": 1}
        failed = next(j["id"] for j in jobs if j["state"] == "failed")
        want = {j["id"]: 2 if j["id"] == failed else 1 for j in jobs}
        wait_until(lambda: deliveries_settled(d, ids, want), "every delivery recorded", 30)

        m = scrape(d)
        # Jobs by repo and state: every state of every repo, zeros included.
        for repo in (a, b):
            listed = d.api.get("/jobs", params={"repo": repo, "limit": 500}).json()["items"]
            per_state = Counter(j["state"] for j in listed)
            for state in ("queued", "running", "succeeded", "failed", "merged"):
                assert of(m, "dispatcher_jobs", repo=repo, state=state) == per_state[state]
            assert of(m, "dispatcher_queue_depth", repo=repo) == 0
            assert of(m, "dispatcher_pool_idle_trees", repo=repo) == 0  # the pool is off
        assert of(m, "dispatcher_jobs", repo=a, state="succeeded") == 3
        # Durations: one observation per job that ran, by repo and agent.
        assert summed(m, "dispatcher_job_duration_seconds_count") == len(jobs)
        count = "dispatcher_job_duration_seconds_count"
        assert of(m, count, repo=a, agent="claude") == 3
        assert of(m, count, repo=b, agent="command") == 1
        inf = of(m, "dispatcher_job_duration_seconds_bucket", repo=b, agent="claude", le="+Inf")
        assert inf == 1
        runs = sum(j["duration_s"] for j in jobs)
        assert summed(m, "dispatcher_job_duration_seconds_sum") == pytest.approx(runs, abs=0.05)
        assert of(m, "dispatcher_spawn_latency_seconds_count", repo=a) == 3
        assert of(m, "dispatcher_spawn_latency_seconds_count", repo=b) == 2
        # The store's transactions: each job that ran wrote at least its insert, its
        # preparing write, ``running`` and its end.
        writes = of(m, "dispatcher_store_transactions_total", kind="write")
        assert writes is not None and writes >= 4 * len(jobs)
        # Cost: what the agents reported, per repo and agent (the command reported none).
        cost = "dispatcher_agent_cost_usd_total"
        for repo in (a, b):
            reported = sum(j["cost_usd"] or 0 for j in jobs if j["repo"] == repo)
            assert of(m, cost, repo=repo, agent="claude") == pytest.approx(reported)
        assert of(m, cost, repo=a, agent="claude") == pytest.approx(0.75)
        assert of(m, cost, repo=b, agent="command") is None
        # Events by source and outcome; the redelivery is counted in-process.
        assert of(m, "dispatcher_events", repo=a, source="api", outcome="job") == 1
        assert of(m, "dispatcher_events", repo=b, source="api", outcome="unmatched") == 1
        dropped = "dispatcher_events_dropped_total"
        assert of(m, dropped, source="api", reason="duplicate") == 1
        assert of(m, dropped, source="github", reason="no_repo") == 1
        # Deliveries by outcome: the receiver took every webhook, the closed port none.
        deliveries = "dispatcher_notification_deliveries_total"
        assert of(m, deliveries, repo=a, target="webhook", outcome="delivered") == 3
        assert of(m, deliveries, repo=b, target="webhook", outcome="delivered") == 2
        assert of(m, deliveries, repo=b, target="ntfy", outcome="failed") == 1
        assert summed(m, deliveries) == 6
        # Worktrees, in-process: each job's was a fresh checkout.
        assert summed(m, "dispatcher_worktree_ready_seconds_count") == len(jobs)

        d.stop()
        d.start()
        after = scrape(d)  # the store's figures survive a restart; in-process ones start over
        for name in ("dispatcher_jobs", "dispatcher_job_duration_seconds_count", cost, deliveries):
            assert summed(after, name) == pytest.approx(summed(m, name)), name
        assert summed(after, "dispatcher_worktree_ready_seconds_count") == 0
        assert of(after, dropped, source="api", reason="duplicate") is None
    finally:
        receiver.close()


def test_metrics_need_the_token_unless_opened_on_loopback(
    daemon: Daemon, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    refused = httpx.get(f"{daemon.url}/metrics", timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    wrong = httpx.get(f"{daemon.url}/metrics", headers={"Authorization": "Bearer x"}, timeout=10)
    assert wrong.status_code == 401

    opened = daemon_factory(DISPATCHER_METRICS_OPEN="true").start()
    answer = httpx.get(f"{opened.url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert "dispatcher_build_info" in answer.text
    assert httpx.get(f"{opened.url}/jobs", timeout=10).status_code == 401  # only /metrics
    assert "GET /metrics is open" in opened.log_path.read_text()


def test_open_metrics_beyond_loopback_are_refused_at_start(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory(DISPATCHER_METRICS_OPEN="true")
    proc = subprocess.run(
        [*dispatcher_argv(), "serve", "--host", "0.0.0.0", "--port", str(d.port),
         "--state-dir", str(d.state_dir)],
        env=d.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dispatcher: refusing to serve /metrics without the token on 0.0.0.0")


# ------------------------------------------------------------------ the JSON log


def json_serving(factory: Callable[..., Daemon]) -> Callable[..., Daemon]:
    """``factory``, its daemons started with ``--log-format json``."""

    def make(**env: str) -> Daemon:
        d = factory(**env)
        d.serve_args = ("--log-format", "json")
        return d

    return make


def test_json_log_lines_carry_job_repo_and_event_ids(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(json_serving(daemon_factory), DISPATCHER_ACCESS_LOG="true")
    name = d.add_repo(repo_with(tmp_path, MANUAL))
    job = d.wait(d.submit(name, "by the API", agent="claude")["id"])
    posted = d.api.post("/events", json={"repo": name, "kind": "manual"}).json()
    event_id, event_job = posted["event_id"], d.wait(posted["jobs"][0])
    assert job["state"] == event_job["state"] == "succeeded"
    assert d.stop() == 0

    lines = d.log_path.read_text().splitlines()
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all({"asctime", "levelname", "name", "message"} <= r.keys() for r in records)
    for j in (job, event_job):
        about = [r for r in records if re.match(rf"job {j['id']}\b", r["message"])]
        assert [r for r in about if "agent claude started" in r["message"]], about
        assert [r for r in about if r["message"] == f"job {j['id']} succeeded"], about
        assert all(r.get("job_id") == j["id"] and r.get("repo") == name for r in about), about
    about_event = [r for r in records if r["message"].startswith(f"event {event_id}:")]
    assert about_event and all(r.get("event_id") == event_id for r in about_event), records
    # uvicorn's access lines are JSON too, with the job a request names.
    access = [r for r in records if r["name"] == "uvicorn.access"]
    named = [r for r in access if r.get("path") == f"/jobs/{job['id']}"]
    assert named and all(r["job_id"] == job["id"] and r["status"] == 200 for r in named), access
    assert any(r.get("method") == "POST" and r.get("path") == "/events" for r in access)

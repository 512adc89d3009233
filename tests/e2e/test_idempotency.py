"""``Idempotency-Key`` against the real daemon: the key is stored with the job it
made, in one transaction, so a ``kill -9`` before the answer is stored never
makes a second job on the retry."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.daemon_fixture import Daemon, hold_fault, release_fault
from tests.e2e.test_faults import counting_gate_agent, runs
from tests.gitutil import init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
FAULT = "idempotency.before-answer"


def rows(d: Daemon, sql: str) -> list[tuple[object, ...]]:
    """Straight from the daemon's database file (what the store really holds)."""
    with contextlib.closing(sqlite3.connect(d.state_dir / "dispatcher.db")) as conn:
        return list(conn.execute(sql).fetchall())


def test_sigkill_after_the_job_before_its_answer_is_stored_makes_one_job(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    gates = tmp_path / "gates"
    script = counting_gate_agent(agent, gates)
    name = d.add_repo(init_repo(tmp_path / "r"), "r")
    body = {"repo": name, "prompt": "once", "command": [script]}
    key = {"Idempotency-Key": "create-once"}
    reached = hold_fault(faults, FAULT)
    first: list[httpx.Response | httpx.HTTPError] = []

    def post() -> None:
        headers = {"Authorization": f"Bearer {d.token}", **key}
        try:
            first.append(httpx.post(f"{d.url}/jobs", json=body, headers=headers, timeout=60))
        except httpx.HTTPError as exc:
            first.append(exc)

    sender = threading.Thread(target=post)
    sender.start()
    wait_until(reached.exists, f"the daemon at {FAULT}")
    # The job's transaction has committed; its answer is neither sent nor stored.
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    sender.join(30)
    assert not sender.is_alive()
    assert len(first) == 1 and isinstance(first[0], httpx.HTTPError), first  # no answer
    release_fault(faults, FAULT)
    d.start()

    again = d.api.post("/jobs", json=body, headers=key)
    assert again.status_code == 201, again.text  # what the first answer would have been
    assert again.headers.get("idempotent-replayed") == "true"
    job_id = again.json()["id"]
    assert rows(d, "SELECT id FROM job") == [(job_id,)]  # exactly one job in the store
    (gates / f"go-{job_id}").touch()
    assert d.wait(job_id)["state"] == "succeeded"
    assert runs(gates) == [job_id]  # the agent ran once
    # The answer is stored now: later retries replay it; another body is still refused.
    third = d.api.post("/jobs", json=body, headers=key)
    assert (third.status_code, third.json()["id"]) == (201, job_id)
    assert third.headers.get("idempotent-replayed") == "true"
    other = d.api.post("/jobs", json={**body, "prompt": "twice"}, headers=key)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert rows(d, "SELECT id FROM job") == [(job_id,)]
    assert rows(d, "SELECT resource_kind, resource_id, status FROM idempotentrequest") == [
        ("job", job_id, 201)
    ]


def test_a_chunked_body_over_the_limit_leaves_its_key_unused(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    limit = 4096
    d = daemon_factory(DISPATCHER_MAX_REQUEST_BYTES=str(limit)).start()
    name = d.add_repo(init_repo(tmp_path / "r"), "r")
    headers = {
        "Authorization": f"Bearer {d.token}",
        "Idempotency-Key": "fix-and-retry",
        "Content-Type": "application/json",
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield b'{"repo": "r", "prompt": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    with contextlib.suppress(httpx.HTTPError):  # the server may close while we still send
        big = httpx.post(f"{d.url}/jobs", content=chunks(), headers=headers, timeout=30)
        assert big.status_code == 413, big.text
    assert rows(d, "SELECT count(*) FROM idempotentrequest") == [(0,)]
    retry = httpx.post(
        f"{d.url}/jobs",
        json={"repo": name, "prompt": "small now", "command": ["true"]},
        headers=headers,
        timeout=30,
    )
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers

"""Every query of the store gives the same answer on SQLite and on PostgreSQL: one scenario
(repos, events with JSON facts, jobs through claim, port, run and end, follow-ups,
notices, deliveries, ref state, issues, Idempotency-Key rows, the dashboard's board with
a text filter, a team's tasks and messages) played on a fresh database of each, every
read method's answer collected, and the two compared. A query that only SQLite
understands fails here on PostgreSQL; one that means something else there differs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher.lifecycle import JobState
from dispatcher.store.database import BOARD_COLUMNS, JobFilter, Store, migrate
from dispatcher.store.jobpath import StartBlocks
from dispatcher.store.models import Delivery, Event, IdempotencyKey, Issue, Job, Repo
from dispatcher.store.team_models import TaskState, Team, TeamMessage, TeamTask
from dispatcher.store.teams import TeamStore

S = JobState
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _job(repo_id: int, prompt: str, **fields: Any) -> Job:
    return Job(
        repo_id=repo_id, prompt=prompt, agent="command", base_ref="main", base_sha="0" * 40,
        target_branch="main", timeout_s=60, **fields,
    )  # fmt: skip


def _ids(rows: list[Any]) -> list[int]:
    return [r.id for r in rows]


def play(store: Store) -> dict[str, Any]:
    """The scenario, and what every read answered (ids, names, values: no clock times)."""
    out: dict[str, Any] = {}
    beta = store.add_repo(
        Repo(name="beta", path="/srv/beta", default_branch="main", forge_name="Org/Beta")
    )
    alpha = store.add_repo(Repo(name="Alpha", path="/srv/alpha", default_branch="main"))
    gone = store.add_repo(Repo(name="alpha-2", path="/srv/alpha-2", default_branch="main"))
    assert beta.id and alpha.id and gone.id
    store.update_repo(alpha.id, triggers_max_parallel=1, daily_cost_usd=2.5)
    out["repos"] = [(r.name, r.triggers_max_parallel) for r in store.repos()]
    out["find"] = [store.find_repo(path="/srv/beta"), store.find_repo(name="nope")]
    out["find"] = [r.name if r else None for r in out["find"]]
    out["by_forge"] = [r.name for r in store.repos_by_forge_name("org/BETA")]
    out["repo_names"] = store.repo_names([alpha.id, beta.id])

    # Events: JSON payloads, facts, matched and pending triggers.
    def event(key: str, cron: str, fired: datetime, pending: list[str]) -> Event:
        made = store.add_event(
            Event(repo_id=beta.id, kind="schedule", source="local", dedup_key=key,
                  facts={"schedule": cron}, payload={"fired_at": fired.isoformat()},
                  matched=["nightly"], pending_triggers=pending)
        )  # fmt: skip
        assert made is not None
        return made

    e1 = event("s1", "0 3 * * *", T0, ["nightly"])
    e2 = event("s2", "0 3 * * *", T0 + timedelta(days=1), ["nightly", "other"])
    e3 = event("s3", "*/5 * * * *", T0 + timedelta(minutes=5), [])
    assert e1.id and e2.id and e3.id
    out["dup"] = store.add_event(Event(repo_id=beta.id, kind="x", source="api", dedup_key="s1"))
    out["pending"] = _ids(store.events_with_pending_triggers())
    store.note_event(e1.id, note="a check passed", decided="nightly")
    store.note_event(e2.id, decided="other")
    out["pending_after"] = _ids(store.events_with_pending_triggers())
    out["notes"] = [(e.notes, e.pending_triggers) for e in store.events(repo_id=beta.id)]
    out["fires"] = store.last_schedule_fires(beta.id)
    out["events_page"] = _ids(store.events(before=e3.id, limit=1))
    out["by_key"] = store.event_by_key("s2").id  # type: ignore[union-attr]

    # Jobs: through the claim, a port, the run and the end; groups, costs, follow-ups.
    def job(repo_id: int, prompt: str, **fields: Any) -> int:
        made = store.add_job(_job(repo_id, prompt, **fields), branch_for=lambda i: f"b/{i}")
        assert made.id is not None
        return made.id

    j1 = job(beta.id, "Fix The Bug in parser", event_id=e1.id, trigger="nightly",
             concurrency_group="g")  # fmt: skip
    j2 = job(beta.id, "second 100%_done", concurrency_group="g")
    j3 = job(alpha.id, "alpha work")
    j4 = job(alpha.id, "alpha later", not_before=T0 + timedelta(days=3650))
    j5 = job(gone.id, "in a repo that goes")
    out["again"] = store.add_job(
        _job(beta.id, "dup", event_id=e1.id, trigger="nightly"), branch_for=str
    ).id
    blocks = StartBlocks(base=20000, count=100, block=10, usable=lambda p: p != 20000)
    claimed = store.claim_pass(max_parallel=10, per_repo_default=5, start=blocks)
    out["claimed"] = ([c.job_id for c in claimed.claimed], claimed.waiting)
    out["claimed rows"] = [
        (c.job.state, c.job.port, len(c.job.spawn_nonce or ""), c.job.claimed_at is not None,
         c.job.branch, c.job.prompt, c.repo.name)
        for c in claimed.claimed
    ]  # fmt: skip
    out["group"] = _ids(store.active_in_group(beta.id, "g"))
    out["advance"] = store.advance(j1, S.PREPARING, S.RUNNING, started_at=T0, pid=42,
                                   pid_start=3_000_000_000, worktree="/w/1")  # fmt: skip
    store.update(j1, cancel_requested=True)
    out["canceled?"] = store.advance(
        j1, S.RUNNING, S.SUCCEEDED, finished_at=T0 + timedelta(minutes=2), exit_code=0,
        cost_usd=0.75, commits_ahead=2, head_sha="1" * 40, input_tokens=5_000_000_000,
    )  # fmt: skip
    store.move(j3, S.PREPARING, S.FAILED, finished_at=T0, cost_usd=0.25, error="boom")
    follow = store.add_followup(j1, _job(beta.id, "follow up"))
    out["follow"] = (follow.followup_of, follow.branch, store.job(j1).followed_by)
    out["chain"] = [[j.id for j in store.chain(i)] for i in (j1, follow.id, j2)]
    assert out["chain"] == [[j1, follow.id], [j1, follow.id], [j2]]
    retry = job(alpha.id, "alpha work", retry_of=j3, parent_id=j1)
    out["retry_of"] = store.retry_of(j3).id  # type: ignore[union-attr]
    out["children"] = store.count_children(j1)
    out["active"] = store.count_active()
    out["counts"] = store.job_counts()
    out["counts_alpha"] = store.job_counts(alpha.id)
    out["jobs"] = [_ids(store.jobs(repo_id=beta.id)), _ids(store.jobs(state=S.QUEUED)),
                   _ids(store.jobs(before=j4, limit=2)), _ids(store.jobs(parent_id=j1))]  # fmt: skip
    out["holding"] = _ids(store.jobs_holding_worktrees())
    out["in"] = _ids(store.jobs_in([S.SUCCEEDED, S.FAILED]))
    out["with_commits"] = _ids(store.finished_with_commits())
    out["inbox"] = _ids(store.inbox(10))
    out["costs"] = (store.costs_since(T0 - timedelta(days=1)), store.cost_since(alpha.id, T0))
    out["for_events"] = store.job_ids_for_events([e1.id, e2.id])
    out["for_event"] = store.job_for_event(e1.id, "nightly").id  # type: ignore[union-attr]
    j1_row = store.job(j1)
    out["j1"] = (j1_row.state, j1_row.port, j1_row.pid_start, j1_row.input_tokens,
                 j1_row.cancel_requested, j1_row.started_at)  # fmt: skip
    for column in BOARD_COLUMNS:
        out[f"board {column}"] = [
            (_ids(rows), n)
            for rows, n in (
                store.board_jobs(column, JobFilter()),
                store.board_jobs(column, JobFilter(text="fix the")),  # any case
                store.board_jobs(column, JobFilter(text="100%_")),  # LIKE's own signs
                store.board_jobs(column, JobFilter(repo_id=alpha.id, agent="command")),
            )
        ]
    assert retry
    out["j2"] = j2

    # Notices and deliveries.
    store.owe_notice(j1, "succeeded")
    store.owe_notice(j3, "failed")
    store.settle_notice(j3, "failed")
    out["owed"] = _ids(store.jobs_owed_notices())
    for ok in (True, False):
        store.add_delivery(Delivery(job_id=j1, target="ntfy", url="http://x/t",
                                    state="succeeded", ok=ok, attempts=1))  # fmt: skip
    out["deliveries"] = [(d.ok, d.attempts) for d in store.deliveries(j1)]
    out["recent"] = [d.ok for d in store.recent_deliveries(limit=1)]

    # Ref state, issues, Idempotency-Key rows.
    store.save_ref_state(beta.id, {"refs/heads/main": "a" * 40, "refs/heads/x": "b" * 40})
    store.save_ref_state(beta.id, {"refs/heads/main": "c" * 40})
    out["refs"] = store.ref_state(beta.id)
    i1 = store.add_issue(Issue(repo_id=beta.id, number=0, title="one", labels=["bug"]))
    i2 = store.add_issue(Issue(repo_id=beta.id, number=0, title="two"))
    assert i1.id and i2.id
    store.set_issue_event(i2.id, e3.id)
    out["issues"] = [(i.number, i.title, i.labels, i.event_id) for i in store.issues(beta.id)]
    key = IdempotencyKey("k", "POST", "/jobs", "h", not_before=T0 - timedelta(days=1))
    store.idempotent_answer(key, 201, b'{"id": 1}', "application/json")
    row = store.idempotent_get(key)
    out["idem"] = (row.status, row.body, store.made_by(key, "job")) if row else None

    # A team: tasks moved by compare-and-set, messages leased and acknowledged.
    teams = TeamStore(store)
    team = teams.add_team(Team(repo_id=beta.id, goal="g", base_sha="0" * 40), branch_for=str)
    assert team.id is not None
    task = teams.add_task(TeamTask(team_id=team.id, title="t", prompt="p", blocked_by=[]),
                          lambda tasks: None)  # fmt: skip
    assert task.id is not None
    teams.move_task(task.id, TaskState.WAITING, TaskState.STARTING)
    teams.add_messages([TeamMessage(team_id=team.id, recipient="lead", sender="person",
                                    body=f"m{i}") for i in range(3)])  # fmt: skip
    taken, _ = teams.take_messages(team.id, "lead", 2, ack=None, lease_s=60)
    again, held = teams.take_messages(team.id, "lead", 5, ack=taken[-1].id, lease_s=60)
    out["team"] = ([t.state for t in teams.tasks(team.id)], [m.body for m in taken],
                   [m.body for m in again], held is None,
                   [(m.body, m.delivered_at is not None) for m in teams.messages(team.id)])  # fmt: skip

    store.move(j4, S.QUEUED, S.CANCELED)
    store.move(j5, S.PREPARING, S.FAILED)
    store.remove_repo(gone.id)
    out["after_remove"] = ([r.name for r in store.repos()], store.job_counts())
    return out


def test_every_query_answers_the_same_on_sqlite_and_postgresql(
    tmp_path: Path, pg_migrated_url: str
) -> None:
    sqlite_url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(sqlite_url)
    answers = []
    for url in (sqlite_url, pg_migrated_url):
        store = Store(url)
        try:
            answers.append(play(store))
        finally:
            store.close()
    lite, pg = answers
    j2 = lite["j2"]
    assert list(lite) == list(pg)
    for key in lite:
        assert lite[key] == pg[key], key
    # The scenario tested something: a few answers, as they should be.
    assert lite["repos"] == [("Alpha", 1), ("alpha-2", None), ("beta", None)]
    assert lite["pending"] == [1, 2] and lite["pending_after"] == [2]
    assert lite["fires"] == {
        "0 3 * * *": T0 + timedelta(days=1),
        "*/5 * * * *": T0 + timedelta(minutes=5),
    }
    # "fix the" finds "Fix The Bug" (in Done: it was followed up); "100%_" only the second.
    assert sum(lite[f"board {c}"][1][1] for c in BOARD_COLUMNS) == 1
    assert lite["board queued"][2] == ([j2], 1)
    assert lite["j1"][2:4] == (3_000_000_000, 5_000_000_000)  # past 32 bits

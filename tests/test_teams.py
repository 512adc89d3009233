"""Teams' pure parts (the graph checks, the task state table, the drawn graph) and the
mailbox over a real SQLite store (each message once, in order; a waiting read woken)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.errors import InvalidInput, InvalidState, NotFound
from dispatcher.service.team_messages import Mailbox
from dispatcher.service.teams import check_graph, find_cycle
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import Job, Repo
from dispatcher.store.team_models import (
    TASK_TRANSITIONS,
    MessageCreate,
    TaskState,
    Team,
    TeamTask,
    task_transition,
)
from dispatcher.store.teams import TeamStore
from dispatcher.teamgraph import draw_graph


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({}, None),
        ({1: [], 2: [1], 3: [1, 2]}, None),
        ({1: [1]}, [1, 1]),
        ({1: [2], 2: [1]}, [1, 2, 1]),
        ({1: [], 2: [3], 3: [4], 4: [2]}, [2, 3, 4, 2]),
        ({5: [6], 6: [7], 7: []}, None),
        ({1: [2, 3], 2: [3], 3: []}, None),  # a diamond is no cycle
    ],
)
def test_find_cycle(graph: dict[int, list[int]], cycle: list[int] | None) -> None:
    assert find_cycle(graph) == cycle


def _task(task_id: int | None, blocked_by: list[int]) -> TeamTask:
    return TeamTask(id=task_id, team_id=1, title="t", prompt="p", blocked_by=blocked_by)


def test_check_graph_names_unknown_blockers_and_cycles() -> None:
    check_graph([_task(1, []), _task(2, [1]), _task(None, [1, 2])])
    with pytest.raises(InvalidInput, match=r"task \(new\): unknown blocker\(s\) 7, 9: not tasks"):
        check_graph([_task(1, []), _task(None, [9, 1, 7])])
    with pytest.raises(InvalidInput, match=r"the blockers make a cycle: 1 -> 2 -> 1"):
        check_graph([_task(1, [2]), _task(2, [1])])


def test_every_task_state_has_its_row_and_the_table_is_enforced() -> None:
    assert set(TASK_TRANSITIONS) == set(TaskState)
    assert task_transition(TaskState.WAITING, TaskState.STARTING) is TaskState.STARTING
    assert TASK_TRANSITIONS[TaskState.DONE] == frozenset()
    with pytest.raises(InvalidState, match="from done to waiting"):
        task_transition(TaskState.DONE, TaskState.WAITING)
    with pytest.raises(InvalidState):
        task_transition(TaskState.WAITING, TaskState.RUNNING)  # never without its job made


def test_draw_graph_puts_each_task_under_its_last_blocker() -> None:
    def row(i: int, title: str, state: str, blocked: list[int], waiting: list[int]) -> dict:
        return {
            "id": i, "title": title, "state": state, "job_id": i * 10 if state != "waiting" else None,
            "blocked_by": blocked, "waiting_on": waiting, "fix_of": None,
        }  # fmt: skip

    lines = draw_graph(
        [
            row(1, "a", "done", [], []),
            row(2, "b", "running", [], []),
            row(3, "c", "waiting", [1, 2], [2]),
            row(4, "d", "waiting", [1], []),
        ]
    )
    assert lines == [
        "[ok] #1 a (done, job 10)",
        "`-> [..] #4 d (waiting)",
        "[>>] #2 b (running, job 20)",
        "`-> [..] #3 c (waiting) also after #1 waits on #2",
    ]


# ---------------------------------------------------------------- a team's children


def test_a_teams_children_and_theirs_count_in_its_cost_and_find_their_team(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    store = Store(url)
    try:
        repo = store.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
        assert repo.id is not None
        rows = TeamStore(store)
        team = rows.add_team(
            Team(repo_id=repo.id, goal="g", base_sha="0" * 40), branch_for=lambda i: f"t-{i}"
        )
        assert team.id is not None

        def job(cost: float, **fields: Any) -> Job:
            made = store.add_job(
                Job(
                    repo_id=repo.id, prompt="p", agent="command", base_ref="main",
                    base_sha="0" * 40, target_branch="main", timeout_s=60, cost_usd=cost,
                    **fields,
                ),
                branch_for=lambda jid: f"dispatcher/{jid}-p",
            )  # fmt: skip
            assert made.id is not None
            return made

        lead = job(1.0, team_id=team.id)
        child = job(0.5, parent_id=lead.id)
        grandchild = job(0.25, parent_id=child.id)
        other = job(8.0)
        job(4.0, parent_id=other.id)  # another job's child: no team's
        assert [j.id for j in rows.children(team.id)] == [child.id, grandchild.id]
        assert rows.team_cost(team.id) == pytest.approx(1.75)
        assert rows.team_of_job(grandchild) == rows.team_of_job(lead) == team.id
        assert rows.team_of_job(other) is None
    finally:
        store.close()


# ---------------------------------------------------------------- the mailbox


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Mailbox, int, int]]:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    store = Store(url)
    try:
        repo = store.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
        assert repo.id is not None
        rows = TeamStore(store)
        team = rows.add_team(
            Team(repo_id=repo.id, goal="g", base_sha="0" * 40), branch_for=lambda i: f"t-{i}"
        )
        assert team.id is not None and team.branch == f"t-{team.id}"
        task = rows.add_task(TeamTask(team_id=team.id, title="t", prompt="p"), lambda _: None)
        assert task.id is not None
        yield Mailbox(rows), team.id, task.id
    finally:
        store.close()


def test_messages_are_read_once_each_in_order(box: tuple[Mailbox, int, int]) -> None:
    mailbox, team, task = box
    for body in ("1", "2", "3"):
        mailbox.send(team, MessageCreate.model_validate({"to": f"task:{task}", "body": body}))
    assert [m.body for m in mailbox.read(team, f"task:{task}", limit=2)] == ["1", "2"]
    assert [m.body for m in mailbox.read(team, f"task:{task}")] == ["3"]
    assert mailbox.read(team, f"task:{task}") == []
    sent = mailbox.send(
        team, MessageCreate.model_validate({"to": "all", "body": "b", "from": "lead"})
    )
    assert [m.recipient for m in sent] == [f"task:{task}"]  # not back to the lead
    text, delivered = mailbox.for_prompt(team, f"task:{task}")
    assert "from lead (message" in text
    assert mailbox.for_prompt(team, f"task:{task}")[0] == text  # not delivered until its job is
    delivered()
    assert mailbox.for_prompt(team, f"task:{task}")[0] == ""  # in one prompt: once
    assert mailbox.read(team, f"task:{task}") == []
    with pytest.raises(InvalidInput, match="unknown recipient"):
        mailbox.read(team, "someone")
    # An unknown team is not found, whoever the message is for (a broadcast too).
    for to in ("all", "lead", f"task:{task}"):
        with pytest.raises(NotFound, match=r"^no team with id 987654; see `dispatcher team list`$"):
            mailbox.send(987654, MessageCreate.model_validate({"to": to, "body": "x"}))


def test_a_waiting_read_is_woken_by_a_send(box: tuple[Mailbox, int, int]) -> None:
    mailbox, team, task = box
    got: list[tuple[list[str], float]] = []
    reader = threading.Thread(
        target=lambda: got.append(
            ([m.body for m in mailbox.read(team, "lead", wait_s=30)], time.monotonic())
        )
    )
    reader.start()
    # The reader is waiting once it sits in the condition: its count was read.
    deadline = time.monotonic() + 10
    while not mailbox._cond._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.005)
    sent = time.monotonic()
    mailbox.send(
        team, MessageCreate.model_validate({"to": "lead", "body": "hi", "from": f"task:{task}"})
    )
    reader.join(10)
    assert got and got[0][0] == ["hi"]
    assert got[0][1] - sent < 2  # woken, not timed out after 30 s
    assert mailbox.read(team, "lead", wait_s=0.05) == []  # an empty wait returns at its end

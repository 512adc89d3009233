"""A team's messages: sent durably, read once each in order, a waiting read woken on send.

A message is one row per recipient (a broadcast is a row for each), stored
before :meth:`Mailbox.send` returns. A read hands over the recipient's oldest
undelivered rows and marks them delivered in the same write, so each reaches
exactly one read, even across a restart. A read that finds nothing may wait:
it sleeps on a condition that :meth:`Mailbox.send` notifies (no polling loop).
Agents that cannot call the daemon get their undelivered messages in the
prompt of the next run the team starts for them (:meth:`Mailbox.for_prompt`),
marked delivered once that run's job is made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from dispatcher.errors import InvalidInput
from dispatcher.store.team_models import (
    MessageCreate,
    MessagePublic,
    TaskState,
    TeamMessage,
)
from dispatcher.store.teams import TeamStore

MAX_WAIT_S = 120.0
"""The longest a read waits for a message (a client waits again after it)."""

_GONE = frozenset({TaskState.DONE, TaskState.CANCELED, TaskState.FAILED})
"""Tasks a broadcast does not reach: nothing of theirs runs any more."""


@dataclass(eq=False)
class Mailbox:
    teams: TeamStore
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    # How many sends reached each (team, recipient): a waiting read wakes when it changes.
    _sent: dict[tuple[int, str], int] = field(default_factory=dict, init=False)

    def send(
        self, team_id: int, req: MessageCreate, *, kind: str = "message"
    ) -> list[MessagePublic]:
        """Store ``req`` for its recipient (``all``: every task still at work and the
        lead, not the sender), then wake their waiting reads."""
        recipients = self._recipients(team_id, req.to, sender=req.sender)
        if not recipients:
            raise InvalidInput(f"team {team_id} has nobody else to send to")
        kind = "broadcast" if req.to == "all" else kind
        rows = self.teams.add_messages(
            [
                TeamMessage(
                    team_id=team_id, recipient=r, sender=req.sender, body=req.body, kind=kind
                )
                for r in recipients
            ]
        )
        self._wake(team_id, recipients)
        return [_public(row) for row in rows]

    def notify(self, team_id: int, to: str, body: str, *, kind: str = "notice") -> None:
        """A message from the daemon itself (a task failed, a plan waits, the budget)."""
        row = TeamMessage(team_id=team_id, recipient=to, sender="daemon", body=body, kind=kind)
        self.teams.add_messages([row])
        self._wake(team_id, [to])

    def read(
        self, team_id: int, recipient: str, *, wait_s: float = 0.0, limit: int = 100
    ) -> list[MessagePublic]:
        """The recipient's undelivered messages, oldest first, each handed over once.
        With ``wait_s``, a read that finds none waits up to that long for a send."""
        self._check_recipient(team_id, recipient)
        key = (team_id, recipient)
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while True:
            with self._cond:
                seen = self._sent.get(key, 0)
            rows = self.teams.take_messages(team_id, recipient, limit)
            left = deadline - time.monotonic()
            if rows or left <= 0:
                return [_public(row) for row in rows]
            with self._cond:  # a send since the take bumped the count: take again at once
                self._cond.wait_for(partial(self._moved, key, seen), left)

    def _moved(self, key: tuple[int, str], seen: int) -> bool:
        return self._sent.get(key, 0) != seen

    def for_prompt(self, team_id: int, recipient: str) -> tuple[str, Callable[[], None]]:
        """The recipient's undelivered messages as a prompt section ("" when there are
        none), for agents that cannot read them themselves, and what marks them
        delivered: called once the prompt's job is made (until then a read gets them)."""
        rows = self.teams.undelivered(team_id, recipient, 1000)
        if not rows:
            return "", lambda: None
        lines = [f"- from {r.sender} (message {r.id}): {r.body}" for r in rows]
        text = "Messages sent to you since your last run, oldest first:\n" + "\n".join(lines)
        return text, partial(self.teams.delivered, rows)

    def _wake(self, team_id: int, recipients: Iterable[str]) -> None:
        with self._cond:
            for r in recipients:
                self._sent[(team_id, r)] = self._sent.get((team_id, r), 0) + 1
            self._cond.notify_all()

    def _recipients(self, team_id: int, to: str, *, sender: str) -> list[str]:
        if to != "all":
            self._check_recipient(team_id, to)
            return [to]
        self.teams.team(team_id)  # NotFound for an unknown team
        tasks = [f"task:{t.id}" for t in self.teams.tasks(team_id) if t.state not in _GONE]
        return [r for r in ["lead", *tasks] if r != sender]

    def _check_recipient(self, team_id: int, who: str) -> None:
        """``lead``, ``person`` or ``task:<id>`` of a task of this team; else InvalidInput."""
        self.teams.team(team_id)  # NotFound for an unknown team
        if who in ("lead", "person"):
            return
        kind, _, number = who.partition(":")
        if kind != "task" or not number.isdigit():
            raise InvalidInput(f"unknown recipient {who!r}: use lead, person or task:<id>")
        if self.teams.task(int(number)).team_id != team_id:
            raise InvalidInput(f"task {number} is not a task of team {team_id}")


def _public(row: TeamMessage) -> MessagePublic:
    return MessagePublic.model_validate(row, from_attributes=True)

"""A team's messages: sent durably, handed out in order, delivered once acknowledged;
a waiting read woken on send.

A message is one row per recipient (a broadcast is a row for each), stored
before :meth:`Mailbox.send` returns. A read first confirms what its caller
acknowledges (``ack``: the id of the last message it handled; those become
delivered), then leases the recipient's next undelivered rows to itself for
the lease time (``team_message_lease_seconds``) and hands them out. A read
whose answer never reaches its caller (it gave up waiting, its connection
dropped) loses nothing: unacknowledged, the rows are handed out again, same
ids, once the lease ends. Only a run from the oldest undelivered row is handed
out, so the order holds. A read that finds none may wait: it sleeps on a
condition that :meth:`Mailbox.send` notifies (no polling loop), or until the
lease that holds the next row ends. Agents that cannot call the daemon get
their undelivered messages in the prompt of the next run the team starts for
them (:meth:`Mailbox.for_prompt`): leased to that prompt (no read takes them),
delivered once that run's job is made (a restart that finds the job confirms
them, :meth:`Mailbox.prompt_delivered`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from dispatcher.errors import InvalidInput
from dispatcher.store.models import utcnow
from dispatcher.store.team_models import (
    MessageCreate,
    MessagePublic,
    TaskState,
    TeamMessage,
)
from dispatcher.store.teams import TeamStore

MAX_WAIT_S = 120.0
"""The longest a read waits for a message (a client waits again after it)."""

LEASE_S = 60.0
"""How long a read holds what it handed out before it is handed out again
(the default of the ``team_message_lease_seconds`` setting)."""

_GONE = frozenset({TaskState.DONE, TaskState.CANCELED, TaskState.FAILED})
"""Tasks a broadcast does not reach: nothing of theirs runs any more."""


@dataclass(eq=False)
class Mailbox:
    teams: TeamStore
    lease_s: float = LEASE_S
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
        self,
        team_id: int,
        recipient: str,
        *,
        wait_s: float = 0.0,
        limit: int = 100,
        ack: int | None = None,
    ) -> list[MessagePublic]:
        """Confirm the recipient's messages up to ``ack``, then hand out its next
        undelivered ones, oldest first, leased to this read (``limit`` 0: only confirm).
        With ``wait_s``, a read that finds none waits up to that long for a send."""
        self._check_recipient(team_id, recipient)
        key = (team_id, recipient)
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while True:
            with self._cond:
                seen = self._sent.get(key, 0)
            rows, held_until = self.teams.take_messages(
                team_id, recipient, limit, ack=ack, lease_s=self.lease_s
            )
            if ack is not None:  # what it confirmed no longer holds back another's read
                self._wake(team_id, [recipient])
                ack = None  # confirmed; a take again need not
            left = deadline - time.monotonic()
            if rows or left <= 0 or limit <= 0:
                return [_public(row) for row in rows]
            if held_until is not None:  # an earlier read's lease holds the next: until it ends
                left = min(left, _until(held_until))
            with self._cond:  # a send since the take bumped the count: take again at once
                self._cond.wait_for(partial(self._moved, key, seen), left)

    def _moved(self, key: tuple[int, str], seen: int) -> bool:
        return self._sent.get(key, 0) != seen

    def for_prompt(self, team_id: int, recipient: str) -> tuple[str, Callable[[], None]]:
        """The recipient's undelivered messages as a prompt section ("" when there are
        none), for agents that cannot read them themselves, leased to that prompt (no
        read takes them meanwhile), and what marks them delivered: called once the
        prompt's job is made. Each body is fenced under its header (every line
        indented), so no line of it can pass for another message."""
        rows = self.teams.lease_for_prompt(team_id, recipient, 1000)
        if not rows:
            return "", lambda: None
        parts = [prompt_entry(r.sender, r.id, r.body) for r in rows]
        text = (
            "Messages sent to you since your last run, oldest first (each one's text is "
            "indented under its header):\n" + "\n".join(parts)
        )
        return text, partial(self._prompt_made, team_id, recipient, rows)

    def _prompt_made(self, team_id: int, recipient: str, rows: list[TeamMessage]) -> None:
        self.teams.delivered(rows)
        self._wake(team_id, [recipient])  # a read held back by the prompt may go on

    def release_prompt(self, team_id: int, recipient: str) -> None:
        """Let reads have what a prompt of ``recipient`` held: its job could not be made."""
        self.teams.release_prompt(team_id, recipient)
        self._wake(team_id, [recipient])

    def settle_prompts(self, team_id: int, prompt_of: Callable[[str], str | None]) -> None:
        """At a restart: every message a prompt still holds is confirmed if it is in the
        prompt of its recipient's newest job (``prompt_of``), else freed for reads (the
        daemon died before that prompt's job was made, or before its confirm ran)."""
        held = self.teams.prompt_held(team_id)
        for recipient in sorted({m.recipient for m in held}):
            prompt = prompt_of(recipient) or ""
            mine = [m for m in held if m.recipient == recipient]
            made = [
                m.id
                for m in mine
                if m.id is not None and prompt_entry(m.sender, m.id, m.body) in prompt
            ]
            self.teams.delivered_ids(made)
            if len(made) < len(mine):
                self.teams.release_prompt(team_id, recipient)
            self._wake(team_id, [recipient])

    def prompt_delivered(self, team_id: int, recipient: str) -> None:
        """Confirm what a prompt of ``recipient`` holds: a restart found the job made of
        it (the daemon stopped before :meth:`for_prompt`'s confirm ran)."""
        self.teams.prompt_delivered(team_id, recipient)
        self._wake(team_id, [recipient])

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


def prompt_entry(sender: str, message_id: int | None, body: str) -> str:
    """One message in a prompt: its header, then every line of its body indented four
    spaces (a body cannot start a line of its own, so it cannot forge a header)."""
    lines = body.splitlines() or [""]
    return f"- from {sender} (message {message_id}):\n" + "\n".join("    " + line for line in lines)


def _until(when: datetime) -> float:
    """Seconds from now until ``when`` (at least a little, so a wait is a wait)."""
    return max((when - utcnow()).total_seconds(), 0.01)


def _public(row: TeamMessage) -> MessagePublic:
    return MessagePublic.model_validate(row, from_attributes=True)

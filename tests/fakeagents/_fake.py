"""Shared code of the fake agents in this directory (``claude``, ``codex``, ``gemini``, ``goose``,
``qwen``, ``opencode``).

Each fake reads its prompt the way the built-in profile hands it over, appends
it to ``AGENT_NOTES.md`` in the current directory (so the job has a change to
commit), records what it was given in ``AGENT_ARGS.json`` and prints its real
counterpart's JSON events on stdout. Environment variables steer them:

``FAKE_AGENT_ERROR=1``
    report a failure the agent's own way (see each script).
``FAKE_AGENT_COST=<float>``
    claude's ``total_cost_usd`` (default 0.0123).
``FAKE_AGENT_GARBAGE=1``
    print non-JSON and broken JSON lines between the events (and one on stderr).
``FAKE_AGENT_SUMMARY=<text>``
    the agent's final message (default: one naming the prompt's length).
``FAKE_AGENT_EXIT=<int>``
    exit with this code instead of the agent's usual one.
``FAKE_AGENT_UNTIL_ROTATED=N``
    after the first event, print N bytes of plain progress lines (set N past
    the log cap so that the daemon's log writer rotates the first event out).

Standard library only; the scripts import this module by path.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

NOTES = "AGENT_NOTES.md"
ARGS = "AGENT_ARGS.json"

_GARBAGE = (
    "warning: this line is not JSON",
    '{"type": "result", "result": "broken line, cut o',
    "[1, 2, 3]",
    '{"type": "fake.unknown.event", "payload": {"n": 1}}',
    "{not json at all}",
)


def flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def failing() -> bool:
    return flag("FAKE_AGENT_ERROR")


def new_id() -> str:
    return str(uuid.uuid4())


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    return sys.stdin.read()


def option(argv: Sequence[str], *names: str) -> str | None:
    """The value of the last ``--name value`` / ``--name=value`` / ``-n value`` in ``argv``."""
    found = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(name + "=") and name.startswith("--"):
                found = arg[len(name) + 1 :]
    return found


def summary(prompt: str, default: str | None = None) -> str:
    text = os.environ.get("FAKE_AGENT_SUMMARY")
    if text:
        return text
    return default or f"Recorded the prompt ({len(prompt)} characters) in {NOTES}."


def record(agent: str, prompt: str, *, resumed: str | None = None, **received: object) -> None:
    """Append the prompt to AGENT_NOTES.md and write AGENT_ARGS.json."""
    with open(NOTES, "a", encoding="utf-8") as fh:
        fh.write(f"## {agent}\n\n{prompt.rstrip()}\n\n")
        if resumed is not None:
            fh.write(f"resumed {resumed}\n\n")
    env = {k: v for k, v in os.environ.items() if k.startswith(("DISPATCHER_", "FAKE_AGENT_"))}
    if "DISPATCHER_JOB_TOKEN" in env:  # this file is in the worktree: never the token
        env["DISPATCHER_JOB_TOKEN"] = "<set>"
    document = {
        "agent": agent,
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "prompt": prompt,
        "resumed": resumed,
        "env": env,
        **received,
    }
    Path(ARGS).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def emit(event: object) -> None:
    """Print one event as a JSON line, with garbage after it if asked for."""
    print(json.dumps(event, ensure_ascii=False, separators=(",", ":")), flush=True)
    if flag("FAKE_AGENT_GARBAGE"):
        for line in _GARBAGE:
            print(line, flush=True)
        print("stderr: also not JSON", file=sys.stderr, flush=True)


def chunks(text: str, parts: int = 3) -> list[str]:
    """``text`` cut into about ``parts`` pieces, as streamed deltas arrive."""
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def finish(code: int) -> None:
    override = os.environ.get("FAKE_AGENT_EXIT")
    sys.stdout.flush()
    sys.exit(int(override) if override else code)


def chatter_until_rotated() -> None:
    """With FAKE_AGENT_UNTIL_ROTATED=N: progress lines until N bytes are written.

    The agent cannot watch its log (stdout is the daemon's log writer's pipe, and
    the sandbox hides the job's files), so the test sets N past the log cap: the
    writer rotates before a write would pass the cap, and the test checks that
    it did, in the log."""
    value = os.environ.get("FAKE_AGENT_UNTIL_ROTATED", "")
    if not value.isdigit():
        return
    line = "working: " + "." * 200 + "\n"
    written = 0
    while written < int(value):
        sys.stdout.write(line)
        written += len(line)
    sys.stdout.flush()

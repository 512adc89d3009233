"""This node's identity: which state dir a worker start runs from (docs/cluster.md).

A node is one state dir on one machine: its clones, worktrees, agents and journals. Each
daemon start is a new worker row; the starts of one node share its node id, kept in
``<state_dir>/node-id`` (a UUID written at the first start). So a restarted daemon knows
which rows were its own, wherever and under whatever name it ran before, and two state
dirs on one machine are two nodes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from dispatcher.errors import DispatcherError


def node_id(path: Path) -> str:
    """The node id kept in ``path`` (``Settings.node_id_file``), written the first time.
    The caller holds the state dir (one daemon per state dir), so no start races it."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise DispatcherError(
                f"{path} does not hold a node id (a UUID): {text[:40]!r}; restore it, or"
                " delete it to make this state dir a new node"
            ) from None
    new = str(uuid.uuid4())
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(new + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return new

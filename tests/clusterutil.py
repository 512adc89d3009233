"""Cluster test helpers (docs/cluster.md): a bare hub repository, clones of it, and
two nodes (each its own state dir, store with a node id, and service) on one
migrated database, as two machines' daemons would be. A pytest plugin (see
tests/conftest.py), so the `nodes` fixture is shared without being imported."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.config import Settings
from dispatcher.jobs.runner import Runner
from dispatcher.service import Service
from dispatcher.store.database import Store
from dispatcher.store.models import RepoCreate
from tests.gitutil import git, init_repo


def _hub(tmp_path: Path, name: str = "hub") -> Path:
    """A bare hub repository with one commit on main."""
    work = init_repo(tmp_path / f"{name}-seed")
    hub = tmp_path / f"{name}.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(hub))
    return hub


def _clone(url: str, where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    git(where.parent, "clone", "-q", url, str(where))
    return where


@dataclass
class Node:
    """One node: its state dir, its store (which knows its node id) and its service."""

    node: str
    store: Store
    service: Service

    def add(self, path: Path, name: str | None = None, **settings: int) -> str:
        return self.service.repos.add(RepoCreate(path=str(path), name=name, **settings)).name


@pytest.fixture
def nodes(migrated_db_url: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """Two nodes on one database, as two machines' daemons would be."""
    made = []
    for label in ("a", "b"):
        settings = Settings(
            state_dir=tmp_path / f"state-{label}", db_url=migrated_db_url, pool_size=0,
            watch_files=False,
        )  # fmt: skip
        settings.ensure_dirs()
        node = str(uuid.uuid4())
        store = Store(migrated_db_url, node=node)
        made.append(Node(node, store, Service(settings, store, Runner(settings, store))))
    yield made[0], made[1]
    for n in made:
        n.service.intake.close()
        n.store.close()

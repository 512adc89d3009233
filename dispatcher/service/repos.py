"""Repos: register (``dispatcher repo add``), change settings (``repo update``), list,
show and unregister.

A repo is the main checkout of a git repository outside the state dir. When
one comes or goes, its trigger file is loaded or forgotten, the event sources
(:class:`RepoListener`) arm or drop its watches and schedules, and the warm
pool fills or forgets its worktrees.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dispatcher.config import Settings
from dispatcher.errors import AlreadyExists, InvalidInput, NotFound
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.forge.remotes import clone_key
from dispatcher.git import meta, refs, worktrees
from dispatcher.git import remote as git_remote
from dispatcher.jobs.diskuse import DiskUse
from dispatcher.jobs.pool import WorktreePool
from dispatcher.store.database import AlreadyMade, Store
from dispatcher.store.models import (
    Clone,
    ClonePublic,
    IdempotencyKey,
    Job,
    Repo,
    RepoCreate,
    RepoPublic,
    RepoUpdate,
    start_of_day,
)
from triggers.webhooks.remotes import forge_name_of

log = logging.getLogger(__name__)

_REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RepoListener(Protocol):
    """Told when repos come and go (the event sources arm and drop their watches
    and schedules)."""

    def repo_added(self, repo: Repo) -> None: ...
    def repo_removed(self, repo: Repo) -> None: ...


@dataclass(eq=False)
class Repos:
    """Registered repos, as the API shows them (job counts, triggers, disk, cost)."""

    settings: Settings
    store: Store
    trigger_files: TriggerFiles
    pool: WorktreePool | None
    disk_use: DiskUse
    listener: RepoListener | None = None  # set by the daemon, once the sources exist
    on_limits_changed: Callable[[], None] | None = None  # the runner's wake (Service)

    def add(self, req: RepoCreate, *, idem: IdempotencyKey | None = None) -> RepoPublic:
        made = self.store.made_by(idem, "repo")
        if made is not None:  # the daemon stopped before it could answer: that answer
            return self._one_public(self.store.repo(made))
        raw = Path(req.path).expanduser()
        if not raw.is_absolute():
            raise InvalidInput(f"repo path must be absolute: {req.path!r}")
        try:
            exists = raw.exists()
        except (OSError, ValueError) as exc:  # too long, NUL bytes
            raise InvalidInput(f"invalid repo path: {exc}") from None
        if not exists:
            raise InvalidInput(f"path does not exist: {req.path}")
        top = refs.toplevel(raw)
        if refs.common_dir(top).resolve().parent != top.resolve():
            raise InvalidInput(f"{top} is a linked worktree; register its main checkout instead")
        state_dir = self.settings.state_dir.resolve()
        if top.resolve().is_relative_to(state_dir):
            raise InvalidInput(f"{top} is inside the dispatcher's state dir; register a repo")
        name = req.name or _default_name(top)
        if not _REPO_NAME_RE.match(name) or ".." in name:
            raise InvalidInput(
                f"invalid repo name {name!r}: use letters, digits, '.', '_' or '-' "
                "(64 characters at most, starting with a letter or digit)"
            )
        if self.store.find_repo(path=str(top)) is not None:
            raise AlreadyExists(f"{top} is already registered")
        forge_name = req.forge_name if req.forge_name is not None else _origin_forge_name(top)
        _check_hub(top, req.hub)
        try:
            # A clone of a repo another node registered (the same remote) joins it: this
            # node's clone of it, its name and settings (docs/cluster.md).
            repo = self.store.add_repo(
                Repo(
                    name=name,
                    path=str(top),
                    remote_key=remote_key(top, req.fetch_remote),
                    default_branch=refs.default_branch(top),
                    max_parallel=req.max_parallel,
                    forge_name=forge_name,
                    pool_size=req.pool_size,
                    daily_cost_usd=req.daily_cost_usd,
                    fetch=req.fetch,
                    fetch_remote=req.fetch_remote,
                    hub=req.hub,
                ),
                idem=idem,
                any_name=req.name is None,
            )
        except AlreadyMade as made_meanwhile:
            return self._one_public(self.store.repo(made_meanwhile.resource_id))
        if repo.hub and not req.hub:  # joined another node's repo: its hub, by name here
            try:
                _check_hub(top, repo.hub)
            except InvalidInput as exc:
                log.warning("repo %s: %s; its pushes to the hub fail until then", name, exc.message)
        self.trigger_files.load(repo)
        if self.listener is not None:
            self.listener.repo_added(repo)
        if self.pool is not None:
            self.pool.fill(repo)
        self.disk_use.touch(repo.name)
        return self.get(repo.name)

    def note_remotes(self) -> None:
        """Record the remote of each of this node's repos that has none recorded (those
        registered before migration 0022), so that other nodes' clones match it. At the
        daemon's start; a repo whose remote cannot be read stays as it is."""
        for repo in self.store.repos():
            if repo.remote_key is not None or repo.id is None:
                continue
            key = remote_key(Path(repo.path), repo.fetch_remote)
            if key is not None:
                self.store.update_repo(repo.id, remote_key=key)

    def update(self, name: str, req: RepoUpdate) -> RepoPublic:
        """Change the settings ``req`` holds (None: back to the default; fields left out
        stay); the repo, its jobs and events are kept. The next claim uses the new
        limits and the next job the new budget; the warm pool resizes now."""
        repo = self.store.repo_by_name(name)
        assert repo.id is not None
        fields = {key: getattr(req, key) for key in sorted(req.model_fields_set)}
        if "forge_name" in fields and fields["forge_name"] is None:
            fields["forge_name"] = _origin_forge_name(Path(repo.path))
        if fields.get("hub") is not None:
            _check_hub(Path(repo.path), str(fields["hub"]))
        if fields:
            repo = self.store.update_repo(repo.id, **fields)
            log.info("repo %s: settings changed: %s", repo.name, fields)
        if "pool_size" in fields and self.pool is not None:
            self.pool.resize(repo)
        if "max_parallel" in fields and self.on_limits_changed is not None:
            self.on_limits_changed()  # queued jobs it now allows are claimed at once
        return self._one_public(repo)

    def all(self) -> list[RepoPublic]:
        counts = self.store.job_counts()
        costs = self.store.costs_since(start_of_day())
        clones = self.store.clones()
        return [self._public(r, counts, costs, clones) for r in self.store.repos()]

    def get(self, name: str) -> RepoPublic:
        return self._one_public(self.store.repo_by_name(name))

    def remove(self, name: str) -> RepoPublic:
        """Unregister a repo: refused while it has active jobs; removes its jobs' worktrees.

        The jobs' branches stay in the repository, so no commit is lost.
        """
        repo = self.store.repo_by_name(name)
        assert repo.id is not None
        public = self._one_public(repo)
        # This node's clone; the repo too when no other node has one.
        self.store.remove_repo(repo.id, before_delete=self._remove_worktrees)
        self.trigger_files.forget(repo.id)
        if self.pool is not None:
            self.pool.forget(repo)
        if self.listener is not None:
            self.listener.repo_removed(repo)
        self.disk_use.touch(repo.name)
        return public

    def _remove_worktrees(self, repo: Repo, jobs: list[Job]) -> None:
        repo_path = Path(repo.path)
        for job in jobs:
            if job.worktree and (repo_path / ".git").exists():
                worktrees.remove(repo_path, Path(job.worktree))

    def _one_public(self, repo: Repo) -> RepoPublic:
        assert repo.id is not None
        counts = self.store.job_counts(repo.id)
        costs = self.store.costs_since(start_of_day(), repo.id)
        return self._public(repo, counts, costs, self.store.clones(repo.id))

    def _public(
        self,
        repo: Repo,
        counts: dict[int, dict[str, int]],
        costs: dict[int, float],
        clones: dict[int, list[Clone]],
    ) -> RepoPublic:
        """The repo as the API shows it; ``counts``, ``costs`` and ``clones``: per repo
        id, read for all the repos listed at once."""
        assert repo.id is not None
        public = RepoPublic.model_validate(repo)
        public.clones = [ClonePublic.model_validate(c) for c in clones.get(repo.id, [])]
        public.exists = (Path(repo.path) / ".git").exists()
        public.jobs = counts.get(repo.id, {})
        active = self.trigger_files.active(repo.id)
        public.triggers = [t.name for t in active.trigger_list()] if active else []
        figure = self.disk_use.figure(repo.name)  # measured in the background: never walked here
        if figure is not None:
            public.worktrees_bytes, public.worktrees_measured_at = figure.bytes, figure.measured_at
        public.cost_today_usd = round(costs.get(repo.id, 0.0), 6)
        return public


def _check_hub(top: Path, hub: str | None) -> None:
    """A repo's hub is one of its clone's remotes, by name: InvalidInput (one line) when
    the clone has none of that name."""
    if hub is None:
        return
    try:
        git_remote.require_remote(top, hub)
    except NotFound as exc:
        raise InvalidInput(
            f"hub {hub!r}: {top} {exc.message.removeprefix('the repo ')}; add it "
            f"(`git remote add {hub} URL`) or name one of those"
        ) from None


def remote_key(top: Path, fetch_remote: str | None) -> str | None:
    """The normalised URL of the clone's remote (``fetch_remote``, else origin) that
    clones on other nodes are matched by; None when it has no such remote."""
    url = meta.remote_url(top, fetch_remote or "origin")
    return clone_key(url, top) if url else None


def _origin_forge_name(top: Path) -> str | None:
    """The forge's ``owner/name`` that the repo's origin remote names, if any."""
    origin = meta.remote_url(top)
    return forge_name_of(origin) if origin else None


def _default_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-.") or "repo"
    return name[:64]

"""Which trigger file is active for each repo.

The file is read from the head of the repo's default branch (so uncommitted
or unpushed-to-main edits never fire), re-read when that branch moves, and
parsed with :mod:`triggers.config`. A broken file leaves the last good version
active; all its ``file:line: reason`` problems, one a line, are recorded on
the repo (``GET /repos/{name}``, ``GET /triggers``, ``dispatcher repo show``).
The last good text is kept in the database, so it stays active across daemon
restarts too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from dispatcher.errors import DispatcherError
from dispatcher.git import blobs
from dispatcher.store.database import Store
from dispatcher.store.models import Repo, utcnow
from triggers.config import TRIGGER_FILE, TriggerFile, TriggerFileError, parse

log = logging.getLogger(__name__)


class TriggerFiles:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._active: dict[int, TriggerFile] = {}
        self._lock = threading.Lock()

    def active(self, repo_id: int) -> TriggerFile | None:
        with self._lock:
            return self._active.get(repo_id)

    def any_notify(self) -> bool:
        """True if some active trigger file has ``notify:`` entries."""
        with self._lock:
            return any(f.notify for f in self._active.values())

    def forget(self, repo_id: int) -> None:
        with self._lock:
            self._active.pop(repo_id, None)

    def restore(self, repo: Repo) -> None:
        """Activate the last good file recorded for ``repo`` (at daemon start)."""
        assert repo.id is not None
        if not repo.triggers_text:
            return
        try:
            parsed = parse(repo.triggers_text, filename=_display(repo))
        except TriggerFileError as exc:  # the parser got stricter since it was stored
            log.warning("repo %s: stored trigger file no longer parses: %s", repo.name, exc)
            return
        with self._lock:
            self._active[repo.id] = parsed

    def load(self, repo: Repo) -> bool:
        """Re-read the file at the default branch head if it changed; True if it did."""
        assert repo.id is not None
        path = Path(repo.path)
        try:
            blob = blobs.blob_id(path, repo.default_branch, TRIGGER_FILE)
        except DispatcherError as exc:  # unborn or missing default branch, vanished repo
            log.warning("repo %s: cannot read %s: %s", repo.name, TRIGGER_FILE, exc.message)
            return False
        with self._lock:
            loaded = repo.id in self._active
        # Same blob as last read: nothing to do, whether it was good (and is
        # active) or broken (its error is recorded, the last good one active).
        if blob == repo.triggers_blob and (blob is None or loaded or repo.triggers_error):
            return False
        if blob is None:
            with self._lock:
                self._active.pop(repo.id, None)
            self.store.update_repo(
                repo.id, triggers_text=None, triggers_blob=None, triggers_error=None,
                triggers_loaded_at=utcnow(), triggers_max_parallel=None,
            )  # fmt: skip
            return True
        text = blobs.read_file(path, repo.default_branch, TRIGGER_FILE) or ""
        try:
            parsed = parse(text, filename=_display(repo))
        except TriggerFileError as exc:
            error = "\n".join(str(problem) for problem in exc.problems)  # every one, a line each
            log.warning("repo %s: %s is broken; keeping the last good one", repo.name, exc)
            self.store.update_repo(repo.id, triggers_blob=blob, triggers_error=error)
            if repo.id not in self._active:
                self.restore(repo)
            return True
        with self._lock:
            self._active[repo.id] = parsed
        self.store.update_repo(
            repo.id, triggers_text=text, triggers_blob=blob, triggers_error=None,
            triggers_loaded_at=utcnow(), triggers_max_parallel=parsed.max_parallel,
        )  # fmt: skip
        return True


def _display(repo: Repo) -> str:
    return f"{repo.name}:{TRIGGER_FILE}"

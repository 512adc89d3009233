"""One exception root for the whole daemon.

The API maps every :class:`DispatcherError` to a JSON body
``{"error": {"code": ..., "message": ..., "details": ...}}`` with ``status``;
the CLI prints ``message`` on one line and exits non-zero. Both do it in one
place (``dispatcher/api/app.py`` and ``dispatcher/cli/commands.py``).

Standard library only (checked by import-linter).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DispatcherError(Exception):
    """Root of every error the daemon reports to a user."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class NotFound(DispatcherError):
    """A repo, job or ref that does not exist."""

    code = "not_found"
    status = 404


class InvalidInput(DispatcherError):
    """A request or argument that is malformed or unsafe (bad path, hostile ref name)."""

    code = "invalid_input"
    status = 422


class AlreadyExists(DispatcherError):
    """Registering something that is already registered."""

    code = "already_exists"
    status = 409


class InvalidState(DispatcherError):
    """The action is not allowed in the job's current state (merge a running job)."""

    code = "invalid_state"
    status = 409


class MergeConflict(DispatcherError):
    """The merge would conflict; ``details["files"]`` lists the conflicting paths."""

    code = "merge_conflict"
    status = 409


class DirtyCheckout(DispatcherError):
    """The target branch is checked out with uncommitted changes; ``details["files"]``."""

    code = "dirty_checkout"
    status = 409


class RefMoved(DispatcherError):
    """A compare-and-swap ref update lost the race: the ref moved meanwhile."""

    code = "ref_moved"
    status = 409


class GitError(DispatcherError):
    """A git command failed unexpectedly; the message holds command, code and stderr."""

    code = "git_error"
    status = 500


class PushRejected(GitError):
    """The remote (or git, before talking to it) refused a push; nothing local changed."""

    code = "push_rejected"
    status = 409


class FetchFailed(GitError):
    """A fetch of a repo's remote failed (unreachable, refused, timed out); nothing changed."""

    code = "fetch_failed"
    status = 502


class ForgeError(DispatcherError):
    """A forge refused or failed an API request; the message names the forge and what to do."""

    code = "forge_error"
    status = 502


class NodeUnavailable(DispatcherError):
    """The node that holds a job (its worktree, branch, log or agent) is not running or
    does not answer (docs/cluster.md, "Job operations on any node")."""

    code = "node_unavailable"
    status = 503


class ProcessError(DispatcherError):
    """A subprocess could not be started or failed unexpectedly."""

    code = "process_error"
    status = 500


class IdempotencyKeyReused(DispatcherError):
    """An ``Idempotency-Key`` sent again with a different request."""

    code = "idempotency_key_reused"
    status = 422


class Unauthorized(DispatcherError):
    """Missing or wrong bearer token."""

    code = "unauthorized"
    status = 401


class Forbidden(DispatcherError):
    """A valid credential asking for what its scope does not allow (a job token)."""

    code = "forbidden"
    status = 403


class DaemonUnavailable(DispatcherError):
    """The CLI could not reach the daemon."""

    code = "daemon_unavailable"
    status = 503


class Busy(DispatcherError):
    """The daemon has as many of these requests in hand as it takes at once: try later."""

    code = "busy"
    status = 503


class BudgetExceeded(DispatcherError):
    """A cost budget would be (or was) exceeded."""

    code = "budget_exceeded"
    status = 409

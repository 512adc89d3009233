"""Job tokens: the credential each agent run gets for the daemon's MCP server.

A job token is ``dj1.<job id>.<mac>``, the mac an HMAC-SHA256 over the job id and the run's
``spawn_nonce`` (a fresh value for every spawn, stored on the job), keyed by a key derived from
the daemon's own API token. Nothing about tokens is stored: a token is valid exactly while its
job is running with the nonce it was minted for, so it is revoked the moment the run ends (or is
re-spawned after a lost run), survives a daemon restart with the agent re-adopted, and a new
daemon token revokes every job token at once. The key never leaves the daemon; the mac reveals
nothing of the daemon token.

This module only mints and checks the mac; whether the job is running, and what it may do, is
decided by the caller that holds the store (the MCP face's principal resolver).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "dj1"
_CONTEXT = b"worktree-dispatcher job token v1"


class JobTokens:
    """Mints and checks job tokens under one daemon token."""

    def __init__(self, daemon_token: str) -> None:
        self._key = hmac.new(daemon_token.encode(), _CONTEXT, hashlib.sha256).digest()

    def _mac(self, job_id: int, nonce: str) -> str:
        digest = hmac.new(self._key, f"{job_id}:{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def mint(self, job_id: int, nonce: str) -> str:
        """The token of one run of a job (``nonce`` is the job's ``spawn_nonce``)."""
        return f"{PREFIX}.{job_id}.{self._mac(job_id, nonce)}"

    @staticmethod
    def claimed_job(token: str) -> int | None:
        """The job id a token claims to be for, or None when it is not shaped like a job
        token at all (so it can be told apart from the daemon token). Not a check: follow it
        with :meth:`matches` against the job's current nonce."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isdigit() or len(parts[1]) > 18:
            return None
        return int(parts[1])

    def matches(self, token: str, job_id: int, nonce: str | None) -> bool:
        """Whether ``token`` is the token of this job's run with this nonce (constant time)."""
        if nonce is None:
            return False
        return hmac.compare_digest(token.encode(), self.mint(job_id, nonce).encode())

"""``Idempotency-Key`` bookkeeping: a request's key, its stored answer, and when it expires.

The :class:`~dispatcher.api.middleware.Idempotency` middleware asks for the key of a
creating ``POST``, replays the answer stored under it, or stores the new one; the
use-case stores its key with what it creates (:class:`~dispatcher.store.database.AlreadyMade`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from dispatcher.store.database import Store
from dispatcher.store.models import IdempotencyKey, IdempotentRequest, utcnow


@dataclass(eq=False)
class Idempotency:
    """The keys and stored answers of the API's creating requests."""

    store: Store
    hours: float  # how long a stored answer is kept

    def key(self, key: str, method: str, path: str, request_hash: str) -> IdempotencyKey:
        """A request's key, with when its stored answers expire from now."""
        ttl = timedelta(hours=self.hours)
        return IdempotencyKey(key, method, path, request_hash, not_before=utcnow() - ttl)

    def get(self, idem: IdempotencyKey) -> IdempotentRequest | None:
        """The key's row unless it expired: its request's hash, and its answer once stored."""
        return self.store.idempotent_get(idem)

    def answer(self, idem: IdempotencyKey, status: int, body: bytes, content_type: str) -> None:
        """Store the answer to replay under the key (the first answer wins)."""
        self.store.idempotent_answer(idem, status, body, content_type)

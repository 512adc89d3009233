"""Forge deliveries into the intake: verify the signature, normalize, route to repos, ingest.

A delivery about a job's pull request (merged, closed, CI failed, a review, a fix
command: :mod:`triggers.webhooks.prfacts`) also goes to the fix loop
(:attr:`Webhooks.on_pr_fact`), even one no trigger event is made of.

Nothing is stored unless the signature (GitHub: X-Hub-Signature-256; GitLab:
X-Gitlab-Token) verifies with the secret from the settings (a per-repo override
from ``webhook_secrets`` first). One forge repo registered twice (two clones)
gives each its own event. The forges' formats are :mod:`triggers.webhooks`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dispatcher.config import Settings
from dispatcher.errors import InvalidInput, Unauthorized
from dispatcher.events.intake import Intake
from dispatcher.store.database import Store
from dispatcher.store.models import IngestResult, Repo
from triggers.webhooks import github, gitlab, prfacts
from triggers.webhooks.prfacts import PrFact

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Webhooks:
    """One forge delivery in: verified, normalized, ingested once per repo it names."""

    settings: Settings
    store: Store
    intake: Intake
    # A delivery's news about a pull request, for a job's fix loop (set by the service to
    # FixLoop.receive: the fact, the repo, the delivery's key); a line for the answer.
    on_pr_fact: Callable[[PrFact, Repo, str], str | None] | None = None

    def receive(self, forge: str, headers: Mapping[str, str], body: bytes) -> IngestResult:
        """Verify a ``github`` or ``gitlab`` delivery over its raw body, then ingest it."""
        module = github if forge == "github" else gitlab
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # checked below, after the
            payload = None  # signature: an unverified body is never trusted or stored
        forge_repo = module.forge_repo(payload) if isinstance(payload, dict) else None
        repos = self.store.repos_by_forge_name(forge_repo) if forge_repo else []
        default = (
            self.settings.github_webhook_secret
            if forge == "github"
            else self.settings.gitlab_webhook_token
        )
        secrets = [self.settings.webhook_secrets.get(r.name) for r in repos]
        candidates = [x for x in [*secrets, default] if x]
        if not candidates:
            raise Unauthorized(f"no {forge} webhook secret is configured; the delivery is refused")
        if forge == "github":
            ok = any(github.verify(body, headers, secret) for secret in candidates)
        else:
            ok = any(gitlab.verify(headers, secret) for secret in candidates)
        if not ok:
            raise Unauthorized(f"bad or missing {forge} webhook signature")
        if not isinstance(payload, dict):
            raise InvalidInput("webhook body is not a JSON object")
        name = module.event_name(headers)
        if not name:
            raise InvalidInput(f"missing {forge} event header")
        delivery = module.delivery_id(headers) or hashlib.sha256(body).hexdigest()
        if forge == "github":
            event = github.normalize(name, delivery, payload, source=github.source_of(headers))
        else:
            event = gitlab.normalize(name, delivery, payload)
        fact = (
            prfacts.from_github(name, payload, source=github.source_of(headers))
            if forge == "github"
            else prfacts.from_gitlab(name, payload)
        )
        if fact is not None and self.on_pr_fact is None:
            fact = None
        if event is None and fact is None:
            log.info("webhook: ignored %s event %r", forge, name)
            return IngestResult(event_id=None, ignored=f"{forge} event {name!r} is not handled")
        if not repos:
            log.info("webhook: no registered repo for %r", forge_repo)
            if event is not None:
                self.intake.dropped(event, "no_repo")
            return IngestResult(event_id=None, ignored=f"no registered repo for {forge_repo!r}")
        result = IngestResult(event_id=None)
        key = github.dedup_key(forge if forge == "gitlab" else github.source_of(headers), delivery)
        for repo in repos:  # two clones of one forge repo: each gets its own event
            if event is not None:
                keyed = event.model_copy(update={"dedup_key": f"{event.dedup_key}:{repo.name}"})
                one = self.intake.ingest(keyed, repo)
                result.event_id = result.event_id or one.event_id
                result.duplicate = one.duplicate
                result.matched += one.matched
                result.jobs += one.jobs
                result.pending_checks += one.pending_checks
                result.notes += one.notes
            if fact is not None and self.on_pr_fact is not None:
                # Even for a redelivered event: the action is keyed by the delivery too,
                # so a crash between the event and the action loses neither.
                note = self.on_pr_fact(fact, repo, f"{key}:{repo.name}")
                if note:
                    result.notes.append(note)
        if event is None and not result.notes:  # stored nowhere: as if not handled
            result.ignored = f"{forge} event {name!r} is about no job's pull request"
        return result

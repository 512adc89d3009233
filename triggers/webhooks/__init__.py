"""Forge webhooks: verify a delivery, then normalize it into an Event.

- :mod:`~triggers.webhooks.github`: GitHub, Gitea and Forgejo
  (``X-Hub-Signature-256``, ``X-GitHub-Delivery``, ``X-GitHub-Event``).
- :mod:`~triggers.webhooks.gitlab`: GitLab (``X-Gitlab-Token``), mapped to the
  GitHub shape so one trigger file serves both forges.
- :mod:`~triggers.webhooks.remotes`: which registered repo a delivery is for.

Everything here is pure: no I/O, no store, no runner. The HTTP routes call it.
"""

from __future__ import annotations

from triggers.webhooks import github, gitlab
from triggers.webhooks.remotes import forge_name_of, same_repo

__all__ = ["forge_name_of", "github", "gitlab", "same_repo"]

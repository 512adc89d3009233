"""What a job's branch is called: ``dispatcher/<id>-<slug>``."""

from __future__ import annotations

import re

_SLUG_RE = re.compile(r"[^a-z0-9]+")


def branch_name(job_id: int, text: str) -> str:
    """``dispatcher/<id>-<slug>``: the slug is made of [a-z0-9-] only, whatever the text."""
    slug = _SLUG_RE.sub("-", text.lower()).strip("-")[:40].strip("-") or "job"
    return f"dispatcher/{job_id}-{slug}"

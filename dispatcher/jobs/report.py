"""What a job's agent reported about itself: summary, cost, tokens, turns, session, error.

Parsed from the job's log in the format its profile names
(:mod:`dispatcher.agents.output`); the summary an agent wrote to its own file
(Codex's ``-o``) wins over the one in its log.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from dispatcher.agents import output
from dispatcher.config import Settings
from dispatcher.jobs.files import job_files
from dispatcher.store.models import Job

log = logging.getLogger(__name__)


def agent_report(settings: Settings, job: Job, kind: str) -> dict[str, Any]:
    """The job's fields the agent's report fills, parsed from its log in the format
    ``kind`` ("text": none); ``agent_error`` is set when it reported a failure."""
    assert job.id is not None
    files = job_files(settings, job.id)
    try:
        report = output.parse_log(kind, files.log)
        # Printed once at the start: in the head of a long log, or kept before a rotation.
        session = report.session_id or output.session_in_head(kind, files.log)
    except OSError as exc:  # an unreadable log costs the report, never the job's outcome
        log.warning("job %s: cannot read its log for the agent's report: %s", job.id, exc)
        report, session = output.EMPTY_REPORT, None
    session = session or job.session_id
    summary = report.summary
    with contextlib.suppress(OSError, UnicodeDecodeError):
        written = files.summary.read_text(encoding="utf-8").strip()
        summary = written[: output.SUMMARY_MAX] or summary  # the agent's own file
    fields: dict[str, Any] = {
        "summary": summary,
        "cost_usd": report.cost_usd,
        "input_tokens": report.input_tokens,
        "output_tokens": report.output_tokens,
        "turns": report.turns,
        "session_id": session or None,
    }
    if report.is_error:
        fields["agent_error"] = report.error or "no reason given"
    return fields

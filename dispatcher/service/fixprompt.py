"""The prompt of a fix follow-up: what failed or what was asked, quoted as data.

Pure. Everything the forge sent (a check's output, a review, a comment) is quoted
line by line (``> ``) under a line that says it is the forge's text, never an
instruction of the daemon's; it reaches the agent only in its prompt file or stdin,
never a shell or an argv of the daemon's making.
"""

from __future__ import annotations

from triggers.webhooks.prfacts import PrFact, ReviewComment

MAX_COMMENTS = 50
MAX_NAME = 200  # characters of a check's or pipeline's name in the instruction line


def quoted(text: str) -> str:
    """``text`` as a Markdown quote, one ``> `` a line."""
    return "\n".join(f"> {line}" if line else ">" for line in text.strip().splitlines())


def inline(text: str) -> str:
    """``text`` for a line of the prompt's own: one line, at most MAX_NAME characters, no
    double quote (it goes between two)."""
    one = " ".join(text.split()).replace('"', "'")
    return one if len(one) <= MAX_NAME else one[:MAX_NAME] + "…"


def command_text(fact: PrFact, command: str) -> str | None:
    """What a comment asks after the fix command, or None if it does not start with it."""
    body = fact.text.lstrip()
    if not body.lower().startswith(command.lower()):
        return None
    rest = body[len(command) :]
    if rest and not rest[0].isspace():
        return None  # "/dispatcher fixup" is not "/dispatcher fix"
    return rest.strip()


def prompt_for(
    fact: PrFact,
    *,
    branch: str,
    command: str,
    comments: tuple[ReviewComment, ...] = (),
) -> str:
    """The follow-up's prompt for ``fact`` (a fix fact) on ``branch``."""
    pr = f"pull request #{fact.number}" if fact.number is not None else "the pull request"
    at = f" (commit {fact.head_sha[:12]})" if fact.head_sha else ""
    parts: list[str] = []
    if fact.kind == "ci_failed":
        parts.append(
            f'The CI check "{inline(fact.name or "CI")}" failed on this branch, {branch}{at}, '
            f"of {pr}. Find the cause and fix it here; commit the fix."
        )
        if fact.text:
            parts.append("What the forge reported about the failure (its text, quoted):")
            parts.append(quoted(fact.text))
        if fact.url:
            parts.append(f"Details: {fact.url}")
    elif fact.kind == "changes_requested":
        parts.append(
            f"{fact.author or 'A reviewer'} requested changes on {pr} (this branch, "
            f"{branch}). Make the changes asked for here; commit them."
        )
        if fact.text:
            parts.append("The review (the reviewer's text, quoted):")
            parts.append(quoted(fact.text))
    else:
        asked = command_text(fact, command) or ""
        parts.append(
            f"{fact.author or 'Someone'} asked for a fix on {pr} (this branch, {branch}). "
            "Do what the comment asks here; commit it."
        )
        if asked:
            parts.append("The comment (its author's text, quoted):")
            parts.append(quoted(asked))
    notes = [*fact.comments, *comments][:MAX_COMMENTS]
    if notes:
        parts.append("Comments on the code (quoted):")
        for note in notes:
            where = f"{note.path}:{note.line}" if note.line is not None else note.path
            parts.append(f"- {where}\n{quoted(note.body)}")
    return "\n\n".join(parts)

"""The repo's conventions for agents: ``AGENTS.md`` and ``.dispatcher/skills/*.md``.

Both are read at the job's base commit (so uncommitted edits in your checkout
don't leak in, and a sparse worktree gets them too). A skill file may start
with YAML front matter::

    ---
    description: How we write database migrations
    ---
    Body: the instructions themselves.

What an agent receives (:func:`render`), as one text:

1. ``AGENTS.md``, unless the agent reads it itself (Codex does);
2. an index of every skill: name, description and path in the worktree, so
   the agent can open one when it is relevant;
3. the full text of the skills the job selected (``skills:`` of a trigger,
   ``"skills"`` of ``POST /jobs``).

The runner passes that text with the agent's system-prompt flag where the
profile has one (Claude Code: ``--append-system-prompt``), else puts it in
front of the prompt in the prompt file. Nothing is sent when there is nothing,
and a one-off ``--command`` job gets its prompt verbatim unless it selected
skills.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from dispatcher.errors import InvalidInput
from dispatcher.git import blobs, names

AGENTS_MD = "AGENTS.md"
SKILLS_DIR = ".dispatcher/skills"
MAX_SYSTEM_PROMPT = 64 * 1024  # bigger conventions go into the prompt file (argv limits)


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    path: str
    body: str


@dataclass(frozen=True)
class Conventions:
    agents_md: str | None = None
    skills: dict[str, Skill] = field(default_factory=dict)


def parse_skill(name: str, text: str) -> Skill:
    """A skill from its file text; the description is the front matter's, else the
    body's first non-empty line. Broken front matter is kept as body text."""
    body, meta = text, {}
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            try:
                loaded = YAML(typ="safe", pure=True).load(text[4:end])
            except YAMLError:
                loaded = None
            if isinstance(loaded, dict):
                meta = loaded
                body = text[end + 4 :].lstrip("-").lstrip("\n")
    description = meta.get("description")
    if not isinstance(description, str) or not description.strip():
        description = next((ln.strip("# ").strip() for ln in body.splitlines() if ln.strip()), "")
    return Skill(name, " ".join(description.split())[:300], f"{SKILLS_DIR}/{name}.md", body)


def load(repo: Path, rev: str) -> Conventions:
    """The conventions committed at ``rev`` (a commit's are cached: they never change)."""
    if names.is_full_sha(rev):
        return _load_commit(os.path.realpath(repo), rev)
    return _read(repo, rev)


@functools.lru_cache(maxsize=256)
def _load_commit(repo: str, sha: str) -> Conventions:
    return _read(Path(repo), sha)


def _read(repo: Path, rev: str) -> Conventions:
    files = blobs.read_blobs(repo, rev, [AGENTS_MD, f"{SKILLS_DIR}/"])
    skills: dict[str, Skill] = {}
    for path, text in sorted(files.items()):
        name = path.removeprefix(f"{SKILLS_DIR}/")
        if path.startswith(f"{SKILLS_DIR}/") and name.endswith(".md") and "/" not in name:
            skills[name.removesuffix(".md")] = parse_skill(name.removesuffix(".md"), text)
    return Conventions(files.get(AGENTS_MD), skills)


def check_selected(conv: Conventions, selected: list[str]) -> None:
    """InvalidInput naming the unknown skills and the known ones."""
    unknown = [name for name in selected if name not in conv.skills]
    if unknown:
        known = ", ".join(conv.skills) or "none"
        raise InvalidInput(
            f"unknown skill {', '.join(map(repr, unknown))}: the repo's {SKILLS_DIR}/ has {known}"
        )


def render(conv: Conventions, selected: list[str], *, include_agents_md: bool) -> str:
    """The conventions text for one job ("" when there is nothing to say)."""
    parts: list[str] = []
    if include_agents_md and conv.agents_md and conv.agents_md.strip():
        parts.append(f"# Repository conventions ({AGENTS_MD})\n\n{conv.agents_md.strip()}")
    if conv.skills:
        index = "\n".join(
            f"- {s.name}: {s.description} (file: {s.path})" for s in conv.skills.values()
        )
        parts.append(
            "# Skills\n\nThe repository documents these procedures; read a skill's file "
            f"when it applies to your task.\n\n{index}"
        )
    for name in selected:
        skill = conv.skills[name]
        parts.append(f"# Skill: {skill.name}\n\n{skill.body.strip()}")
    return "\n\n".join(parts)

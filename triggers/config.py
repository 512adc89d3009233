"""The trigger file ``.dispatcher/triggers.yml``: model, parser, JSON Schema.

The file is GitHub-Actions-like YAML read with a YAML 1.2 loader (ruamel.yaml
round-trip), so ``on:`` stays the string ``"on"`` and ``yes``/``no`` stay
strings. Every problem is reported as ``file:line: message`` (:class:`Problem`)
with the line of the offending key or value: YAML syntax errors (``file:line:col``
of where the unclosed bracket or quote opened, and where the parser gave up) and
duplicate keys from the loader, structural errors from pydantic (their ``loc``
mapped back to the YAML node), and template problems (:mod:`triggers.template`).
All of a file's problems are found in one pass (see :func:`_validate_all`); only
a syntax error hides the rest.

Templates in ``prompt``, ``base`` and ``concurrency.group`` are checked here; a
``prompt-file``'s contents are not in the trigger file, so they are checked
when the daemon renders them (:meth:`Trigger.render_prompt`).

The reference for users is ``docs/triggers.md``.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, StreamMark, StringMark, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from dispatcher.errors import InvalidInput
from dispatcher.paths import repo_subpath
from triggers import template
from triggers.events import KINDS, EventKind
from triggers.schedule import parse_cron

TRIGGER_FILE: Final = ".dispatcher/triggers.yml"
"""Where the trigger file lives in a repo (read from the default branch head)."""

TRIGGER_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

ISSUES_TYPES: Final = frozenset(
    {
        "opened",
        "edited",
        "deleted",
        "transferred",
        "pinned",
        "unpinned",
        "closed",
        "reopened",
        "assigned",
        "unassigned",
        "labeled",
        "unlabeled",
        "locked",
        "unlocked",
        "milestoned",
        "demilestoned",
    }
)
ISSUE_COMMENT_TYPES: Final = frozenset({"created", "edited", "deleted"})
PULL_REQUEST_TYPES: Final = frozenset(
    {
        "assigned",
        "unassigned",
        "labeled",
        "unlabeled",
        "opened",
        "edited",
        "closed",
        "reopened",
        "synchronize",
        "converted_to_draft",
        "ready_for_review",
        "locked",
        "unlocked",
        "review_requested",
        "review_request_removed",
        "auto_merge_enabled",
        "auto_merge_disabled",
        "milestoned",
        "demilestoned",
        "enqueued",
        "dequeued",
    }
)
PULL_REQUEST_DEFAULT_TYPES: Final = ("opened", "synchronize", "reopened")
WORKFLOW_RUN_TYPES: Final = frozenset({"requested", "in_progress", "completed"})
CHECK_RUN_TYPES: Final = frozenset({"created", "rerequested", "completed", "requested_action"})
CONCLUSIONS: Final = frozenset(
    {
        "success",
        "failure",
        "neutral",
        "cancelled",
        "skipped",
        "timed_out",
        "action_required",
        "stale",
        "startup_failure",
    }
)

Path = tuple[str | int, ...]


def _dash(name: str) -> str:
    return name.replace("_", "-")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=_dash,
        use_attribute_docstrings=True,
        defer_build=True,
    )


def _at(key: Any, message: str) -> PydanticCustomError:
    """An error about ``key`` of the model being validated (reported at its line)."""
    return PydanticCustomError("trigger_file", "{message}", {"message": message, "at": (key,)})


Found = list[tuple[Path, str]]
"""Problems found by a check of raw input: (path below the value checked, message)."""


def _found_error(found: Found) -> PydanticCustomError:
    message = "; ".join(message for _, message in found)
    return PydanticCustomError("trigger_file", "{message}", {"message": message, "problems": found})


def _validate_all(data: Any, handler: ValidatorFunctionWrapHandler, found: Found) -> Any:
    """``handler(data)``, failing with its own errors *and* ``found`` (checks of raw ``data``).

    Pydantic skips a model's after-validators once one of its fields fails, so a
    check across fields (both keys of a pair, templates that depend on ``on:``)
    would show only after every field error is fixed. Such checks read the raw
    input instead and are reported here beside the fields' errors, in one pass.
    """
    try:
        validated = handler(data)
    except ValidationError as exc:
        if not found:
            raise
        details: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError(
                    error["type"], "{message}", {**error.get("ctx", {}), "message": error["msg"]}
                ),
                "loc": error["loc"],
                "input": error["input"],
            }
            for error in exc.errors(include_url=False)
        ]
        details.append({"type": _found_error(found), "loc": (), "input": data})
        raise ValidationError.from_exception_data(exc.title, details) from None
    if found:
        raise _found_error(found)
    return validated


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[
    list[str],
    BeforeValidator(_one_or_many, json_schema_input_type=str | list[str]),
    Field(min_length=1),
]
"""A non-empty list of strings; a single string is a list of one."""


def _known(value: list[str] | None, allowed: frozenset[str], what: str) -> list[str] | None:
    for item in value or []:
        if item not in allowed:
            raise ValueError(f"unknown {what} '{item}' (use {', '.join(sorted(allowed))})")
    return value


# --- `on:` filters -------------------------------------------------------------------------


class _Filter(_Model):
    ACTIONS: ClassVar[frozenset[str]] = frozenset()
    EXCLUSIVE: ClassVar[tuple[tuple[str, str], ...]] = ()

    @field_validator("types", check_fields=False)
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        return _known(value, cls.ACTIONS, "type")

    @field_validator("conclusions", check_fields=False)
    @classmethod
    def _known_conclusions(cls, value: list[str] | None) -> list[str] | None:
        return _known(value, CONCLUSIONS, "conclusion")

    @model_validator(mode="wrap")
    @classmethod
    def _not_both(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        found: Found = []
        for first, second in cls.EXCLUSIVE if isinstance(data, dict) else ():
            if data.get(_dash(first)) is not None and data.get(_dash(second)) is not None:
                found.append(((_dash(second),), f"use {_dash(first)} or {_dash(second)}, not both"))
        return _validate_all(data, handler, found)


class IssuesFilter(_Filter):
    ACTIONS = ISSUES_TYPES

    types: StrList | None = None
    """Actions that fire (opened, labeled, closed, ...); unset: any action."""
    labels: StrList | None = None
    """The issue has one of these labels (for `labeled`: the label just added is one)."""
    authors: StrList | None = None
    """Only events caused by one of these logins (case-insensitive)."""


class IssueCommentFilter(_Filter):
    ACTIONS = ISSUE_COMMENT_TYPES

    types: StrList | None = None
    """Actions that fire (created, edited, deleted); unset: any action."""
    contains: StrList | None = None
    """The comment contains one of these strings (case-insensitive)."""
    labels: StrList | None = None
    """The commented issue or pull request has one of these labels."""
    authors: StrList | None = None
    """Only comments by one of these logins (case-insensitive)."""


class PullRequestFilter(_Filter):
    ACTIONS = PULL_REQUEST_TYPES
    EXCLUSIVE = (("branches", "branches_ignore"), ("paths", "paths_ignore"))

    types: StrList = Field(default_factory=lambda: list(PULL_REQUEST_DEFAULT_TYPES))
    """Actions that fire; default opened, synchronize, reopened (as on GitHub)."""
    branches: StrList | None = None
    """Globs for the pull request's base branch (the branch it merges into)."""
    branches_ignore: StrList | None = None
    """Globs for base branches that never fire."""
    paths: StrList | None = None
    """At least one changed path matches one of these globs."""
    paths_ignore: StrList | None = None
    """Fire unless every changed path matches one of these globs."""
    labels: StrList | None = None
    """The pull request has one of these labels (for `labeled`: the one just added)."""
    authors: StrList | None = None
    """Only events caused by one of these logins (case-insensitive)."""


class PushFilter(_Filter):
    EXCLUSIVE = (("branches", "branches_ignore"), ("paths", "paths_ignore"))

    branches: StrList | None = None
    """Globs for the pushed branch."""
    branches_ignore: StrList | None = None
    """Globs for pushed branches that never fire."""
    paths: StrList | None = None
    """At least one changed path matches one of these globs."""
    paths_ignore: StrList | None = None
    """Fire unless every changed path matches one of these globs."""
    authors: StrList | None = None
    """Only pushes by one of these logins (case-insensitive)."""


class WorkflowRunFilter(_Filter):
    ACTIONS = WORKFLOW_RUN_TYPES
    EXCLUSIVE = (("branches", "branches_ignore"),)

    types: StrList | None = None
    """Actions that fire (requested, in_progress, completed); unset: any action."""
    workflows: StrList | None = None
    """Names of the workflows (GitLab: pipelines) that fire."""
    branches: StrList | None = None
    """Globs for the run's head branch."""
    branches_ignore: StrList | None = None
    """Globs for head branches that never fire."""
    conclusions: StrList | None = None
    """Conclusions that fire (success, failure, cancelled, ...)."""


class CheckRunFilter(_Filter):
    ACTIONS = CHECK_RUN_TYPES

    types: StrList | None = None
    """Actions that fire (created, rerequested, completed, requested_action)."""
    names: StrList | None = None
    """Names of the check runs that fire."""
    conclusions: StrList | None = None
    """Conclusions that fire (success, failure, cancelled, ...)."""


class FileChangeFilter(_Filter):
    paths: StrList
    """Globs (relative to the repo root) of working-copy files to watch. Required."""
    paths_ignore: StrList | None = None
    """Changes only to files matching these globs never fire."""
    DEFAULT_DEBOUNCE: ClassVar[float] = 2.0

    debounce_seconds: float = Field(default=DEFAULT_DEBOUNCE, gt=0)
    """Quiet time after the last change before one event fires."""


class ManualFilter(_Filter):
    """`dispatcher run` / `POST /events` with kind manual; no filters."""


class Cron(_Model):
    cron: str
    """A crontab line `minute hour day month weekday`, in UTC."""

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        value = " ".join(value.split())
        try:
            parse_cron(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return value


def _on_mapping(value: Any) -> Any:
    """`on: push` and `on: [push, issues]` mean `on: {push: , issues: }`."""
    if isinstance(value, str):
        return {value: None}
    if isinstance(value, list) and all(isinstance(kind, str) for kind in value):
        return dict.fromkeys(value)
    return value


def _validate_on(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Every unknown kind is reported, and the known kinds' filters are still checked."""
    value = _on_mapping(value)
    if not isinstance(value, dict):
        return handler(value)
    if not value:
        raise PydanticCustomError("trigger_file", "needs at least one event kind")
    known: dict[Any, Any] = {}
    found: Found = []
    for kind, spec in value.items():
        if kind not in KINDS:
            found.append(((kind,), f"unknown event kind '{kind}' (use {', '.join(KINDS)})"))
        elif spec is None and kind == "schedule":
            found.append(((kind,), 'needs a list of {cron: "m h dom mon dow"}'))
        else:
            known[kind] = {} if spec is None else spec
    return _validate_all(known, handler, found)


class On(_Model):
    """Which events fire the trigger: event kind -> filters (null: no filters)."""

    model_config = ConfigDict(alias_generator=None)  # kinds keep their underscores

    issues: IssuesFilter | None = None
    issue_comment: IssueCommentFilter | None = None
    pull_request: PullRequestFilter | None = None
    push: PushFilter | None = None
    workflow_run: WorkflowRunFilter | None = None
    check_run: CheckRunFilter | None = None
    schedule: Annotated[list[Cron], Field(min_length=1)] | None = None
    file_change: FileChangeFilter | None = None
    manual: ManualFilter | None = None


OnField = Annotated[
    On,
    WrapValidator(_validate_on, json_schema_input_type=EventKind | list[EventKind] | On),
]


# --- triggers -----------------------------------------------------------------------------


class Concurrency(_Model):
    group: str = Field(min_length=1)
    """Jobs in the same group (a template) run one at a time."""
    cancel_in_progress: bool = False
    """A new job in the group cancels the running or queued one."""


def _normalize_concurrency(value: Any) -> Any:
    return {"group": value} if isinstance(value, str) else value


ConcurrencyField = Annotated[
    Concurrency,
    BeforeValidator(_normalize_concurrency, json_schema_input_type=str | Concurrency),
]


RepoPath = Annotated[str, Field(min_length=1), AfterValidator(repo_subpath)]
"""A path of the repo's files (sparse, copy, link): see :func:`dispatcher.paths.repo_subpath`."""


class PullRequestOnSuccess(_Model):
    """The pull (merge) request opened when a job succeeds with commits (docs/forge.md)."""

    draft: bool = False
    """Open it as a draft (GitLab: a "Draft:" title; Gitea: "WIP:")."""
    base: str | None = Field(default=None, min_length=1, max_length=255)
    """The branch it asks to merge into; default: the job's target branch."""
    labels: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=20
    )
    """Labels put on it."""


def _pr_options(value: Any) -> Any:
    """``pr: true`` is a pull request with the default options; ``pr: false`` none."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


class OnSuccess(_Model):
    """What the daemon does with a job that succeeded with commits (docs/forge.md). A
    failure here is recorded on the job (forge-error) and does not fail it. Credentials
    come from the daemon's settings, never from this file."""

    push: bool = False
    """Push the job's branch to the remote."""
    pr: Annotated[
        PullRequestOnSuccess | None,
        BeforeValidator(_pr_options, json_schema_input_type=bool | PullRequestOnSuccess),
    ] = None
    """Push, then open a pull request (true, or its options)."""
    remote: str = Field(default="origin", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
    """The repo's remote to push to."""

    def wanted(self) -> dict[str, Any] | None:
        """What the job records: {"push": true, "remote": ...} and the PR's options, or
        None when nothing is asked."""
        if self.pr is not None:
            return {"push": True, "remote": self.remote, "pr": self.pr.model_dump()}
        if self.push:
            return {"push": True, "remote": self.remote}
        return None


class Trigger(_Model):
    """One named rule: which events, then which agent with which prompt."""

    on: OnField
    """Event kinds and their filters: `push`, `[push, issues]` or `{kind: filters}`."""
    agent: str | None = Field(default=None, min_length=1)
    """Agent profile (built-in or from `agents:`); default: `defaults.agent`."""
    prompt: str | None = None
    """The prompt (a template). Exactly one of prompt and prompt-file."""
    prompt_file: str | None = None
    """Path in the repo of a prompt template (read at the event's commit)."""
    check: str | None = Field(default=None, min_length=1)
    """A command run in a worktree first; the agent runs only if it exits non-zero."""
    check_timeout_minutes: float = Field(default=10, gt=0)
    """How long the check may run before it is killed (counts as failed)."""
    base: str | None = Field(default=None, min_length=1)
    """The ref the job's branch starts from (a template); default: the event's commit."""
    branch: str | None = Field(default=None, min_length=1)
    """Another name for base."""
    concurrency: ConcurrencyField | None = None
    """A group name (template) or {group, cancel-in-progress}."""
    timeout_minutes: float | None = Field(default=None, gt=0)
    """Agent timeout; default: defaults.timeout-minutes, then the daemon's."""
    setup: str | None = Field(default=None, min_length=1)
    """A script or command run in the new worktree before the agent (overrides the file's)."""
    skills: list[str] = Field(default_factory=list)
    """Names of `.dispatcher/skills/*.md` given to the agent."""
    max_cost_usd: float | None = Field(default=None, gt=0)
    """Budget of each job of this trigger, in USD: passed to agents that take one
    (Claude's --max-budget-usd) and checked against the cost the agent reports."""
    sparse: list[RepoPath] = Field(default_factory=list)
    """Check out only these directories (plus top-level files) in the job's worktree:
    git's cone-mode sparse checkout, for huge repos. Such jobs skip the warm pool."""
    on_success: OnSuccess | None = None
    """Push the branch or open a pull request when a job succeeds with commits:
    `{push: true}` or `{pr: {draft: true, labels: [agent]}}` (default: defaults')."""
    max_fix_attempts: int | None = Field(default=None, ge=0, le=100)
    """Fix follow-ups a job's pull request gets for failed CI, changes requested and
    fix comments before the daemon gives up (default: defaults', then the daemon's 3;
    0: none)."""

    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        """The trigger's key under `triggers:`."""
        return self._name

    @field_validator("prompt_file")
    @classmethod
    def _inside_repo(cls, value: str | None) -> str | None:
        return None if value is None else repo_subpath(value)

    @field_validator("check")
    @classmethod
    def _no_templates_in_check(cls, value: str | None) -> str | None:
        if value is not None and "${{" in value:
            raise ValueError(
                "templates are not allowed in check: it is the repo's own command "
                "and never receives event text"
            )
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _consistent(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        found = _trigger_problems(data) if isinstance(data, dict) else []
        trigger: Trigger = _validate_all(data, handler, found)
        if trigger.branch is not None:
            trigger.base, trigger.branch = trigger.branch, None
        return trigger

    def kinds(self) -> set[str]:
        """The event kinds this trigger listens to."""
        return {kind for kind in KINDS if getattr(self.on, kind) is not None}

    def crons(self) -> list[str]:
        """The trigger's cron lines (UTC), normalized to single spaces."""
        return [entry.cron for entry in self.on.schedule or []]

    def file_change_debounce(self) -> float:
        """Seconds of quiet before a ``file_change`` event fires (2 when not set)."""
        on = self.on.file_change
        return on.debounce_seconds if on is not None else FileChangeFilter.DEFAULT_DEBOUNCE

    def render_prompt(
        self, context: Mapping[str, Any], *, prompt_file_text: str | None = None
    ) -> str:
        """The prompt for one event: ``prompt``, or the ``prompt-file``'s text given here.

        The file's text is checked like an inline prompt first (it was not
        available when the trigger file was parsed); raises ``TemplateError``.
        """
        if self.prompt is not None:
            return template.render(self.prompt, context)
        if prompt_file_text is None:
            raise template.TemplateError(f"trigger {self.name}: prompt-file text not given")
        problems = template.check_template(
            prompt_file_text, kinds=self.kinds(), has_check=self.check is not None
        )
        if problems:
            raise template.TemplateError(f"{self.prompt_file}: {'; '.join(problems)}")
        return template.render(prompt_file_text, context)

    def render_base(self, context: Mapping[str, Any]) -> str | None:
        """The rendered ``base`` ref, or None (start from the event's commit)."""
        return None if self.base is None else template.render(self.base, context)

    def concurrency_group(self, context: Mapping[str, Any]) -> str | None:
        """The rendered concurrency group, or None."""
        if self.concurrency is None:
            return None
        return template.render(self.concurrency.group, context)


def _trigger_problems(data: dict[Any, Any]) -> Found:
    """What a trigger's raw keys say together: prompt or prompt-file, base or branch, and
    the templates (checked against the event kinds of ``on:`` when those can be read)."""
    found: Found = []
    prompt, prompt_file = data.get("prompt"), data.get("prompt-file")
    if prompt is not None and prompt_file is not None:
        found.append((("prompt-file",), "give prompt or prompt-file, not both"))
    elif prompt is None and prompt_file is None:
        found.append(((), "needs prompt or prompt-file"))
    base_key = "base"
    if data.get("branch") is not None:
        if data.get("base") is not None:
            found.append((("branch",), "give base or branch, not both"))
        else:
            base_key = "branch"
    concurrency = data.get("concurrency")
    group = concurrency.get("group") if isinstance(concurrency, dict) else concurrency
    on = _on_mapping(data.get("on"))
    kinds = {kind for kind in on if kind in KINDS} if isinstance(on, dict) else set()
    templates = [
        (("prompt",), prompt),
        ((base_key,), data.get(base_key)),
        (("concurrency", "group"), group),
    ]
    for at, text in templates:
        if isinstance(text, str):
            problems = template.check_template(
                text, kinds=kinds, has_check=data.get("check") is not None
            )
            found.extend((at, problem) for problem in problems)
    return found


class Defaults(_Model):
    agent: str | None = Field(default=None, min_length=1)
    """Agent profile of triggers that name none."""
    timeout_minutes: float | None = Field(default=None, gt=0)
    """Agent timeout of triggers that set none."""
    on_success: OnSuccess | None = None
    """on-success of triggers that set none (push, pr)."""
    max_fix_attempts: int | None = Field(default=None, ge=0, le=100)
    """max-fix-attempts of triggers that set none."""


def _split_argv(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split '{value}': {exc}") from None
    return value


Argv = Annotated[
    list[str],
    BeforeValidator(_split_argv, json_schema_input_type=str | list[str]),
    Field(min_length=1),
]


class Notify(_Model):
    """Where to report jobs' states (see docs/notifications.md)."""

    type: Literal["ntfy", "slack", "webhook"]
    """The kind of endpoint."""
    url: str = Field(min_length=1)
    """Where to send the notification."""
    on: StrList = Field(default_factory=lambda: ["succeeded", "failed"])
    """Job states that notify."""
    secret: str | None = None
    """Webhook signing secret: `whsec_<base64>` or `env:NAME` (read from the daemon's
    environment; keep real secrets out of the repo)."""
    priority: str | None = None
    """ntfy priority (min, low, default, high, urgent or 1-5)."""
    tags: StrList = Field(default_factory=list)
    """ntfy tags (emoji short codes)."""


TriggerName = Annotated[str, StringConstraints(pattern=TRIGGER_NAME_PATTERN)]


def _not_dots(value: str) -> str:
    if value in (".", ".."):
        raise ValueError("must name a directory inside the repo, not '.' or '..'")
    return value


KeepDir = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._-]*$", description="A top-level directory name"),
    AfterValidator(_not_dots),
]


class TriggerFile(_Model):
    """The whole `.dispatcher/triggers.yml`."""

    version: Literal[1]
    """The file format version; only 1."""
    defaults: Defaults = Field(default_factory=Defaults)
    """Defaults for every trigger."""
    max_parallel: int | None = Field(default=None, ge=1)
    """At most this many of this repo's jobs run at once."""
    setup: str | None = Field(default=None, min_length=1)
    """A script or command run in each new worktree before the agent."""
    setup_timeout_minutes: float = Field(default=10, gt=0, le=24 * 60)
    """How long setup may run before it is killed (the job then fails at preparing)."""
    cleanup: str | None = Field(default=None, min_length=1)
    """A script or command run in a job's worktree before the worktree is removed."""
    copy_paths: list[RepoPath] = Field(default_factory=list, alias="copy")
    """Untracked files or directories copied from your checkout into each new worktree
    (`.env`). Never committed by the daemon."""
    link_paths: list[RepoPath] = Field(default_factory=list, alias="link")
    """Untracked files or directories symlinked from your checkout into each new
    worktree (`node_modules`). Never committed by the daemon."""
    agents: dict[str, Argv] = Field(default_factory=dict)
    """Extra or overridden agent profiles: name -> argv (list, or a string split like a shell)."""
    notify: list[Notify] = Field(default_factory=list)
    """Where to send job notifications (ntfy, Slack, signed webhooks)."""
    max_leftover_file_mb: float | None = Field(default=None, ge=0)
    """Files an agent leaves uncommitted larger than this (MiB) are not committed for it
    and fail the job (the daemon's DISPATCHER_MAX_LEFTOVER_FILE_MB otherwise; 0: no limit)."""
    fix_authors: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=500
    )
    """Forge logins whose reviews and fix comments start fix follow-ups on this repo's
    jobs' pull requests (besides the daemon's DISPATCHER_FIX_AUTHORS)."""
    hub: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
    """The repo's shared remote (a git remote of each clone, e.g. a bare hub repository):
    job branches, work in progress and merges are pushed there (docs/cluster.md). A
    repo's own `hub` setting wins; none: nothing is pushed."""
    keep: list[KeepDir] = Field(default_factory=list)
    """Top-level directories that survive when a warm worktree is recycled for the
    next job (dependency installs: node_modules, .venv). Everything else is reset."""
    triggers: dict[TriggerName, Trigger] = Field(default_factory=dict)
    """Named triggers, in file order. None is fine: a file may hold only the repo's
    settings (setup, copy, link, notify, agents) for jobs started by hand."""

    @model_validator(mode="after")
    def _name_triggers(self) -> TriggerFile:
        for name, trigger in self.triggers.items():
            trigger._name = name
        return self

    def trigger_list(self) -> list[Trigger]:
        """Every trigger in file order, each with its ``name``."""
        return list(self.triggers.values())

    def agent_for(self, trigger: Trigger) -> str | None:
        """The trigger's agent, else ``defaults.agent`` (None: the daemon's default)."""
        return trigger.agent or self.defaults.agent

    def timeout_minutes_for(self, trigger: Trigger) -> float | None:
        """The trigger's timeout, else ``defaults.timeout-minutes`` (None: the daemon's)."""
        if trigger.timeout_minutes is not None:
            return trigger.timeout_minutes
        return self.defaults.timeout_minutes

    def on_success_for(self, trigger: Trigger) -> dict[str, Any] | None:
        """What the trigger's jobs do when they succeed with commits (its on-success, else
        defaults'), as the job records it; None: nothing."""
        chosen = trigger.on_success or self.defaults.on_success
        return chosen.wanted() if chosen is not None else None

    def max_fix_attempts_for(self, trigger: Trigger | None) -> int | None:
        """The trigger's max-fix-attempts, else the defaults' (None: the daemon's)."""
        if trigger is not None and trigger.max_fix_attempts is not None:
            return trigger.max_fix_attempts
        return self.defaults.max_fix_attempts

    def setup_for(self, trigger: Trigger) -> str | None:
        """The trigger's setup, else the file's."""
        return trigger.setup or self.setup


# --- problems and parsing -----------------------------------------------------------------


class Problem(BaseModel):
    """One thing wrong with a trigger file, at a 1-based line (and column, if known)."""

    file: str
    line: int
    message: str
    column: int | None = None
    """1-based; set for YAML syntax errors, which point at a character."""

    def __str__(self) -> str:
        column = "" if self.column is None else f":{self.column}"
        return f"{self.file}:{self.line}{column}: {self.message}"


class TriggerFileError(InvalidInput):
    """A trigger file that is not valid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            "; ".join(str(p) for p in problems),
            details={"problems": [p.model_dump() for p in problems]},
        )
        self.problems = problems


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the trigger file, keys as written (dashed)."""
    schema = TriggerFile.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "worktree-dispatcher trigger file (.dispatcher/triggers.yml)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def check(text: str, *, filename: str = TRIGGER_FILE) -> list[Problem]:
    """Every problem in ``text`` (empty: the file is valid)."""
    try:
        parse(text, filename=filename)
    except TriggerFileError as exc:
        return exc.problems
    return []


def parse(text: str, *, filename: str = TRIGGER_FILE) -> TriggerFile:
    """Parse and validate a trigger file; raise :class:`TriggerFileError` with every problem.

    Every stage reports what it finds, whatever the others found: duplicate keys
    (the first value counts), then the schema, filters, crons and templates of
    every trigger. Only a YAML syntax error stops the rest (there is no tree).
    """
    data, lines, problems = _load(text, filename)
    try:
        parsed = TriggerFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc, lines, filename))
    if problems:
        raise TriggerFileError(sorted(problems, key=lambda p: p.line))
    return parsed


def _load(text: str, filename: str) -> tuple[Any, dict[Path, int], list[Problem]]:
    yaml = YAML(typ="rt")  # YAML 1.2
    yaml.allow_duplicate_keys = True  # reported by _duplicate_keys; the first value counts
    try:
        duplicates = [
            Problem(file=filename, line=line, message=message)
            for line, message in _duplicate_keys(YAML(typ="rt").compose(text), set())
        ]
        node = yaml.load(text)
    except MarkedYAMLError as exc:
        raise TriggerFileError([_syntax_problem(exc, filename)]) from None
    except YAMLError as exc:
        raise TriggerFileError([Problem(file=filename, line=1, message=f"YAML: {exc}")]) from None
    if node is None:
        message = "the file is empty (it needs at least `version: 1`)"
        raise TriggerFileError([Problem(file=filename, line=1, message=message)])
    if not isinstance(node, CommentedMap):
        message = f"expected a mapping with version and triggers, got {_yaml_type(node)}"
        raise TriggerFileError([Problem(file=filename, line=1, message=message)])
    lines: dict[Path, int] = {(): 1}
    return _plain(node, (), lines), lines, duplicates


def _duplicate_keys(node: Node | None, seen: set[int]) -> list[tuple[int, str]]:
    """(line, message) for every key given twice in one mapping of the composed tree."""
    if node is None or id(node) in seen:  # an alias repeats a node already walked
        return []
    seen.add(id(node))
    found: list[tuple[int, str]] = []
    if isinstance(node, MappingNode):
        first: dict[tuple[str, Any], int] = {}
        for key, value in node.value:
            ident = (str(key.tag), key.value)
            if isinstance(key, ScalarNode) and ident[0] != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if ident in first:
                    message = f"duplicate key '{key.value}' (first at line {first[ident]})"
                    found.append((line, message))
                else:
                    first[ident] = line
            found.extend(_duplicate_keys(value, seen))
    elif isinstance(node, SequenceNode):
        for item in node.value:
            found.extend(_duplicate_keys(item, seen))
    return found


_OPENED: Final = {
    "while parsing a flow sequence": "'[' opened here is never closed",
    "while parsing a flow mapping": "'{' opened here is never closed",
    "while parsing a block mapping": "in the mapping that starts here",
    "while parsing a block collection": "in the list that starts here",
}


def _syntax_problem(exc: MarkedYAMLError, filename: str) -> Problem:
    """Where the construct opened (a bracket or quote never closed) and where the parser
    gave up: ``file:3:10: '[' opened here is never closed; the parser gave up at 9:1: ...``."""
    problem = str(exc.problem or exc.context or "cannot parse")
    if "'\\t'" in problem:
        problem += " (indent with spaces: YAML does not allow tabs there)"
    elif "<block end>" in problem or "mapping values are not allowed here" in problem:
        problem += " (check the indentation)"
    gave_up, opened = exc.problem_mark, exc.context_mark
    if gave_up is None or opened is None or _position(opened) >= _position(gave_up):
        mark = gave_up or opened
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, None)
        return Problem(
            file=filename, line=line, column=column, message=f"YAML syntax error: {problem}"
        )
    context = str(exc.context)
    what = _OPENED.get(context, f"{context.removeprefix('while ')} that starts here")
    if context == "while scanning a quoted scalar" and isinstance(opened, StringMark):
        what = f"{opened.buffer[opened.pointer]!r} opened here is never closed"
    return Problem(
        file=filename,
        line=opened.line + 1,
        column=opened.column + 1,
        message=f"YAML syntax error: {what}; the parser gave up at "
        f"{gave_up.line + 1}:{gave_up.column + 1}: {problem}",
    )


def _position(mark: StreamMark) -> tuple[int, int]:
    return mark.line, mark.column


def _yaml_type(node: Any) -> str:
    if isinstance(node, CommentedSeq):
        return "a list"
    return f"a {type(node).__name__}" if not isinstance(node, str) else "a string"


def _plain(node: Any, path: Path, lines: dict[Path, int]) -> Any:
    """Plain Python data from ruamel nodes, recording the line of every key and item."""
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key in node:
            plain_key = _plain(key, path, {})
            child = (*path, plain_key)
            lines[child] = _line(node.lc.key, key, lines[path])
            out[plain_key] = _plain(node[key], child, lines)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, item in enumerate(node):
            child = (*path, index)
            lines[child] = _line(node.lc.item, index, lines[path])
            items.append(_plain(item, child, lines))
        return items
    return _plain_scalar(node)


def _line(position: Callable[[Any], tuple[int, int]], key: Any, default: int) -> int:
    try:
        return position(key)[0] + 1
    except (KeyError, IndexError, TypeError):  # keys merged in with `<<:` have no position
        return default


def _plain_scalar(value: Any) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if type(value).__name__ == "ScalarBoolean":
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.date):  # YAML timestamps: keep them as the text they were
        return value.isoformat()
    return value


def _problems(exc: ValidationError, lines: dict[Path, int], filename: str) -> list[Problem]:
    found: dict[tuple[int, str], Problem] = {}
    for error in exc.errors(include_url=False):
        loc = _known_prefix(error["loc"], lines)
        ctx = error.get("ctx") or {}
        kind = error["type"]
        if "problems" in ctx:
            located = [(_extend(loc, at, lines), message) for at, message in ctx["problems"]]
        elif "at" in ctx:
            located = [(_extend(loc, ctx["at"], lines), str(ctx["message"]))]
        elif kind == "missing":
            located = [((loc, loc), f"missing required key '{error['loc'][-1]}'")]
        elif kind == "extra_forbidden" and loc:
            located = [((loc[:-1], loc), f"unknown key '{loc[-1]}'")]
        elif error["loc"] and error["loc"][-1] == "[key]" and kind == "string_pattern_mismatch":
            located = [
                (
                    (loc[:-1], loc),
                    f"bad trigger name '{loc[-1]}': use letters, digits, '-' and '_', "
                    "starting with a letter or digit, at most 64 characters",
                )
            ]
        elif kind == "literal_error" and loc == ("version",):
            located = [((loc, loc), "must be 1 (the only version of the format)")]
        elif kind == "too_short":
            located = [((loc, loc), "needs at least one value")]
        else:
            located = [((loc, loc), str(error["msg"]).removeprefix("Value error, "))]
        for (shown, at), message in located:
            where = ".".join(str(part) for part in shown)
            problem = Problem(
                file=filename,
                line=lines[at],
                message=f"{where}: {message}" if where else message,
            )
            found.setdefault((problem.line, problem.message), problem)
    return sorted(found.values(), key=lambda p: p.line)


def _known_prefix(loc: tuple[int | str, ...], lines: dict[Path, int]) -> Path:
    """The longest path along ``loc`` that names a node in the file (skipping pydantic tags)."""
    path: Path = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
    return path


def _extend(loc: Path, at: Path, lines: dict[Path, int]) -> tuple[Path, Path]:
    """(path to show, path of the line to report) for sub-key ``at`` of ``loc``."""
    shown = (*loc, *at)
    return shown, _known_prefix(shown, lines)

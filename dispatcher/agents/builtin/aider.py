"""aider (``aider --message-file F --model sonnet --yes-always ...``): one message, then exit.

aider has no structured output: it prints text, and its lines below are read (their
formats are those of aider 0.86's source, ``aider/coders/base_coder.py`` and
``aider/main.py``). The profile sets ``COLUMNS`` so that aider's console (rich) does not
wrap them at 80 characters.

* ``Main model: NAME with FORMAT edit format, ...`` (``Model: ...`` when the weak model is
  the main one; ``get_announcements``) -> ``model``.
* After each model reply, ``calculate_and_show_tokens_and_cost`` prints
  ``Tokens: 2.5k sent[, 1.2k cache write][, 3.4k cache hit], 300 received.`` and, when
  aider knows the model's prices, ``Cost: $0.01 message, $0.02 session.`` (on the same
  line, or on the next one when both cache figures are shown). Each ``Tokens:`` line is
  a turn; ``sent`` figures add up to ``input_tokens``, ``received`` ones to
  ``output_tokens``; the last ``session`` figure (aider's own total for the run) is
  ``cost_usd``. aider rounds counts of 1000 and more (``2.5k``, ``12k``): the token
  figures are as close as that.
* A failed model call: aider catches litellm's exception (``send_message``), prints it,
  ``litellm.<Name>: <message>`` (then its own description, such as ``The API provider is
  not able to authenticate you. Check your API key.``), and either retries (``Retrying in
  N seconds...``) or gives up on the message and exits 0. An error after which no reply
  came (no ``Tokens:`` line) is :meth:`~AiderParser.failure`, with that line as the
  reason; a retried error followed by a reply is not.
* aider's other dead ends, all before or instead of a reply: ``No LLM model was specified
  and no API keys were provided.`` (an override without ``--model`` and no key: aider then
  offers an OpenRouter login in a browser and waits five minutes for it), ``Unable to
  proceed without an OpenRouter API key for model ...``, ``Message file not found: ...``,
  ``Model NAME has hit a token limit!`` and an uncaught exception (``# Uncaught OSError in
  config.py line 755``, then the exception's own line ``OSError: ...``).
* ``Aider v0.86.2`` (its first announcement) starts a run: a log holding several runs
  is read for the last one.
* ``summary``: the tail of the output (aider's reply and the edits it applied).
"""

from __future__ import annotations

import re
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import PROMPT_FILE, builtin

PROFILE: Final = builtin(
    "aider",
    [
        "aider",
        f"--message-file={PROMPT_FILE}",
        # An explicit model: without one (nor a key in the environment) aider offers an
        # OpenRouter login in the browser and waits five minutes for it.
        "--model",
        "sonnet",
        "--yes-always",
        "--no-auto-commits",  # the daemon commits what the agent leaves behind
        "--no-check-update",
        "--no-show-release-notes",
        "--no-pretty",
        "--no-fancy-input",
        "--no-stream",  # the provider's own token counts, not aider's estimate
        "--no-analytics",
        "--disable-playwright",  # --yes-always would otherwise install it to fetch a URL
        "--no-suggest-shell-commands",  # --yes-always declines every one of them
    ],
    stdin_prompt=False,
    output="text",
    description="aider, one message from the prompt file, then exit.",
    reports="aider",
    mcp=None,  # aider 0.86 has no MCP client: messages come in the prompt
    reports_cost=True,
    env=(
        # --yes-always also says yes to "Open URL in the browser?": open none.
        ("BROWSER", "true"),
        # aider's console wraps at 80 columns when it is not a terminal.
        ("COLUMNS", "1000"),
        # With no git identity aider writes one into the repo's .git/config, which the
        # sandbox keeps read-only (the crash "Read-only file system: '.../.git/config'").
        # Given here, it is found and nothing is written; aider makes no commit with it.
        ("GIT_CONFIG_COUNT", "2"),
        ("GIT_CONFIG_KEY_0", "user.name"),
        ("GIT_CONFIG_VALUE_0", "aider"),
        ("GIT_CONFIG_KEY_1", "user.email"),
        ("GIT_CONFIG_VALUE_1", "aider@localhost"),
    ),
)

_RUN: Final = re.compile(r"^Aider v\d+\.")  # not "Aider version: ..." of a crash report
_MODEL: Final = re.compile(r"^(?:Main model|Model): (\S+) with \S+ edit format")
_N: Final = r"\d+(?:\.\d)?k?"  # format_tokens: 999, 2.5k, 12k
_TOKENS: Final = re.compile(
    rf"^Tokens: (?P<sent>{_N}) sent(?:, {_N} cache write)?(?:, {_N} cache hit)?"
    rf", (?P<received>{_N}) received\."
)
_COST: Final = re.compile(r"(?:^|\s)Cost: \$[\d.]+ message, \$(?P<session>[\d.]+) session\.")
_LITELLM_ERROR: Final = re.compile(r"^litellm\.\w+: ")
_UNCAUGHT: Final = re.compile(r"^# Uncaught (\w+) in ")
_DEAD_ENDS: Final = (
    re.compile(r"^No LLM model was specified and no API keys were provided\."),
    re.compile(r"^Unable to proceed without an OpenRouter API key"),
    re.compile(r"^Message file not found: "),
    re.compile(r"^Model \S+ has hit a token limit!"),
)


def _count(text: str) -> int:
    """A count as aider's ``format_tokens`` prints it (see :data:`_N`)."""
    if text.endswith("k"):
        return round(float(text[:-1]) * 1000)
    return int(text)


class AiderParser(r.Parser):
    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.model: str | None = None
        self.cost: float | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.turns: int | None = None
        self.error: str | None = None
        self.uncaught: str | None = None

    def feed_text(self, line: str) -> bool:
        line = r.ANSI_RE.sub("", line).strip()
        if _RUN.match(line):
            self._start()
            return True
        if match := _MODEL.match(line):
            self.model = match.group(1)
            return True
        known = False
        if match := _TOKENS.match(line):
            self.turns = (self.turns or 0) + 1
            self.input_tokens = r.add(self.input_tokens, _count(match.group("sent")))
            self.output_tokens = r.add(self.output_tokens, _count(match.group("received")))
            self.error = None  # a reply came: an error before it was retried away
            known = True
        if (line.startswith(("Tokens: ", "Cost: "))) and (match := _COST.search(line)):
            self.cost = r.number(float(match.group("session")))
            known = True
        if known:
            return True
        if _LITELLM_ERROR.match(line) or any(p.match(line) for p in _DEAD_ENDS):
            self.error = line
            return True
        if match := _UNCAUGHT.match(line):
            self.uncaught = match.group(1)
            self.error = f"aider crashed: {match.group(1)}"
            return True
        if self.uncaught and line.startswith(f"{self.uncaught}: "):
            self.error = f"aider crashed: {line}"
            return True
        return line.startswith("Retrying in ")

    def report(self, tail: str | None) -> r.AgentReport:
        return r.AgentReport(
            summary=tail,
            cost_usd=self.cost,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            turns=self.turns,
            model=self.model,
        )

    def failure(self) -> str | None:
        return self.error


PARSER: Final[type[r.Parser] | None] = AiderParser

"""Where ``run`` and ``followup`` take the prompt from: the command line, a file, or stdin.

A prompt of a megabyte does not fit on a command line (Linux caps one argument at
128 KiB), so it can come from ``--prompt-file PATH`` or, with ``-`` for the text,
from stdin. The text is sent as read: no trimming, only a leading UTF-8 byte order
mark dropped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

from dispatcher.errors import InvalidInput

STDIN = "-"
"""The prompt text that means: read the prompt from stdin."""
MAX_PROMPT_CHARS = 1_000_000  # the API's limit (JobCreate.prompt)
MAX_PROMPT_BYTES = 4 * MAX_PROMPT_CHARS + 3  # UTF-8 at most 4 bytes a character, and a BOM


def read_prompt(
    text: str | None,
    file: Path | None,
    *,
    text_flag: str,
    usage_error: type[Exception],
    stdin: BinaryIO | None = None,
) -> str:
    """The prompt, given as ``text`` (``-``: stdin) or in ``file``: exactly one of them.

    Neither or both raise ``usage_error`` (exit 2); a file or stdin that cannot be read,
    is not UTF-8 or holds only whitespace raises :class:`InvalidInput` (exit 1).
    ``text_flag`` names the text's option or argument in the messages.
    """
    if text is not None and file is not None:
        raise usage_error(f"give {text_flag} or --prompt-file, not both")
    if text is None and file is None:
        raise usage_error(
            f"Missing {text_flag} or --prompt-file (with {text_flag} -, the prompt is read "
            "from stdin)"
        )
    if file is not None:
        where = f"the prompt file {file}"
        try:
            with file.open("rb") as fh:
                data = fh.read(MAX_PROMPT_BYTES + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {where}: {exc.strerror or exc}") from None
    elif text == STDIN:
        where = "the prompt on stdin"
        source = stdin or (sys.stdin.buffer if sys.stdin is not None else None)
        if source is None:
            raise InvalidInput("no stdin to read the prompt from (it is closed)")
        data = source.read(MAX_PROMPT_BYTES + 1)
    else:
        assert text is not None
        return text
    return _decoded(data, where)


def _decoded(data: bytes, where: str) -> str:
    if len(data) > MAX_PROMPT_BYTES:  # never read whole: it could be any size
        raise InvalidInput(
            f"{where} is over {MAX_PROMPT_BYTES:,} bytes; a prompt is at most "
            f"{MAX_PROMPT_CHARS:,} characters"
        )
    try:
        prompt = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    if not prompt.strip():
        raise InvalidInput(f"{where} is empty" if not prompt else f"{where} holds only whitespace")
    return prompt

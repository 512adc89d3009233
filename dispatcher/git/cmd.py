"""The one runner of git: a cleaned environment, the pinned global config, errors.

Every git command of the daemon goes through :func:`run` (bar the one ``git
version`` probe of GitPython's import, see :mod:`dispatcher.git.meta`), which runs ``git``
via :func:`dispatcher.process.proc.run` in an environment cleaned of inherited
``GIT_*`` variables (:func:`clean_env`) and turns a failure into
:class:`~dispatcher.errors.GitError` showing command, exit code and stderr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from dispatcher.errors import GitError, NotFound, ProcessError
from dispatcher.process import proc

# Inherited GIT_* variables that configure how git reaches the outside world or
# who commits; everything else (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, ...)
# would point our commands at the wrong repository. Mirrors pre-commit.
_KEEP_ENV = frozenset(
    {
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY",
        "GIT_ASKPASS",
        "GIT_ALLOW_PROTOCOL",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_COUNT",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
    }
)
_KEEP_ENV_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")
# The daemon's forge tokens (docs/forge.md): no git process (nor a hook it runs) gets
# them; a push is given its one token through its own ``env_extra``.
_DROP_ENV = frozenset({"DISPATCHER_FORGE_TOKENS"})


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without inherited ``GIT_*`` variables (bar a whitelist), plus ``extra``.

    Git never prompts for credentials (``GIT_TERMINAL_PROMPT=0``). Used for every
    git call and by the runner to build an agent's environment. In the daemon the
    filtered environment is computed once, at start (:func:`pin_global_config`).
    """
    env = dict(_daemon_env) if _daemon_env else _cleaned(os.environ)
    if extra:
        env.update(extra)
    return env


def _cleaned(environ: Mapping[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in environ.items()
        if (not key.startswith("GIT_") or key in _KEEP_ENV or key.startswith(_KEEP_ENV_PREFIXES))
        and key not in _DROP_ENV
    }
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


# The daemon's environment, cleaned once at start: it never changes after (filtering
# os.environ per git call was a tenth of the cost of a call in the daemon's own CPU).
_daemon_env: dict[str, str] = {}
# The same, with the pinned global config: what a git call without extras runs with.
_git_env: dict[str, str] = {}
_pinned_global: dict[str, str] = {}


def _global_config_files(env: Mapping[str, str]) -> list[Path]:
    """The global (per-user) config files git reads with ``env``, existing or not."""
    if env.get("GIT_CONFIG_GLOBAL"):
        return [Path(env["GIT_CONFIG_GLOBAL"])]
    home = env.get("HOME")
    xdg = env.get("XDG_CONFIG_HOME") or (str(Path(home) / ".config") if home else "")
    return [
        *([Path(xdg) / "git" / "config"] if xdg else []),
        *([Path(home) / ".gitconfig"] if home else []),
    ]


def pin_global_config(env: Mapping[str, str] | None = None) -> str | None:
    """Fix, once at daemon start, which global config the daemon's own git reads.

    Agents may write their HOME. The sandbox keeps the user's existing global git
    config read-only, but a file that does not exist yet could be created by an
    agent with, say, ``core.fsmonitor`` set, and the daemon's next git command in
    a worktree would run it outside the box. So when exactly one global config
    exists, every daemon git call reads that one (``GIT_CONFIG_GLOBAL``); when none
    does, none (``/dev/null``); with both, both stay (both exist and are protected).
    A global config created later is read by the daemon after its next start.
    Returns the pinned path (None: nothing pinned).

    Called without ``env`` (the daemon, at start), it also fixes the environment every
    git call and agent starts from: ``os.environ`` cleaned once (:func:`clean_env`)."""
    daemon = env is None
    env = os.environ if env is None else env
    files = _global_config_files(env)
    existing = [path for path in files if path.is_file()]
    _pinned_global.clear()
    pinned = None
    if not (len(existing) == len(files) and len(files) > 1):
        pinned = str(existing[0]) if existing else os.devnull
        _pinned_global["GIT_CONFIG_GLOBAL"] = pinned
    if daemon:
        _daemon_env.clear()
        _daemon_env.update(_cleaned(os.environ))
        _git_env.clear()
        _git_env.update(_daemon_env, **_pinned_global)
    return pinned


def run(
    args: Sequence[str],
    cwd: str | os.PathLike[str],
    *,
    check: bool = True,
    input: str | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float | None = 120,
    session: bool = False,
) -> proc.Result:
    """Run ``git *args`` in ``cwd``; raise :class:`GitError` on failure when ``check``.
    ``session``: in a process group of its own, all of it killed on the timeout (a
    fetch or push: git's ssh or remote helper goes with it)."""
    if not os.path.isdir(cwd):
        raise NotFound(f"no such directory: {os.fspath(cwd)}")
    argv = ["git", *args]
    try:
        if _git_env and not env_extra:
            env = _git_env
        else:
            env = clean_env({**_pinned_global, **(env_extra or {})})
        result = proc.run(
            argv, cwd=cwd, env=env, input=input, check=False, timeout=timeout, session=session
        )
    except ProcessError as exc:
        raise GitError(exc.message) from exc
    if check and result.returncode != 0:
        raise GitError(failure(result))
    return result


def answer(
    args: Sequence[str],
    cwd: str | os.PathLike[str],
    *,
    env_extra: Mapping[str, str] | None = None,
) -> proc.Result:
    """Run a git command whose exit code 1 is an answer (no, a conflict, a difference);
    raise :class:`GitError` on any other failure."""
    result = run(args, cwd, check=False, env_extra=env_extra)
    if result.returncode not in (0, 1):
        raise GitError(failure(result))
    return result


def failure(result: proc.Result) -> str:
    """The message of a failed git command: its argv, exit code, stdout and stderr."""
    return proc.describe_failure(result.argv, result.returncode, result.stdout, result.stderr)

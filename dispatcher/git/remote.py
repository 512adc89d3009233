"""Pushing a branch to a remote: the remote's URLs, the push, a refusal read as one line.

A token for an https push reaches git through the environment of that one git
process only: an inline credential helper (in argv, without the token) prints
``$DISPATCHER_GIT_PASSWORD`` when git asks, and only for the protocol and host the
token is for (a second push URL, or a redirect, to another host gets nothing). Any
helper of the user's config is turned off for the push, so no helper stores the
token; redirects are not followed, and no hook runs in that process (``core.hooksPath``
is emptied: ``reference-transaction`` would run with the token in its environment).
Nothing local changes when the push is refused (git updates a remote-tracking ref only for a ref the
remote took).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dispatcher.errors import FetchFailed, GitError, InvalidInput, NotFound, PushRejected
from dispatcher.git import cmd
from dispatcher.git.names import is_full_sha, is_plain_branch, validate_branch_name
from dispatcher.git.refs import branch_head, is_ancestor, ref_value
from dispatcher.process import proc

_REMOTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# On `get` for the protocol and host the token is for, prints the username and password
# from the environment; anything else (another host, store, erase) gets nothing.
_HELPER = (
    '!f() { test "$1" = get || return 0; p=; h=; '
    'while IFS= read -r l; do case "$l" in '
    'protocol=*) p="${l#protocol=}";; host=*) h="${l#host=}";; esac; done; '
    'test -n "$DISPATCHER_GIT_HOST" && test "$p" = "$DISPATCHER_GIT_PROTOCOL" && '
    'test "$h" = "$DISPATCHER_GIT_HOST" || return 0; '
    "printf 'username=%s\\npassword=%s\\n' "
    '"$DISPATCHER_GIT_USERNAME" "$DISPATCHER_GIT_PASSWORD"; '
    "}; f"
)


@dataclass(frozen=True)
class Credentials:
    """What git answers when the https remote asks who we are (never in argv), and
    only to ``protocol`` at ``host`` (``host:port`` when the URL names a port, as git
    asks for it)."""

    username: str
    password: str
    protocol: str = "https"
    host: str = ""

    def __repr__(self) -> str:  # never shows the password
        return f"Credentials(username={self.username!r}, password=***)"


def check_remote_name(name: str) -> str:
    """``name`` if it can be a remote's name (no option, no path, no spaces)."""
    if not _REMOTE_NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(f"not a remote name: {name[:100]!r}")
    return name


def require_remote(repo: Path, remote: str) -> None:
    """NotFound (naming the remotes it has) when the repo has no remote ``remote``."""
    check_remote_name(remote)
    names = cmd.run(["remote"], repo).stdout.split()
    if remote not in names:
        known = ", ".join(names) or "none"
        raise NotFound(f"the repo has no remote {remote!r} (its remotes: {known})")


def remote_urls(repo: Path, remote: str) -> tuple[str, str]:
    """The fetch and push URLs of ``remote`` as git uses them (``insteadOf`` and
    ``pushurl`` applied); NotFound when the repo has no such remote."""
    require_remote(repo, remote)
    fetch = cmd.run(["remote", "get-url", "--", remote], repo).stdout.strip()
    push = cmd.run(["remote", "get-url", "--push", "--", remote], repo).stdout.strip()
    return fetch, push


def check_push_branch(branch: str) -> str:
    """``branch`` if it is a plain branch name (letters, digits, ``_``, ``-``, ``/``-separated
    parts), which a job's branch always is: nothing a refspec or option could misread."""
    validate_branch_name(branch)
    if not is_plain_branch(branch):
        raise InvalidInput(f"not a branch this daemon pushes: {branch[:100]!r}")
    return branch


def push(
    repo: Path,
    remote: str,
    branch: str,
    *,
    lease: str | None = None,
    force_with_lease: bool = False,
    credentials: Credentials | None = None,
    timeout: float = 300,
) -> None:
    """Push local ``branch`` to the same name on ``remote``.

    ``force_with_lease``: overwrite the remote branch only if it is where we last
    pushed it (``lease``, a sha), or absent when ``lease`` is None. Raises
    :class:`PushRejected` with one line saying why (non-fast-forward, a hook, the
    credentials, the remote) when the push is refused."""
    check_remote_name(remote)
    check_push_branch(branch)
    ref = f"refs/heads/{branch}"
    args = [*_auth_args(credentials), "push", "--porcelain", "--no-verify"]
    if force_with_lease:
        args.append(f"--force-with-lease={ref}:{lease or ''}")
    args += ["--", remote, f"{ref}:{ref}"]
    result = cmd.run(
        [*_slow_args(timeout), *args], repo, check=False, env_extra=_auth_env(credentials),
        timeout=timeout, session=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise PushRejected(_refusal(result.stderr + "\n" + result.stdout, remote, branch))


class LeaseLost(PushRejected):
    """A ``--force-with-lease`` push refused because the remote ref is no longer where
    the lease said (someone else pushed meanwhile); nothing changed."""


_HUB_REF = re.compile(r"refs/(heads|dispatcher)/[A-Za-z0-9_][A-Za-z0-9_./-]{0,250}")
ANY = object()  # ``expect`` of :func:`push_ref`: overwrite whatever the remote has


def check_hub_ref(ref: str) -> str:
    """``ref`` if it is a full ref a hub push may write (``refs/heads/...`` or
    ``refs/dispatcher/...``, no ``..``, nothing a refspec could misread)."""
    if not _HUB_REF.fullmatch(ref) or ".." in ref or ref.endswith(("/", ".lock")):
        raise InvalidInput(f"not a ref this daemon pushes: {ref[:100]!r}")
    return ref


def push_ref(
    repo: Path,
    remote: str,
    ref: str,
    sha: str | None,
    *,
    expect: str | object = ANY,
    credentials: Credentials | None = None,
    timeout: float = 300,
) -> None:
    """Set ``ref`` on ``remote`` to commit ``sha`` (None: delete it).

    ``expect``: :data:`ANY` overwrites whatever is there (the ref is the daemon's);
    a sha (or ``""``: absent) is a lease (``--force-with-lease=<ref>:<expect>``), and
    :class:`LeaseLost` is raised when the remote's ref is elsewhere. Any other refusal
    is :class:`PushRejected` with one line."""
    check_remote_name(remote)
    check_hub_ref(ref)
    if sha is not None and not is_full_sha(sha):
        raise InvalidInput(f"not a commit id: {sha[:100]!r}")
    args = [*_auth_args(credentials), "push", "--porcelain", "--no-verify"]
    if expect is ANY:
        spec = f"+{sha}:{ref}" if sha is not None else f":{ref}"
    else:
        assert isinstance(expect, str)
        if expect and not is_full_sha(expect):
            raise InvalidInput(f"not a commit id: {expect[:100]!r}")
        args.append(f"--force-with-lease={ref}:{expect}")
        spec = f"{sha}:{ref}" if sha is not None else f":{ref}"
    result = cmd.run(
        [*_slow_args(timeout), *args, "--", remote, spec], repo, check=False,
        env_extra=_auth_env(credentials), timeout=timeout, session=True,
    )  # fmt: skip
    if result.returncode == 0:
        return
    output = result.stderr + "\n" + result.stdout
    name = ref.removeprefix("refs/heads/")
    if "stale info" in output.lower() or (expect is not ANY and "[rejected]" in output):
        raise LeaseLost(f"push of {name} to {remote} refused: {ref} moved there meanwhile")
    if (
        sha is None
        and "unable to delete" in output.lower()
        and "remote ref does not exist" in (output.lower())
    ):
        return  # deleting what is not there: done
    raise PushRejected(_refusal(output, remote, name))


def _ask(
    repo: Path, args: list[str], remote: str, what: str,
    credentials: Credentials | None, timeout: float,
) -> proc.Result:  # fmt: skip
    """Run ``git args`` against ``remote`` (``what``: the verb, for the message), bounded
    by ``timeout``; :class:`FetchFailed` with one line when it fails or times out (its
    ssh or remote helper killed with it)."""
    try:
        result = cmd.run(
            [*_slow_args(timeout), *args], repo, check=False,
            env_extra=_auth_env(credentials), timeout=timeout, session=True,
        )  # fmt: skip
    except GitError as exc:
        raise FetchFailed(f"{what} of {remote} failed: {exc.message[:300]}") from None
    if result.returncode != 0:
        raise FetchFailed(_fetch_failure(result.stderr + "\n" + result.stdout, remote))
    return result


def remote_refs(
    repo: Path,
    remote: str,
    pattern: str,
    *,
    credentials: Credentials | None = None,
    timeout: float = 60,
) -> dict[str, str]:
    """The refs of ``remote`` matching ``pattern`` (``ls-remote``'s), ref to sha.
    :class:`FetchFailed` with one line when the remote cannot be asked."""
    check_remote_name(remote)
    if not pattern.startswith("refs/") or pattern.startswith("-"):
        raise InvalidInput(f"not a ref pattern: {pattern[:100]!r}")
    args = [*_auth_args(credentials), "ls-remote", "--", remote, pattern]
    result = _ask(repo, args, remote, "ls-remote", credentials, timeout)
    found = {}
    for line in result.stdout.splitlines():
        sha, _, name = line.partition("\t")
        if is_full_sha(sha) and name:
            found[name.strip()] = sha
    return found


def fetch_branch(
    repo: Path,
    remote: str,
    branch: str,
    *,
    credentials: Credentials | None = None,
    timeout: float = 60,
) -> str | None:
    """Fetch ``remote``'s ``branch`` alone into ``refs/remotes/<remote>/<branch>``; its
    sha there (None: the remote has no such branch, the tracking ref then removed).
    :class:`FetchFailed` with one line when the fetch fails."""
    check_remote_name(remote)
    validate_branch_name(branch)
    tracking = f"refs/remotes/{remote}/{branch}"
    there = remote_refs(
        repo, remote, f"refs/heads/{branch}", credentials=credentials, timeout=timeout
    ).get(f"refs/heads/{branch}")
    if there is None:
        cmd.run(["update-ref", "-d", "--end-of-options", tracking], repo, check=False)
        return None
    args = [*_auth_args(credentials), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
            "--refmap=", "--", remote, f"+refs/heads/{branch}:{tracking}"]  # fmt: skip
    _ask(repo, args, remote, "fetch", credentials, timeout)
    return ref_value(repo, tracking)


def fetch(
    repo: Path, remote: str, *, credentials: Credentials | None = None, timeout: float = 60
) -> None:
    """Fetch ``remote``'s branches into its remote-tracking refs (``refs/remotes/<remote>/*``,
    whatever refspec the remote is configured with; no tags, no local branch touched).
    :class:`FetchFailed` with one line on why it failed (a timeout included)."""
    check_remote_name(remote)
    # The refspec on the command line, and `--refmap=` so that the remote's configured
    # one (a mirror's `+refs/*:refs/*`, say) is not applied as well.
    args = [*_auth_args(credentials), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
            "--refmap=", "--", remote, f"+refs/heads/*:refs/remotes/{remote}/*"]  # fmt: skip
    _ask(repo, args, remote, "fetch", credentials, timeout)


def _slow_args(timeout: float | None) -> list[str]:
    """An http transfer that stalls (under 1 byte/s for the timeout) ends by itself."""
    if timeout is None:
        return []
    return ["-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={max(1, int(timeout))}"]


def _fetch_failure(output: str, remote: str) -> str:
    """One line on why a fetch of ``remote`` failed."""
    where = f"fetch of {remote} failed"
    return _transport_failure(output, where, "", ("error", "fatal"), "git fetch failed")


def _transport_failure(
    output: str, where: str, credentials_hint: str, last_prefixes: tuple[str, ...], fallback: str
) -> str:
    """One line on a fetch's or push's failure that is the transport's: credentials, a
    repository not there, a host not reached; else git's last error line."""
    text = output.lower()
    if any(
        said in text
        for said in (
            "authentication failed",
            "could not read username",
            "could not read password",
            "permission denied",
            "returned error: 403",
            "terminal prompts disabled",
        )
    ):
        return f"{where}: the remote wants credentials it was not given or refused them" + (
            credentials_hint
        )
    if "does not appear to be a git repository" in text or "repository not found" in text:
        return f"{where}: the remote repository was not found"
    if any(
        said in text
        for said in (
            "could not resolve host",
            "connection refused",
            "timed out",
            "failed to connect",
        )
    ):
        return f"{where}: the remote could not be reached"
    last = [line.strip() for line in output.splitlines() if line.strip().startswith(last_prefixes)]
    return f"{where}: {(last[-1] if last else fallback)[:300]}"


def newer_tracking(repo: Path, remote: str, branch: str) -> str | None:
    """The tip of ``<remote>/<branch>`` when it is ahead of local ``branch`` (the local
    branch is an ancestor of it: behind, nothing of its own); None otherwise (no such
    ref, the same commit, or the local branch has commits of its own)."""
    check_remote_name(remote)
    local = branch_head(repo, branch)
    tracking = ref_value(repo, f"refs/remotes/{remote}/{branch}")
    if local is None or tracking is None or tracking == local:
        return None
    return tracking if is_ancestor(repo, local, tracking) else None


def _auth_args(credentials: Credentials | None) -> list[str]:
    if credentials is None:
        return []
    # The empty value clears the helpers of every config file read before; then ours.
    return ["-c", "credential.helper=", "-c", f"credential.helper={_HELPER}",
            "-c", "credential.useHttpPath=false", "-c", "http.followRedirects=false",
            "-c", "core.hooksPath=/dev/null"]  # fmt: skip


def _auth_env(credentials: Credentials | None) -> dict[str, str] | None:
    if credentials is None:
        return None
    return {
        "DISPATCHER_GIT_USERNAME": credentials.username,
        "DISPATCHER_GIT_PASSWORD": credentials.password,
        "DISPATCHER_GIT_PROTOCOL": credentials.protocol,
        "DISPATCHER_GIT_HOST": credentials.host,
        "GIT_ASKPASS": "",  # only the helper answers
        "SSH_ASKPASS": "",
    }


def _refusal(output: str, remote: str, branch: str) -> str:
    """One line on why git refused to push ``branch`` to ``remote``."""
    text = output.lower()
    where = f"push of {branch} to {remote} refused"
    if "stale info" in text:
        return (
            f"{where}: the remote branch moved since the last push (lease broken); fetch and look"
        )
    if "non-fast-forward" in text or "fetch first" in text or "[rejected]" in text:
        return (
            f"{where}: the remote branch has commits the job's branch lacks (non-fast-forward); "
            "use --force-with-lease to overwrite it"
        )
    if "pre-receive hook declined" in text or "hook declined" in text:
        return f"{where}: the remote's hook declined it (a protected branch?): {_hook_says(output)}"
    if "protected branch" in text:
        return f"{where}: the branch is protected on the remote"
    return _transport_failure(
        output, where,
        "; set a token for its host in DISPATCHER_FORGE_TOKENS (https) or an ssh key "
        "(docs/forge.md)",
        ("error", "fatal", "!"), "git push failed",
    )  # fmt: skip


def _hook_says(output: str) -> str:
    said = [
        line.removeprefix("remote:").strip()
        for line in output.splitlines()
        if line.startswith("remote:") and line.removeprefix("remote:").strip()
    ]
    return ("; ".join(said) or "no reason given")[:300]

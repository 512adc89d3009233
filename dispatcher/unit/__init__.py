"""The daemon kept running by the user's service manager: a systemd user unit or a launchd agent.

:mod:`~dispatcher.unit.target` says what is installed where, :mod:`~dispatcher.unit.systemd`
and :mod:`~dispatcher.unit.launchd` render their file (pure: a target in, text out) and
name the manager's commands, :mod:`~dispatcher.unit.manager` installs, removes and asks,
through the one runner of those commands, :mod:`~dispatcher.unit.command`. Nothing here
knows about jobs or the database. See docs/service.md.
"""

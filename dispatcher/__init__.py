"""worktree-dispatcher: run coding agents in isolated git worktrees."""

__version__ = "0.1.0"

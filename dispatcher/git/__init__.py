"""The only package that runs git; nothing in it knows about jobs or the database.

One module per concern, each imported by the callers that use it
(``from dispatcher.git import worktrees`` then ``worktrees.add(...)``):

* :mod:`~dispatcher.git.cmd` runs git (through :mod:`dispatcher.process.proc`)
  in a cleaned environment and turns a failure into
  :class:`~dispatcher.errors.GitError`; every other module but meta goes through it;
* :mod:`~dispatcher.git.names` checks branch names, save refs, revisions and
  identities before they reach git (positional arguments follow
  ``--end-of-options``, so nothing untrusted lands in an option position);
* :mod:`~dispatcher.git.dotgit` reads refs and HEAD from a repository's files,
  without starting git, where they give a certain answer;
* :mod:`~dispatcher.git.refs` answers questions about refs and commits;
* :mod:`~dispatcher.git.blobs` reads committed files (trigger files, conventions);
* :mod:`~dispatcher.git.worktrees` makes, recycles, checks and removes worktrees;
* :mod:`~dispatcher.git.commits` stages and commits what an agent left, and
  snapshots a worktree into a ref;
* :mod:`~dispatcher.git.merge` computes merges without a worktree and lands
  them by compare-and-swap, with :mod:`~dispatcher.git.journal` recording a
  landing under way so that the next start can finish or undo it;
* :mod:`~dispatcher.git.version` reads which git runs and checks it is new enough
  (2.38: ``git merge-tree --write-tree``);
* :mod:`~dispatcher.git.meta` reads a repository's metadata with GitPython,
  off the hot path (its remotes' URLs).
"""

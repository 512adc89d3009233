"""Jobs: the runner and its workspaces, the warm pool, merging, retention and budgets."""

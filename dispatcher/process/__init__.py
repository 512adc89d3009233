"""Processes: starting, boxing (bubblewrap, cgroups) and capturing the output of every child."""

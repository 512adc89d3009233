"""Events in: the one intake path, the local sources feeding it, trigger files and checks."""

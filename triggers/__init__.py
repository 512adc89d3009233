"""Trigger sources: the trigger file, matching, and the world turned into normalized events."""

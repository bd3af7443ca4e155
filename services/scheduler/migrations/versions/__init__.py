"""Revisions of the scheduler's tables."""

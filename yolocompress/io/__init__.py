"""Checkpoint input/output and atomic file writing."""

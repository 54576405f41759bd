"""Fixtures for the panoptes service (filled in by its owner)."""

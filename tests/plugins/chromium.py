"""Fixtures for the chromium service (filled in by its owner)."""

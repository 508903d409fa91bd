"""Assay verifier package."""

__version__ = "0.1.0"
"""The project's version (pyproject.toml's; tests/test_packaging.py keeps them equal)."""

"""Assay golden package."""

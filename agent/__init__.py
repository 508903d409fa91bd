"""Assay agent package."""

"""Assay assay package."""

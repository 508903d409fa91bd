"""Assay verifier package."""

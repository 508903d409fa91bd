"""Assay node agent: TPM access, evidence collection, enrollment and attestation client."""

from __future__ import annotations

__version__ = "0.1.0"

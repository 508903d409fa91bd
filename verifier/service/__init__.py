"""The verifier service: enrollment, attestation, inventory, golden lifecycle, admin (Flask)."""

from __future__ import annotations

from .app import create_app
from .config import ServiceConfig, load_config

__all__ = ["ServiceConfig", "create_app", "load_config"]

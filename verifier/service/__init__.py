"""The verifier service: enrollment, attestation, inventory, golden lifecycle, tokens.

Domain modules (``enrollment``, ``attestation``, ``inventory``, ``golden_ops``, ``tokens``,
``audit``) take typed arguments, return typed results and raise ``errors``; they import no Flask,
so the CLI uses them without it. The HTTP front end is ``app`` (the factory), ``routes``,
``auth``, ``_http`` and ``api_errors``; ``create_app`` is imported from it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServiceConfig, load_config

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["ServiceConfig", "create_app", "load_config"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

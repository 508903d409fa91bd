"""The verifier's persistent state: models, migrations, repository functions."""

from __future__ import annotations

from .engine import Store, StoreUnavailable, database_url, make_engine
from .migrate import upgrade

__all__ = ["Store", "StoreUnavailable", "database_url", "make_engine", "upgrade"]

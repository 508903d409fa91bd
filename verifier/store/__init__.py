"""The verifier's persistent state: models, migrations, repository functions."""

from __future__ import annotations

from . import cluster as cluster  # its tables share Base (migration 0006)
from . import runtime as runtime  # runtime policies and IMA state (migration 0008)
from .engine import Store, StoreUnavailable, database_url, make_engine
from .migrate import upgrade
from .models import AttestationSource, EnrollmentStep, NodeState

__all__ = [
    "AttestationSource",
    "EnrollmentStep",
    "NodeState",
    "Store",
    "StoreUnavailable",
    "database_url",
    "make_engine",
    "upgrade",
]

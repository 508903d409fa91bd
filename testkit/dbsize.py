"""How many bytes a verifier database holds (rows + indexes), SQLite or PostgreSQL (scaffolding
for the growth tests and ``scripts/fleet``)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from verifier.store import Store


def db_bytes(store: Store, *, vacuum: bool = True) -> int:
    """SQLite: the bytes in use on every page (``dbstat``: page size less unused bytes), else
    the pages in use. PostgreSQL: the total size of every table of the schema with its indexes
    and TOAST, after a plain VACUUM (which makes dead rows' space reusable but returns nothing to
    the file system)."""
    if store.is_sqlite:
        with store.engine.connect() as conn:
            try:
                used = conn.exec_driver_sql("SELECT sum(pgsize - unused) FROM dbstat").scalar()
                return int(used or 0)
            except OperationalError:  # a SQLite built without dbstat: count pages
                conn.rollback()
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
            size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
            return int((pages - free) * size)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if vacuum:
            conn.exec_driver_sql("VACUUM")
        total = conn.execute(
            text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
        ).scalar()
        return int(total or 0)

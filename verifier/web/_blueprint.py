"""The console's one blueprint (templates and static files live beside this package)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

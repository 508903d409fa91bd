"""Response headers of every console response: strict CSP, no framing, no caching, no sniffing."""

from __future__ import annotations

from flask import Blueprint, Response

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


def register_headers(bp: Blueprint) -> None:
    @bp.after_request
    def _secure(resp: Response) -> Response:
        for name, value in HEADERS.items():
            resp.headers[name] = value
        return resp

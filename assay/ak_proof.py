"""The AK proof a node gives to fetch its own EAR (verifier ``GET /v1/nodes/{node}/ear``).

Shared by the agent (which quotes over it) and the verifier (which checks it): a TPM2_Quote made
by the node's enrolled AK whose qualifying data is ``ear_request_digest(nonce)``, for a nonce the
verifier issued. The context string separates it from evidence, whose qualifying data is the
nonce itself, so neither can be taken for the other.
"""

from __future__ import annotations

import hashlib

EAR_REQUEST_CONTEXT = b"assay-ear-request\x00"
HEADER_NONCE = "X-Assay-Nonce"
HEADER_QUOTE = "X-Assay-Quote"
HEADER_SIGNATURE = "X-Assay-Signature"


def ear_request_digest(nonce: bytes) -> bytes:
    return hashlib.sha256(EAR_REQUEST_CONTEXT + nonce).digest()

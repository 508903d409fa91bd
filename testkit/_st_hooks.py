"""schemathesis hooks for the verifier (``SCHEMATHESIS_HOOKS=testkit._st_hooks``): the CBOR bodies
the API takes (evidence, CoRIM) are sent as the bytes schemathesis generates for them."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias(
    ["application/cbor", "application/rim+cbor"], "application/octet-stream"
)

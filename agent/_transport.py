"""How the agent reaches the verifier: which URLs it accepts and whom it trusts over TLS.

The agent authenticates the verifier before it sends anything: over HTTPS with the configured CA
bundle (``tls_ca``; the system's CAs without one) and the host name checked, or with a pinned
certificate (``tls_pin``: the SHA-256 of the verifier's certificate, compared once the handshake is
done and before the request is written). Plain HTTP is accepted only to a loopback verifier
(``localhost``, 127.0.0.0/8, ``::1``) unless ``allow_insecure_http`` says otherwise: anything else
would let the network choose the nonce's answer and see the enrollment token.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import ssl
import urllib.parse
import urllib.request
from typing import Any

from assay.errors import ConfigurationError


class CertificatePinMismatch(ssl.SSLCertVerificationError):
    """The verifier's certificate is not the pinned one (raised before any request is sent)."""


def parse_pin(text: str) -> bytes:
    """``sha256:HEX``, ``HEX`` or openssl's ``AB:CD:…`` fingerprint → 32 bytes."""
    value = text.strip()
    if value.lower().startswith("sha256:"):
        value = value[7:]
    try:
        digest = bytes.fromhex(value.replace(":", ""))
    except ValueError:
        raise ConfigurationError(f"tls_pin {text!r} is not a SHA-256 fingerprint in hex") from None
    if len(digest) != 32:
        raise ConfigurationError(f"tls_pin {text!r} has {len(digest)} bytes, not 32 (SHA-256)")
    return digest


def is_loopback(host: str) -> bool:
    """A literal loopback address or ``localhost``; names are not resolved (DNS could lie)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, tls: bool, allow_insecure_http: bool) -> urllib.parse.SplitResult:
    """The verifier URL, refused when its scheme would drop the protection configured for it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"verifier URL {url!r} is not an http:// or https:// URL")
    if parts.scheme == "http" and tls:
        raise ConfigurationError(
            f"verifier URL {url!r} is plain HTTP but tls_ca/tls_pin are set: use https://"
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"verifier URL {url!r} is plain HTTP to a host that is not loopback: use https:// "
            "(or set allow_insecure_http, which lets the network read and answer everything)"
        )
    return parts


class _PinnedConnection(http.client.HTTPSConnection):
    """An HTTPS connection that accepts exactly one certificate, checked before the request."""

    def __init__(self, *args: Any, pin: bytes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pin = pin

    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True) if self.sock else None
        if der is None or not hmac.compare_digest(hashlib.sha256(der).digest(), self._pin):
            self.close()
            got = hashlib.sha256(der).hexdigest() if der else "none"
            raise CertificatePinMismatch(f"certificate sha256:{got} is not the pinned one")


class _PinnedHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, pin: bytes) -> None:
        super().__init__(context=context)
        self._pin_context = context
        self._pin = pin

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, **kwargs: Any) -> _PinnedConnection:
            kwargs["context"] = self._pin_context
            return _PinnedConnection(host, pin=self._pin, **kwargs)

        return self.do_open(connection, req)


def tls_context(tls_ca: str | None, pinned: bool) -> ssl.SSLContext:
    """TLS 1.2 or newer; the CA bundle's chain and the host name, unless only a pin is given."""
    try:
        context = ssl.create_default_context(cafile=tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"tls_ca {tls_ca}: cannot load it ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if pinned and tls_ca is None:
        # The pin is the trust anchor: a self-signed certificate needs no CA and no host name.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def build_opener(
    url: str,
    *,
    tls_ca: str | None = None,
    tls_pin: str | None = None,
    allow_insecure_http: bool = False,
) -> urllib.request.OpenerDirector:
    """The opener every request to ``url`` goes through (ConfigurationError if it is refused)."""
    check_url(url, tls=bool(tls_ca or tls_pin), allow_insecure_http=allow_insecure_http)
    pin = parse_pin(tls_pin) if tls_pin else None
    context = tls_context(tls_ca, pin is not None)
    handler: urllib.request.HTTPSHandler = (
        urllib.request.HTTPSHandler(context=context)
        if pin is None
        else _PinnedHandler(context, pin)
    )
    # Redirects are not followed (a 3xx is answered as it stands, never sent on to another,
    # perhaps plain, URL); proxies from the environment are honoured as before.
    return urllib.request.build_opener(handler, _NoRedirect())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None

"""Service configuration: defaults < YAML file < environment (ASSAY_*) < command-line flags.

One frozen ``ServiceConfig`` is built at start-up and passed to ``create_app``; nothing reads the
environment later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.algorithms import HashAlg
from assay.errors import ConfigurationError
from assay.evidence import DEFAULT_CAPS

DEFAULT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class WebhookReceiver:
    """Where node state changes and golden revocations are POSTed, signed with ``secret``."""

    name: str
    url: str
    secret: str = ""
    secret_file: str | None = None

    def key(self) -> bytes:
        """The HMAC key: ``secret``, or the first line of ``secret_file``."""
        if self.secret_file:
            try:
                return Path(self.secret_file).read_text().strip().encode()
            except OSError as exc:
                raise ConfigurationError(f"webhook {self.name}: {exc}") from None
        return self.secret.encode()


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    database: str = "assay-verifier.db"
    """A SQLAlchemy URL (``postgresql+psycopg://…``) or a SQLite file path."""
    ek_ca_dir: str | None = None
    """Directory of TPM-vendor CA certificates (PEM or DER) that EK certificates must chain to."""
    allow_ek_without_cert: bool = False
    bank: str = "sha256"
    pcrs: tuple[int, ...] = DEFAULT_PCRS
    nonce_lifetime: float = 60.0
    enrollment_lifetime: float = 300.0
    attest_interval: float = 60.0
    freshness_factor: float = 3.0
    max_bundle: int = DEFAULT_CAPS.bundle
    max_event_log: int = DEFAULT_CAPS.event_log
    max_ima_log: int = DEFAULT_CAPS.ima_log
    max_json: int = 256 * 1024
    log_cache_size: int = 512
    node_cache_size: int = 100_000
    """Node snapshots kept per worker between attestations (about 1 KB each; 0: read every time).
    Only a cache: every write that relies on one holds it to the row's version."""
    client_rate: float = 50.0
    client_burst: float = 500.0
    """Unauthenticated requests (challenge, evidence, activation) per client address and worker:
    sustained per second, and at once."""
    policy_cache_ttl: float = 60.0
    max_token_lifetime: float = 30 * 24 * 3600.0
    """Seconds: no bearer token is accepted longer than this after its creation (30 days)."""
    bind: str = "127.0.0.1:8700"
    workers: int = 2
    worker_connections: int = 1000
    """Connections one (gevent) worker holds at most; more wait in the listen backlog."""
    body_timeout: float = 30.0
    """Seconds a request body may take to arrive; a slower client gets 408 ``body_timeout``."""
    console_idle_timeout: float = 15 * 60.0
    """Seconds a review-console session lives without a request (idle expiry)."""
    console_session_lifetime: float = 8 * 3600.0
    """Seconds a review-console session lives at most after sign-in (absolute expiry)."""
    tls_cert: str | None = None
    tls_key: str | None = None
    log_format: str = "text"
    """``text`` or ``json``: one line per event on stderr (the journal under systemd)."""
    ear_key_file: str | None = None
    """EAR signing keys in this file (created 0600 on first start); unset: in the database, which
    every instance shares."""
    ear_issuer: str = "assay-verifier"
    webhooks: tuple[WebhookReceiver, ...] = ()
    webhook_timeout: float = 5.0
    webhook_max_backoff: float = 300.0
    event_retention: float = 7 * 24 * 3600.0
    """Seconds an event stays in the change feed once every receiver has it."""
    metrics_token: str | None = None
    """``GET /metrics`` on the service's bind needs ``Authorization: Bearer <this>``."""
    metrics_bind: str | None = None
    """Serve ``/metrics`` unauthenticated on this separate HOST:PORT (and not on the main bind)."""
    extender_enabled: bool = False
    """Answer the kube-scheduler extender (``/k8s/extender/*``, no token: the scheduler sends none)."""
    background_jobs: bool = True
    """Run the background jobs (stale sweep, retention, blob GC, unfinished re-appraisals) in the
    served workers; whichever worker of whichever instance holds a job's lease runs it."""
    sweep_interval: float = 30.0
    """Seconds between stale sweeps: a silent node leaves ``trusted`` within its freshness
    window plus this, even when nobody reads the inventory."""
    retention_interval: float = 3600.0
    """Seconds between retention passes (attestations, used nonces) and blob GC passes."""
    retain_success_days: float = 30.0
    """Trusted attestations are kept this long (a node's last and latest evidence always)."""
    retain_failure_days: float = 365.0
    """Failures, reboots and state changes are kept this long (open failures always)."""
    blob_grace: float = 3600.0
    """Seconds an unreferenced event log or verdict is kept before the blob GC deletes it."""
    lease_ttl: float = 30.0
    """Seconds a background job's lease lasts unrenewed: how soon another instance resumes the
    job of an instance that died or froze (a webhook receiver's delivery lease too, but never less
    than twice ``webhook_timeout``)."""
    statement_timeout: float = 10.0
    """PostgreSQL: the longest one statement may run (seconds), so nothing waits unboundedly."""
    idle_in_transaction_timeout: float = 10.0
    """PostgreSQL: a session idle inside a transaction this long (a frozen instance) is ended by
    the server, and its locks with it."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def hash_alg(self) -> HashAlg:
        return HashAlg.from_bank(self.bank)

    @property
    def freshness_window(self) -> float:
        return self.attest_interval * self.freshness_factor


_FIELDS = {f.name: f for f in dataclasses.fields(ServiceConfig) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    """Turn a YAML/env/flag value into the field's type; ConfigurationError names the key."""
    default = _FIELDS[name].default
    try:
        if name == "pcrs":
            return parse_pcr_list(value)
        if name == "webhooks":
            return parse_webhooks(value)
        if name == "bank":
            HashAlg.from_bank(str(value))
            return str(value)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{value!r} is not a boolean")
            return text in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"configuration {name}: {exc}") from None


def parse_webhooks(value: Any) -> tuple[WebhookReceiver, ...]:
    """A list of ``{name, url, secret | secret_file}`` (YAML, or JSON text from the environment)."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if not isinstance(value, list | tuple):
        raise ValueError("webhooks must be a list of {name, url, secret | secret_file}")
    out: list[WebhookReceiver] = []
    for item in value:
        if isinstance(item, WebhookReceiver):
            out.append(item)
            continue
        if not isinstance(item, dict) or set(item) - {"name", "url", "secret", "secret_file"}:
            raise ValueError(f"webhook {item!r}: keys are name, url, secret, secret_file")
        name, url = str(item.get("name") or ""), str(item.get("url") or "")
        if not name or not name.isprintable() or len(name) > 200:
            raise ValueError("every webhook needs a printable name of at most 200 characters")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook {name}: url must be http(s)://…")
        if not item.get("secret") and not item.get("secret_file"):
            raise ValueError(f"webhook {name}: a secret or secret_file is required")
        out.append(
            WebhookReceiver(name, url, str(item.get("secret") or ""), item.get("secret_file"))
        )
    if len({r.name for r in out}) != len(out):
        raise ValueError("webhook names must be unique")
    return tuple(out)


def parse_pcr_list(value: Any) -> tuple[int, ...]:
    """``[0, 1, 7]`` or ``"0-9,14"`` → a sorted tuple of PCR indices 0..23."""
    items: list[int] = []
    parts = value if isinstance(value, list | tuple) else str(value).split(",")
    for part in parts:
        text = str(part).strip()
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            items.extend(range(lo, hi + 1))
        elif text:
            items.append(int(text))
    if not items or any(not 0 <= p <= 23 for p in items):
        raise ValueError(f"PCR list {value!r} must name PCRs 0..23")
    return tuple(sorted(set(items)))


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    values: dict[str, Any] = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigurationError(f"{path}: the configuration must be a mapping")
        for key, value in (raw or {}).items():
            name = str(key).replace("-", "_")
            if name not in _FIELDS:
                raise ConfigurationError(f"{path}: unknown setting {key!r}")
            values[name] = _coerce(name, value)
    for key, value in (os.environ if env is None else env).items():
        if key.startswith("ASSAY_") and key[6:].lower() in _FIELDS:
            name = key[6:].lower()
            values[name] = _coerce(name, value)
    for name, value in (overrides or {}).items():
        if value is not None:
            if name not in _FIELDS:
                raise ConfigurationError(f"unknown setting {name!r}")
            values[name] = _coerce(name, value)
    config = ServiceConfig(**values)
    if config.max_token_lifetime <= 0:
        raise ConfigurationError("max_token_lifetime must be a positive number of seconds")
    if config.log_format not in LOG_FORMATS:
        raise ConfigurationError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    if config.console_idle_timeout <= 0 or config.console_session_lifetime <= 0:
        raise ConfigurationError("console session timeouts must be positive numbers of seconds")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigurationError("tls_cert and tls_key must be given together")
    return config

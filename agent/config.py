"""Agent configuration: defaults < YAML file < environment (ASSAY_AGENT_*) < command-line flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.algorithms import HashAlg
from assay.errors import ConfigurationError

DEFAULT_TCTI = "device:/dev/tpmrm0"
DEFAULT_EVENTLOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
DEFAULT_IMA_LOG = "/sys/kernel/security/ima/binary_runtime_measurements"
DEFAULT_PCRS = "sha256:0-9,14"
DEFAULT_STATE_DIR = "/var/lib/assay-agent"
ENV_PREFIX = "ASSAY_AGENT_"
MAX_PCR = 23

PcrSelection = Mapping[HashAlg, tuple[int, ...]]


def parse_pcr_selection(text: str) -> dict[HashAlg, tuple[int, ...]]:
    """Parse ``sha256:0-9,14`` (banks joined by ``+``) into sorted PCR indices per bank."""
    out: dict[HashAlg, tuple[int, ...]] = {}
    for part in text.strip().split("+"):
        bank, sep, spec = part.partition(":")
        if not sep or not spec.strip():
            raise ConfigurationError(
                f"PCR selection {text!r}: expected BANK:PCRS, e.g. sha256:0-9,14"
            )
        try:
            alg = HashAlg.from_bank(bank)
        except ValueError as exc:
            raise ConfigurationError(f"PCR selection {text!r}: {exc}") from None
        out[alg] = tuple(sorted(_pcr_indices(spec, text)))
    return out


def _pcr_indices(spec: str, text: str) -> set[int]:
    pcrs: set[int] = set()
    for item in spec.split(","):
        lo, dash, hi = item.strip().partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise ConfigurationError(f"PCR selection {text!r}: bad PCR range {item!r}") from None
        if not 0 <= first <= last <= MAX_PCR:
            raise ConfigurationError(
                f"PCR selection {text!r}: PCR range {item!r} outside 0-{MAX_PCR}"
            )
        pcrs.update(range(first, last + 1))
    return pcrs


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent needs; built by load_config, never mutated."""

    tcti: str = DEFAULT_TCTI
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    eventlog: Path = Path(DEFAULT_EVENTLOG)
    ima_log: Path | None = None
    verifier: str | None = None
    node: str = field(default_factory=lambda: os.uname().nodename)
    labels: Mapping[str, str] = field(default_factory=dict)
    enroll_token: str | None = None
    pcrs: str = DEFAULT_PCRS
    interval: float = 60.0
    jitter: float = 0.1
    max_backoff: float = 300.0
    timeout: float = 10.0
    ek_type: str = "auto"
    ak_alg: str = "ecc"
    tls_ca: str | None = None
    tls_pin: str | None = None
    allow_insecure_http: bool = False
    log_format: str = "text"

    @property
    def pcr_selection(self) -> dict[HashAlg, tuple[int, ...]]:
        return parse_pcr_selection(self.pcrs)


_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig)}
_FLOATS = {"interval", "jitter", "max_backoff", "timeout"}
_PATHS = {"state_dir", "eventlog", "ima_log"}
_BOOLS = {"allow_insecure_http"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(name: str, value: Any, source: str) -> Any:
    if name not in _FIELDS:
        raise ConfigurationError(f"{source}: unknown setting {name!r}")
    try:
        if name in _FLOATS:
            number = float(value)
            if number < 0:
                raise ValueError("negative")
            return number
        if name in _PATHS:
            return Path(str(value))
        if name in _BOOLS:
            return _bool(value)
        if name == "labels":
            return _labels(value)
        if name == "ek_type" and value not in ("auto", "rsa", "ecc"):
            raise ValueError("expected auto, rsa or ecc")
        if name == "ak_alg" and value not in ("ecc", "rsa"):
            raise ValueError("expected ecc or rsa")
        if name == "log_format" and value not in ("text", "json"):
            raise ValueError("expected text or json")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{source}: bad value for {name}: {exc}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"{value!r} is not true or false")
    return text in _TRUE


def _labels(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    labels: dict[str, str] = {}
    for item in str(value).split(","):
        if item.strip():
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"label {item!r} is not KEY=VALUE")
            labels[key.strip()] = val.strip()
    return labels


def _from_file(path: Path) -> dict[str, Any]:
    import yaml  # only when a config file is used: the agent stays resident on every node

    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"config file {path}: not valid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigurationError(f"config file {path}: expected a mapping at the top level")
    return {
        str(k).replace("-", "_"): _coerce(str(k).replace("-", "_"), v, str(path))
        for k, v in raw.items()
    }


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            name = key[len(ENV_PREFIX) :].lower()
            out[name] = _coerce(name, value, f"environment {key}")
    return out


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Merge defaults, the YAML file, ASSAY_AGENT_* variables and flags (``None`` flags are unset).

    The file comes from ``config_file`` or else ``ASSAY_AGENT_CONFIG``; the PCR selection is
    validated here so a bad one is a configuration error before the TPM is touched.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        values.update(_from_file(Path(path)))
    values.update(_from_env(env))
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"option --{name.replace('_', '-')}")
    config = AgentConfig(**values)
    parse_pcr_selection(config.pcrs)
    return config

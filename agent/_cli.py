"""``assay-agent`` / ``python -m agent``: one parser, one error handler, distinct exit codes.

Every failure ends as one line on stderr and the exit code of its class (docs/agent.md); no
traceback reaches the operator.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from assay.errors import AssayError, ConfigurationError, MalformedEvidence
from assay.evidence import DEFAULT_CAPS

from . import __version__
from ._log import run_log
from .client import AttestationResult, VerifierClient
from .config import AgentConfig, load_config, parse_pcr_selection
from .errors import (
    EXIT_EVENTLOG_UNREADABLE,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_UNTRUSTED,
    EXIT_USAGE,
    AgentError,
)
from .evidence import read_log
from .node import attest, enroll, ensure_ak, own_ear, run
from .state import AkContextFile
from .tpm import EK_TEMPLATES, QuoteResult, Tpm, fapi_built

_VERDICT_EXIT = {"trusted": EXIT_OK, "untrusted": EXIT_UNTRUSTED, "unknown": EXIT_UNKNOWN}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _emit(args: argparse.Namespace, data: Mapping[str, Any], human: Callable[[], None]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None, sort_keys=False))
    else:
        human()


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    p.add_argument("--tcti", help="device:/dev/tpmrm0 (default), swtpm:host=H,port=P, tabrmd")
    p.add_argument("--state-dir", help="where the AK and enrollment are kept (0600)")
    p.add_argument("--eventlog", help="measured-boot log (default: securityfs)")
    p.add_argument("--ima-log", help="IMA log to send as well")
    p.add_argument("--config", help="YAML configuration file")
    p.add_argument("--node", help="node name (default: host name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="assay-agent", parents=[common], description=__doc__)
    parser.add_argument("--version", action="version", version=f"assay-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    tpm = sub.add_parser("tpm", parents=[common], help="TPM information")
    tpm.add_argument("what", choices=["info"])
    ek = sub.add_parser("ek", parents=[common], help="endorsement key")
    ek.add_argument("what", choices=["show"])
    ek.add_argument("--ek-type", choices=["auto", *EK_TEMPLATES], default=argparse.SUPPRESS)
    ak = sub.add_parser("ak", parents=[common], help="attestation key")
    ak.add_argument("what", choices=["create"])
    ak.add_argument("--ak-alg", choices=["ecc", "rsa"], default=argparse.SUPPRESS)
    ak.add_argument("--ek-type", choices=["auto", *EK_TEMPLATES], default=argparse.SUPPRESS)
    ak.add_argument("--force", action="store_true", help="replace an existing AK")
    quote = sub.add_parser("quote", parents=[common], help="quote PCRs with the AK")
    quote.add_argument("--nonce", required=True, help="hex, at most 64 bytes")
    quote.add_argument("--pcrs", default=argparse.SUPPRESS, help="e.g. sha256:0-9,14")
    evlog = sub.add_parser("eventlog", parents=[common], help="measured-boot log")
    evlog.add_argument("what", choices=["show"])
    for name, text in (
        ("enroll", "enroll with the verifier"),
        ("attest", "attest once"),
        ("run", "attest periodically"),
        ("ear", "this node's signed attestation result, fetched with an AK proof"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("--verifier", default=argparse.SUPPRESS, help="verifier base URL")
        p.add_argument("--token", dest="enroll_token", default=argparse.SUPPRESS)
        p.add_argument("--label", action="append", default=argparse.SUPPRESS, help="KEY=VALUE")
        if name == "run":
            p.add_argument("--interval", type=float, default=argparse.SUPPRESS, help="seconds")
            p.add_argument("--count", type=int, default=None, help="stop after N rounds")
    return parser


def _config(args: argparse.Namespace) -> AgentConfig:
    flags = {
        k: getattr(args, k, None)
        for k in ("tcti", "state_dir", "eventlog", "ima_log", "node", "verifier", "enroll_token")
    }
    flags.update({k: getattr(args, k, None) for k in ("pcrs", "interval", "ek_type", "ak_alg")})
    labels = getattr(args, "label", None)
    flags["labels"] = ",".join(labels) if labels else None
    return load_config(flags, config_file=getattr(args, "config", None))


def _client(config: AgentConfig) -> VerifierClient:
    if not config.verifier:
        raise ConfigurationError(
            "no verifier URL (--verifier, ASSAY_AGENT_VERIFIER or config file)"
        )
    return VerifierClient(
        config.verifier,
        timeout=config.timeout,
        tls_ca=config.tls_ca,
        tls_pin=config.tls_pin,
        allow_insecure_http=config.allow_insecure_http,
    )


def cmd_tpm_info(args: argparse.Namespace, config: AgentConfig) -> int:
    with Tpm(config.tcti) as tpm:
        info = tpm.info()
    data = {
        "tcti": config.tcti,
        "manufacturer": info.manufacturer,
        "vendor": info.vendor,
        "firmware_version": info.firmware_version,
        "pcr_banks": {alg.bank: list(p) for alg, p in info.pcr_banks.items()},
    }
    banks = ", ".join(f"{alg.bank} ({len(p)} PCRs)" for alg, p in info.pcr_banks.items())
    _emit(args, data, lambda: print(
        f"TPM {info.manufacturer} {info.vendor} firmware {info.firmware_version}\nbanks: {banks}"
    ))  # fmt: skip
    return EXIT_OK


def cmd_ek_show(args: argparse.Namespace, config: AgentConfig) -> int:
    with Tpm(config.tcti) as tpm:
        ek = tpm.endorsement_key(config.ek_type)
    data = {
        "kind": ek.kind,
        "template": EK_TEMPLATES[ek.kind],
        "name": ek.name.hex(),
        "public": _b64(ek.public),
        "cert_index": f"0x{ek.cert_index:08x}",
        "cert": _b64(ek.cert) if ek.cert else None,
    }
    cert = f"{len(ek.cert)}-byte certificate at NV 0x{ek.cert_index:08x}" if ek.cert else "none"
    _emit(args, data, lambda: print(
        f"EK {ek.kind} (TCG template {EK_TEMPLATES[ek.kind]})\nname {ek.name.hex()}\n"
        f"certificate: {cert}"
    ))  # fmt: skip
    return EXIT_OK


def cmd_ak_create(args: argparse.Namespace, config: AgentConfig) -> int:
    with Tpm(config.tcti) as tpm:
        ak, created = ensure_ak(config, tpm, force=getattr(args, "force", False))
    data = {"created": created, "alg": ak.alg, "ek_kind": ak.ek_kind, "name": ak.name.hex(),
            "public": _b64(ak.public), "state_dir": str(config.state_dir)}  # fmt: skip
    verb = "created" if created else "reusing saved"
    _emit(
        args, data, lambda: print(f"{verb} AK {ak.alg} under the {ak.ek_kind} EK: {ak.name.hex()}")
    )
    return EXIT_OK


def quote_json(quote: QuoteResult) -> dict[str, Any]:
    """The ``quote --json`` document: exactly attest, signature, ak_public, nonce, pcrs."""
    return {
        "attest": _b64(quote.attest),
        "signature": _b64(quote.signature),
        "ak_public": _b64(quote.ak_public),
        "nonce": quote.nonce.hex(),
        "pcrs": {
            alg.bank: {str(i): v.hex() for i, v in sorted(values.items())}
            for alg, values in quote.pcrs.items()
        },
    }


def cmd_quote(args: argparse.Namespace, config: AgentConfig) -> int:
    try:
        nonce = bytes.fromhex(args.nonce)
    except ValueError:
        raise ConfigurationError(f"--nonce {args.nonce!r} is not hex") from None
    selection = parse_pcr_selection(config.pcrs)
    with Tpm(config.tcti) as tpm:
        ak, _ = ensure_ak(config, tpm)
        quote = tpm.quote(ak, nonce, selection, saved=AkContextFile(config.state_dir))

    def human() -> None:
        print(f"quote by AK {ak.name.hex()} over nonce {nonce.hex()}")
        for alg, values in quote.pcrs.items():
            for i, v in sorted(values.items()):
                print(f"  {alg.bank}:{i:<2} {v.hex()}")

    _emit(args, quote_json(quote), human)
    return EXIT_OK


def cmd_eventlog_show(args: argparse.Namespace, config: AgentConfig) -> int:
    from assay.eventlog import parse_event_log, replay

    data = read_log(config.eventlog, DEFAULT_CAPS.event_log)
    log = parse_event_log(data)
    rep = replay(log)
    doc = {
        "path": str(config.eventlog),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": log.format,
        "banks": [a.bank for a in log.banks],
        "events": len(log.events),
        "start_locality": rep.start_locality,
        "replay": rep.to_json()["banks"],
    }

    def human() -> None:
        print(f"{config.eventlog}: {len(data)} bytes, sha256 {doc['sha256']}")
        print(f"{log.format} log, banks {', '.join(doc['banks'])}, {len(log.events)} events, "
              f"PCR0 from locality {rep.start_locality}")  # fmt: skip
        for event in log.events:
            print(
                f"  {event.index:>4} PCR{event.pcr if event.pcr < 24 else '-':<3} {event.type_name}"
            )

    _emit(args, doc, human)
    return EXIT_OK


def cmd_enroll(args: argparse.Namespace, config: AgentConfig) -> int:
    client = _client(config)
    try:
        enrollment = enroll(config, client)
    finally:
        client.close()
    _emit(args, {"node": enrollment.node, "enrollment_id": enrollment.enrollment_id,
                 "ak_name": enrollment.ak_name, "state": "enrolled"},
          lambda: print(f"node {enrollment.node} enrolled ({enrollment.enrollment_id})"))  # fmt: skip
    return EXIT_OK


def _result_json(result: AttestationResult) -> dict[str, Any]:
    return {
        "attestation_id": result.attestation_id,
        "status": result.status,
        "reason": result.reason,
        "node_state": result.node_state,
        "checks": list(result.checks),
    }


def _print_result(args: argparse.Namespace, result: AttestationResult) -> None:
    _emit(args, _result_json(result), lambda: print(
        f"{result.status}: {result.reason or '-'} (node {result.node_state or '?'}, "
        f"attestation {result.attestation_id})"
    ))  # fmt: skip
    sys.stdout.flush()


def cmd_attest(args: argparse.Namespace, config: AgentConfig) -> int:
    client = _client(config)
    try:
        result = attest(config, client)
    finally:
        client.close()
    _print_result(args, result)
    return _VERDICT_EXIT[result.status]


def cmd_ear(args: argparse.Namespace, config: AgentConfig) -> int:
    client = _client(config)
    try:
        token = own_ear(config, client)
    finally:
        client.close()
    _emit(args, {"node": config.node, "ear": token}, lambda: print(token))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, config: AgentConfig) -> int:
    client = _client(config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_OK))
    log = run_log(config.log_format, config.node)
    if fapi_built():
        log.notice(
            "tpm2-pytss is built with FAPI, which maps some 30 libraries more into this agent: "
            "python -m agent.lean_tss rebuilds it without (docs/agent.md)"
        )
    # With JSON logs each verdict is one event line; otherwise printed as `attest` prints it.
    report = log.attested if config.log_format == "json" else lambda r: _print_result(args, r)
    try:
        run(config, client, iterations=args.count, report=report, log=log)
    finally:
        client.close()
    return EXIT_OK


_COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace, AgentConfig], int]] = {
    ("tpm", "info"): cmd_tpm_info,
    ("ek", "show"): cmd_ek_show,
    ("ak", "create"): cmd_ak_create,
    ("quote", None): cmd_quote,
    ("eventlog", "show"): cmd_eventlog_show,
    ("enroll", None): cmd_enroll,
    ("attest", None): cmd_attest,
    ("run", None): cmd_run,
    ("ear", None): cmd_ear,
}


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and turn every Assay error into one line and its exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
        return _COMMANDS[(args.command, getattr(args, "what", None))](args, config)
    except AgentError as exc:
        return _fail(exc, exc.exit_code)
    except MalformedEvidence as exc:
        return _fail(exc, EXIT_EVENTLOG_UNREADABLE)
    except (ConfigurationError, AssayError) as exc:
        return _fail(exc, EXIT_USAGE)
    except KeyboardInterrupt:
        return 130


def _fail(exc: Exception, code: int) -> int:
    message = " ".join(str(exc).split())
    print(f"assay-agent: {message}", file=sys.stderr)
    return code

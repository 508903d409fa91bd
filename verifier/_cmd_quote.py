"""``quote verify``: check a TPM 2.0 quote against an AK, a nonce and (optionally) PCR values."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.tpm2 import (
    PcrSelection,
    QuoteWithUncheckedPcrs,
    VerifiedQuote,
    parse_ak,
    parse_attest,
    parse_signature,
    verify_quote,
    verify_quote_without_pcrs,
)
from assay.tpm2.attest import MAX_ATTEST_SIZE, MAX_SIGNATURE_SIZE

from ._cli import EXIT_INVALID, EXIT_OK, read_input

MAX_AK_FILE = 16 * 1024
MAX_PCRS_FILE = 1024 * 1024

_PCRS_HELP = (
    "PCR values in the corpus expected_pcrs.json schema "
    '({"pcrs": {"sha256": {"0": "<hex>", ...}, ...}}). Such files hold whole banks: exactly the '
    "(bank, PCR) pairs the quote selects are taken from it and checked against the quote's PCR "
    "digest; the others are ignored, and the output lists the values used. A selected PCR the "
    "file lacks makes the quote invalid (code pcr_selection_mismatch). Without --pcrs, everything "
    'but the PCR digest is checked and the output says "pcrs_checked": false.'
)


def register(sub: Any) -> None:
    group = sub.add_parser("quote", help="verify TPM 2.0 quotes")
    commands = group.add_subparsers(dest="quote_command", metavar="SUBCOMMAND", required=True)
    verify = commands.add_parser(
        "verify",
        help="verify a quote's signature, nonce and PCR digest",
        description="Verify a TPM 2.0 quote: AK signature and scheme, magic TPM_GENERATED, type "
        "ATTEST_QUOTE, nonce, and that the PCR digest covers exactly the supplied values. "
        "Exit 0 valid, 1 invalid, 2 malformed input.",
    )
    verify.add_argument(
        "--ak-public",
        required=True,
        metavar="FILE",
        help="the AK: marshalled TPM2B_PUBLIC or TPMT_PUBLIC (detected), or a PEM/DER public key",
    )
    verify.add_argument(
        "--attest", required=True, metavar="FILE", help="TPMS_ATTEST or TPM2B_ATTEST (detected)"
    )
    verify.add_argument("--signature", required=True, metavar="FILE", help="TPMT_SIGNATURE")
    verify.add_argument(
        "--nonce", required=True, metavar="HEX", help="the nonce the verifier chose (hex)"
    )
    verify.add_argument("--pcrs", metavar="FILE.json", help=_PCRS_HELP)
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(func=_verify)


def _read_parsed(path: str, what: str, limit: int, parse: Any) -> Any:
    """Read and parse one input; a parse error names the file."""
    data = read_input(path, what, limit=limit)
    try:
        return data, parse(data)
    except MalformedEvidence as exc:
        raise MalformedEvidence(f"{what}: {exc}", where=path) from exc


def load_pcrs_json(path: str) -> dict[HashAlg, dict[int, bytes]]:
    """PCR values from an expected_pcrs.json file; anything off-schema is MalformedEvidence."""
    text = read_input(path, "PCR values", limit=MAX_PCRS_FILE)
    try:
        doc = json.loads(text)
        banks = doc["pcrs"]
        if not isinstance(banks, dict):
            raise TypeError("'pcrs' is not an object")
        out: dict[HashAlg, dict[int, bytes]] = {}
        for bank_name, values in banks.items():
            bank = HashAlg.from_bank(bank_name)
            if not isinstance(values, dict):
                raise TypeError(f"bank {bank_name} is not an object")
            out[bank] = {int(pcr): bytes.fromhex(value) for pcr, value in values.items()}
            for pcr in out[bank]:
                if not 0 <= pcr < 256:
                    raise ValueError(f"PCR index {pcr} out of range")
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MalformedEvidence(f"not an expected_pcrs.json file: {exc}", where=path) from None


def select_pcrs(
    selection: PcrSelection, available: Mapping[HashAlg, Mapping[int, bytes]]
) -> dict[HashAlg, dict[int, bytes]]:
    """Exactly the selected (bank, PCR) values the file has; missing ones are left out (and the
    quote then fails with pcr_selection_mismatch)."""
    out: dict[HashAlg, dict[int, bytes]] = {}
    for bank, indices in selection.banks:
        values = available.get(bank, {})
        chosen = {pcr: values[pcr] for pcr in indices if pcr in values}
        if chosen:
            out[bank] = chosen
    return out


def _verify(args: argparse.Namespace) -> int:
    _, ak = _read_parsed(args.ak_public, "AK public key", MAX_AK_FILE, parse_ak)
    attest, parsed = _read_parsed(args.attest, "attestation", MAX_ATTEST_SIZE + 2, parse_attest)
    signature, _ = _read_parsed(args.signature, "signature", MAX_SIGNATURE_SIZE, parse_signature)
    try:
        nonce = bytes.fromhex(args.nonce)
    except ValueError:
        raise MalformedEvidence("--nonce is not hexadecimal", where="command line") from None
    used: dict[HashAlg, dict[int, bytes]] | None = None
    result: dict[str, Any] = {"valid": False, "reason": None, "code": None}
    quote: VerifiedQuote | QuoteWithUncheckedPcrs | None = None
    try:
        if args.pcrs is None:
            quote = verify_quote_without_pcrs(attest, signature, ak, nonce)
        else:
            selection = parsed.quote.selection if parsed.quote else PcrSelection(())
            used = select_pcrs(selection, load_pcrs_json(args.pcrs))
            try:
                quote = verify_quote(attest, signature, ak, nonce, used)
            except MalformedEvidence as exc:
                raise MalformedEvidence(str(exc), where=args.pcrs) from exc
    except VerificationFailed as exc:
        result.update(reason=str(exc), code=exc.code)
    result.update(_describe(quote, ak.from_spki))
    _print(result, args.json)
    return EXIT_OK if result["valid"] else EXIT_INVALID


def _describe(
    quote: VerifiedQuote | QuoteWithUncheckedPcrs | None, ak_from_spki: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"pcrs_checked": False, "pcrs_used": None}
    if ak_from_spki:
        out["ak_attributes_checked"] = False
    if quote is None:
        return out
    out.update(
        valid=True,
        reason=(
            "quote verified: signature, nonce and PCR digest"
            if isinstance(quote, VerifiedQuote)
            else "signature and nonce verified; PCR values NOT checked (no --pcrs given)"
        ),
        reset_count=quote.reset_count,
        restart_count=quote.restart_count,
        safe=quote.safe,
        clock=quote.clock,
        firmware_version=quote.firmware_version,
        signature_hash=quote.hash_alg.bank,
        pcr_selection=quote.selection.to_json(),
    )
    if isinstance(quote, VerifiedQuote):
        out["pcrs_checked"] = True
        out["pcrs_used"] = {
            bank.bank: {str(pcr): value.hex() for pcr, value in values.items()}
            for bank, values in quote.pcrs.items()
        }
    return out


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=1))
        return
    print(f"quote: {'VALID' if result['valid'] else 'INVALID'}")
    if result.get("reason"):
        print(f"  reason: {result['reason']}")
    if result.get("code"):
        print(f"  code: {result['code']}")
    if not result["valid"]:
        return
    for key in ("reset_count", "restart_count", "safe", "clock", "firmware_version"):
        print(f"  {key}: {result[key]}")
    selection = result["pcr_selection"]
    print("  selection: " + " ".join(f"{b}:{','.join(map(str, p))}" for b, p in selection.items()))
    print(f"  PCRs checked: {'yes' if result['pcrs_checked'] else 'NO (no --pcrs given)'}")
    if result.get("ak_attributes_checked") is False:
        print("  AK given as a bare public key: its TPM attributes were not checked")

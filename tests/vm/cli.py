"""``scripts/vm-node``: build and boot measured-boot VM nodes from Debian packages.

vm-node list                         the variants
vm-node build [VARIANT ...]          fetch .debs and build the images (cached)
vm-node boot VARIANT --out DIR       boot once; DIR gets eventlog.bin (the guest's log),
                                     pcrs.json (read over the host TCTI), console.log, ca/,
                                     and a runtime node's binary_ and ascii_runtime_measurements
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from assay.algorithms import HashAlg
from assay.errors import AssayError
from assay.eventlog import parse_event_log, replay

from . import builder
from .runner import VmNode

EXIT_OK, EXIT_ERROR, EXIT_MISMATCH = 0, 2, 1


def _cmd_list(args: argparse.Namespace) -> int:
    for v in builder.VARIANTS.values():
        sb = "Secure Boot on " if v.secure_boot else "Secure Boot off"
        print(f"{v.name:12} {sb}  {v.description}")
    return EXIT_OK


def _cmd_build(args: argparse.Namespace) -> int:
    for name in args.variants or list(builder.VARIANTS):
        image = builder.build(_variant(name))
        print(f"{name}: {image.esp}")
    return EXIT_OK


def _variant(name: str) -> builder.Variant:
    if name not in builder.VARIANTS:
        raise builder.VmBuildError(f"unknown variant {name!r} (one of {sorted(builder.VARIANTS)})")
    return builder.VARIANTS[name]


def _cmd_boot(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    image = builder.build(_variant(args.variant))
    work = out / "run"
    shutil.rmtree(work, ignore_errors=True)
    with VmNode(image, work, out / "ca") as node:
        result = node.boot()
        with node.tpm() as tpm:
            banks, _ = tpm.active_banks()
            _, pcrs = tpm.pcr_read(banks)
    (out / "eventlog.bin").write_bytes(result.event_log)
    if result.ima_log is not None:  # a runtime node's IMA list, as the kernel wrote it
        (out / "binary_runtime_measurements").write_bytes(result.ima_log)
        (out / "ascii_runtime_measurements").write_bytes(result.ima_ascii or b"")
    (out / "console.log").write_text(result.console)
    (out / "pcrs.json").write_text(
        json.dumps(
            {
                "source": f"vm-node boot {args.variant}: PCR_Read over the host TCTI after power-off",
                "pcrs": {
                    a.bank: {str(p): v.hex() for p, v in sorted(vals.items())}
                    for a, vals in pcrs.items()
                },
            },
            indent=1,
        )
    )
    shutil.rmtree(work, ignore_errors=True)
    replayed = replay(parse_event_log(result.event_log)).pcrs
    bad = [
        f"{alg.bank}:{pcr}"
        for alg, values in replayed.items()
        for pcr, value in values.items()
        if pcrs.get(HashAlg(alg), {}).get(pcr) != value
    ]
    print(f"{args.variant}: booted in {result.seconds:.1f} s, log {len(result.event_log)} bytes")
    print(f"guest command line: {result.guest_cmdline}")
    if bad:
        print(f"replay differs from the TPM in {', '.join(bad)}")
        return EXIT_MISMATCH
    print("the log replays to the TPM's PCRs in every bank")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vm-node", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the variants").set_defaults(func=_cmd_list)
    b = sub.add_parser("build", help="build images (cached in $ASSAY_VM_CACHE)")
    b.add_argument("variants", nargs="*")
    b.set_defaults(func=_cmd_build)
    r = sub.add_parser("boot", help="boot one node and keep its log and PCRs")
    r.add_argument("variant")
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=_cmd_boot)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except AssayError as exc:
        print(f"vm-node: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())

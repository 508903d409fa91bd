"""Long run of the adversarial suite (tests/adversarial/generate.py) over several real logs.

For each log: capture its golden set, then for every event of every relied-on PCR an evil boot in a
real swtpm, a genuine quote, and every generated lie. Prints the counts; exits 1 if any lie was
trusted (or an error other than the project's own was raised).
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assay.algorithms import HashAlg  # noqa: E402
from assay.eventlog import assume_quoted_for_review, parse_event_log  # noqa: E402
from golden.capture import capture  # noqa: E402
from testkit import swtpm  # noqa: E402
from tests.adversarial.generate import quote_truth, run, truths  # noqa: E402
from verifier.appraisal import compile_golden  # noqa: E402

CORPUS = ROOT.parent / "shared" / "eventlogs"
LOGS = (
    "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin",
    "go-tpm-tools/cos-101-amd-sev.bin",
    "python3-uefi-eventlog/rhcos.bin",
    "keylime/binary_bios_measurements",
)


def main() -> int:
    names = sys.argv[1:] or LOGS
    trusted: list[str] = []
    total = 0
    with tempfile.TemporaryDirectory(prefix="assay-adversarial-") as tmp:
        work = Path(tmp)
        template = swtpm.provision(work / "tpm", work / "ca")
        for name in names:
            data = (CORPUS / name).read_bytes()
            vlog = assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256)
            policy = compile_golden(
                [capture(vlog, name="self", version="1")], now=dt.datetime.now(dt.UTC)
            )
            start, boots, lies = time.perf_counter(), 0, 0
            for truth in truths(data, policy.relied_pcrs):
                quote = quote_truth(
                    template, work / f"{name.replace('/', '_')}-{boots}", truth.data
                )
                boots += 1
                lies += run(
                    truth, quote, policy, lambda what, n=name: trusted.append(f"{n}: {what}")
                )
            total += lies
            took = time.perf_counter() - start
            print(f"{name}: {boots} evil boots quoted by swtpm, {lies} lies appraised, {took:.1f}s")
    for what in trusted:
        print(f"TRUSTED: {what}")
    print(f"adversarial: {total} lies, {len(trusted)} trusted")
    return 1 if trusted else 0


if __name__ == "__main__":
    sys.exit(main())

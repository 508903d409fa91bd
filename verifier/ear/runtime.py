"""The EAR ``runtime`` submodule: what the node ran after boot (IMA) and the SELinux state it ran
in, judged against runtime policies — beside ``boot`` in the same token.

Present only for nodes a runtime policy applies to (a node without one says nothing about its
runtime, and its token is what it always was). Derived, like ``boot``, from the node's effective
state and its reason code: the verdict's reason is the first failing boot check, else the first
failing runtime check, so a runtime code means the boot itself passed.
"""

from __future__ import annotations

from .claims import Appraisal, EarStatus, TrustVector, appraisal_for

RUNTIME = "runtime"
_RUNTIME_PREFIXES = ("ima_", "selinux_")
_TAMPERED = ("ima_pcr_mismatch", "ima_log_malformed", "ima_boot_aggregate")
_CONFIG = ("selinux_",)


def is_runtime_code(code: str) -> bool:
    """A reason code of the runtime appraisal (``ima_*``, ``selinux_*``)."""
    return code.startswith(_RUNTIME_PREFIXES)


def _vector_for_failure(code: str) -> TrustVector:
    """AR4SI: 99 the evidence failed validation (the IMA list does not replay to the quote, or
    is not this boot's), 96 an executable or configuration that policy contraindicates."""
    if code.startswith(_TAMPERED):
        return TrustVector(2, executables=99)
    if code.startswith(_CONFIG):
        return TrustVector(2, configuration=96)
    return TrustVector(2, executables=96)


def runtime_appraisal_for(state: str, reason_code: str, policies: tuple[str, ...]) -> Appraisal:
    """The runtime submodule for a node's effective state (``stale`` already computed)."""
    if state == "trusted":
        # 2: only approved executables were loaded, every one measured and judged.
        return Appraisal(EarStatus.AFFIRMING, TrustVector(2, 2, 2), policies, "runtime")
    if state == "quarantined":
        return Appraisal(
            EarStatus.CONTRAINDICATED, TrustVector(instance_identity=96), policies, "runtime"
        )
    if state in ("untrusted", "unknown") and is_runtime_code(reason_code):
        if state == "unknown":
            return Appraisal(EarStatus.NONE, TrustVector(2), policies, "runtime")
        return Appraisal(
            EarStatus.CONTRAINDICATED, _vector_for_failure(reason_code), policies, "runtime"
        )
    return Appraisal(EarStatus.NONE, TrustVector(), policies, "runtime")


def boot_appraisal_for(state: str, reason_code: str, golden: tuple[str, ...]) -> Appraisal:
    """The boot submodule when a runtime check decided the verdict: the boot itself passed."""
    if state in ("untrusted", "unknown") and is_runtime_code(reason_code):
        return appraisal_for("trusted", reason_code, golden)
    return appraisal_for(state, reason_code, golden)

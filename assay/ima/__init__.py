"""Linux IMA measurement lists: parse (unverified), replay per bank, verify against a quote.

``parse_ima_log`` turns untrusted bytes (binary ``binary_runtime_measurements`` or the ASCII form,
detected) into an :class:`ImaLog` whose every exposed field is covered by its entry's template
hash. ``replay_ima`` / ``replay_from`` compute PCR values from boot or from a stored state (the
incremental path: only new entries). ``verify_ima`` checks a replay against a ``VerifiedQuote`` and
yields a :class:`VerifiedImaLog`, what runtime policy judges; ``assume_quoted_for_review`` yields a
:class:`ReviewedImaLog` for offline use. ``boot_aggregate`` says what the first entry must hold
given quoted PCR0–9. ``verify_signature`` (ima-sig v2/v3) and ``verify_modsig`` (an appended
PKCS#7) check a signature with the keys a caller trusts; ``KeyringLoads`` keeps the keys the
list loaded onto kernel keyrings, for the chunks after them. No I/O and no policy here.
"""

from ._critical import SELINUX_POLICY_HASH, SELINUX_STATE, SelinuxState, parse_selinux_state
from ._formats import BANK_OF_NAME, TEMPLATES, template_fields
from ._keyring import KeyLoad, KeyringLoads, is_keyring_name
from ._modsig import ModuleSignature, parse_module_signature, verify_modsig
from ._parse import (
    MAX_IMA_LOG_SIZE,
    ImaEntry,
    ImaLog,
    ModSig,
    escape_name,
    parse_ima_log,
)
from ._replay import (
    ALL_BANKS,
    MODES,
    ExtendMode,
    ImaReplay,
    ImaReplayError,
    replay_from,
    replay_ima,
)
from ._sig import (
    CERTIFICATE_ERRORS,
    ImaKey,
    ImaSignature,
    file_id_hash,
    key_of_certificate,
    keyid_of,
    load_key,
    parse_certificate,
    parse_signature,
    verify_signature,
)
from ._verify import (
    BOOT_AGGREGATE,
    BootAggregate,
    ImaEvidence,
    ReviewedImaLog,
    VerifiedImaLog,
    assume_quoted_for_review,
    boot_aggregate,
    verify_ima,
)

__all__ = [
    "ALL_BANKS",
    "BANK_OF_NAME",
    "BOOT_AGGREGATE",
    "CERTIFICATE_ERRORS",
    "MAX_IMA_LOG_SIZE",
    "MODES",
    "SELINUX_POLICY_HASH",
    "SELINUX_STATE",
    "TEMPLATES",
    "BootAggregate",
    "ExtendMode",
    "ImaEntry",
    "ImaEvidence",
    "ImaKey",
    "ImaLog",
    "ImaReplay",
    "ImaReplayError",
    "ImaSignature",
    "KeyLoad",
    "KeyringLoads",
    "ModSig",
    "ModuleSignature",
    "ReviewedImaLog",
    "SelinuxState",
    "VerifiedImaLog",
    "assume_quoted_for_review",
    "boot_aggregate",
    "escape_name",
    "file_id_hash",
    "is_keyring_name",
    "key_of_certificate",
    "keyid_of",
    "load_key",
    "parse_certificate",
    "parse_ima_log",
    "parse_module_signature",
    "parse_selinux_state",
    "parse_signature",
    "replay_from",
    "replay_ima",
    "template_fields",
    "verify_ima",
    "verify_modsig",
    "verify_signature",
]

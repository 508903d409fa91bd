"""The agent's libraries: what a running agent maps into memory.

scripts/_setup.sh (and scripts/install-agent, which nodes use) builds tpm2-pytss without FAPI. A
build with FAPI maps libtss2-fapi and, through it, libcurl, GnuTLS, Kerberos, LDAP and some 25
other libraries into every agent: 5.5 MB of a resident set whose target is 40 MB (docs/agent.md).
"""

from __future__ import annotations

import subprocess
import sys

# Imports what `agent run` imports, then lists the files mapped into the process.
_PROBE = """
import agent.__main__, agent.client, agent.node, agent.tpm, tpm2_pytss
print("FAPI" if hasattr(tpm2_pytss, "FAPI") else "no FAPI")
for line in open("/proc/self/maps"):
    parts = line.split()
    if len(parts) > 5:
        print(parts[5])
"""


def _agent_mappings() -> tuple[str, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return out[0], {path.rsplit("/", 1)[-1] for path in out[1:]}


def test_agent_tpm2_pytss_is_built_without_fapi() -> None:
    fapi, libraries = _agent_mappings()
    assert fapi == "no FAPI"
    # What it needs is there: ESAPI, the TCTI loader, marshalling.
    assert any(lib.startswith("libtss2-esys.so") for lib in libraries)
    assert any(lib.startswith("libtss2-tctildr.so") for lib in libraries)
    # What FAPI would bring is not.
    unwanted = ("libtss2-fapi.so", "libcurl", "libgnutls", "libkrb5", "libldap", "libssh2")
    assert [lib for lib in libraries if lib.startswith(unwanted)] == []

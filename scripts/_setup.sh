# Shared set-up for scripts/demo, scripts/test and scripts/bench: sourced, not run.
# Installs what the project needs on a fresh Debian 12 machine (as root) and activates .venv.
# Idempotent and quick when everything is already there.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

# Debian packages: the TPM simulator and TSS for the agent, tools used as independent oracles.
APT_BASE=(python3-venv python3-dev gcc pkg-config libtss2-dev swtpm swtpm-tools tpm2-tools)

log() { printf '[assay] %s\n' "$*" >&2; }

ensure_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages: ${missing[*]} (run as root, or install them)"; return 1
    fi
    log "installing Debian packages: ${missing[*]}"
    if [ -z "${ASSAY_APT_UPDATED:-}" ]; then
        apt-get update -qq >/dev/null || { log "apt-get update failed"; return 1; }
        export ASSAY_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { log "apt-get install ${missing[*]} failed"; return 1; }
}

# Debian's own Python 3.11 (built with PGO and LTO) parses and replays event logs about 20% faster
# than a self-built one and gives the agent a smaller resident set; any python3 >= 3.11 works.
PYTHON=${ASSAY_PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3

# The agent's tpm2-pytss is built from source against libtss2 with FAPI hidden from pkg-config. The
# agent uses ESAPI only; a build with FAPI maps libcurl, GnuTLS, Kerberos, LDAP and some 25 other
# libraries into every agent, 5.5 MB of its resident set (docs/agent.md). Usage: ensure_tpm2_pytss VENV
ensure_tpm2_pytss() {
    local py="$1/bin/python" spec pc d f rc=0
    without_fapi() { "$py" -c 'import sys, tpm2_pytss; sys.exit(hasattr(tpm2_pytss, "FAPI"))'; }
    without_fapi 2>/dev/null && return 0
    spec=$("$py" -c 'import sys, tomllib
extras = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["agent"]
print(next(r for r in extras if r.startswith("tpm2-pytss")))' "$ROOT/pyproject.toml") || return 1
    log "building $spec from source without FAPI"
    "$py" -m pip uninstall -q -y tpm2-pytss >/dev/null 2>&1
    pc=$(mktemp -d)
    for d in $(pkg-config --variable pc_path pkg-config | tr ':' ' '); do
        for f in "$d"/*.pc; do [ -e "$f" ] && ln -sf "$f" "$pc/"; done
    done
    rm -f "$pc/tss2-fapi.pc" "$pc/tss2-policy.pc"
    PKG_CONFIG_LIBDIR="$pc" "$py" -m pip install -q --no-cache-dir --no-binary tpm2-pytss \
        -c "$ROOT/constraints.txt" "$spec" || rc=1
    rm -rf "$pc"
    [ $rc -eq 0 ] || { log "building $spec failed"; return 1; }
    without_fapi || { log "tpm2-pytss still has FAPI after the build"; return 1; }
}

ensure_venv() {
    local stamp="$ROOT/.venv/.assay-installed" want
    want="$(sha256sum "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/scripts/_setup.sh" | cut -d' ' -f1 | tr '\n' ' ')$("$PYTHON" -c 'import sys; print(sys.version)' | head -1)"
    if [ -x "$ROOT/.venv/bin/python" ] && [ "$(readlink -f "$ROOT/.venv/bin/python")" != "$(readlink -f "$(command -v "$PYTHON")")" ]; then
        log "re-creating .venv with $PYTHON"
        rm -rf "$ROOT/.venv"
    fi
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        log "creating .venv with $PYTHON"
        "$PYTHON" -m venv "$ROOT/.venv" || { log "$PYTHON -m venv failed"; return 1; }
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing Python packages into .venv"
        "$ROOT/.venv/bin/pip" install -q --upgrade pip >/dev/null
        ensure_tpm2_pytss "$ROOT/.venv" || return 1
        "$ROOT/.venv/bin/pip" install -q -c "$ROOT/constraints.txt" -e "$ROOT[agent,postgres,dev]" \
            || { log "pip install failed"; return 1; }
        # testkit/ (test and demo scaffolding) and tests/ are never installed: this venv finds them
        # at the repository root (a .pth file), for pytest, scripts/* and `python -m testkit.swtpm`.
        "$ROOT/.venv/bin/python" -c 'import sys, sysconfig
open(sysconfig.get_paths()["purelib"] + "/assay-repo-root.pth", "w").write(sys.argv[1] + "\n")' "$ROOT" \
            || { log "writing the repository-root .pth failed"; return 1; }
        echo "$want" > "$stamp"
    fi
    # shellcheck disable=SC1091
    . "$ROOT/.venv/bin/activate"
}

# `apt-get download` (the demo's and the tests' Debian packages) needs package lists; a fresh
# machine may have none.
ensure_apt_lists() {
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 && [ -z "${ASSAY_APT_UPDATED:-}" ]; then
        [ "$(id -u)" -eq 0 ] || { log "no apt package lists (run apt-get update as root)"; return 1; }
        log "apt-get update"
        apt-get update -qq >/dev/null || { log "apt-get update failed"; return 1; }
        export ASSAY_APT_UPDATED=1
    fi
}

# The review console's browser tests: Debian's Chromium (driven by Playwright for Python through
# executable_path; Playwright never downloads a browser) and fonts so that pages render text.
APT_BROWSER=(chromium fonts-dejavu-core fonts-liberation)
CHROMIUM=/usr/bin/chromium
export CHROMIUM

ensure_browser() {
    ensure_apt "${APT_BROWSER[@]}"
}

ensure_base() {
    ensure_apt_lists && ensure_apt "${APT_BASE[@]}" && ensure_venv
}

# Shared by scripts/install-verifier and scripts/install-agent: sourced, not run.
# Installs the files under deploy/ into "$DESTDIR" (empty: this machine), packaging-style: units in
# /etc/systemd/system with the venv's path substituted, example configuration never overwriting
# an operator's file, the docs beside the venv.

# install_unit NAME PREFIX: deploy/systemd/NAME with /opt/<default>/ replaced by PREFIX.
install_unit() {
    local name="$1" prefix="$2" dest="$DESTDIR/etc/systemd/system/$1"
    install -d -m 0755 "$(dirname "$dest")"
    sed -e "s#/opt/assay-verifier#$prefix#g; s#/opt/assay-agent#$prefix#g" \
        "$ROOT/deploy/systemd/$name" > "$dest.tmp"
    chmod 0644 "$dest.tmp" && mv "$dest.tmp" "$dest"
    log "unit: $dest"
}

# install_config SRC DEST MODE: an example configuration, only where there is none yet.
install_config() {
    local dest="$DESTDIR$2"
    install -d -m 0755 "$(dirname "$dest")"
    if [ -e "$dest" ]; then
        log "keeping $dest"
    else
        install -m "$3" "$ROOT/deploy/$1" "$dest"
        log "config: $dest"
    fi
}

# install_docs PREFIX FILE…: docs/FILE… into PREFIX/share/doc/assay (the units' Documentation=).
install_docs() {
    local prefix="$1" f
    shift
    install -d -m 0755 "$DESTDIR$prefix/share/doc/assay"
    for f in "$@"; do install -m 0644 "$ROOT/docs/$f" "$DESTDIR$prefix/share/doc/assay/$f"; done
}

# systemd_reload: only on this machine, and only where systemd is running.
systemd_reload() {
    [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true
}

#!/bin/bash
# Makes tests/vectors/ima/sig/: IMA file signatures (v2 by evmctl, v3 over the ima_file_id hash by
# openssl) and kernel-module appended signatures (modsig, by the kernel's scripts/sign-file and by
# openssl cms), with fresh keys, then the named negative vectors. The files are committed as made:
# running this again makes new keys, so every vector changes (the tests read what is committed).
#
# Needs Debian 12's ima-evm-utils (evmctl 1.4), linux-kbuild-6.1 (scripts/sign-file) and openssl.
# evmctl 1.4 has no sigv3 option, so the v3 signature is made the way the kernel checks one
# (security/integrity/digsig_asymmetric.c, calc_file_id_hash): the hash, in the file's algorithm,
# of struct ima_file_id's used part (u8 xattr type, u8 hash algorithm, the file digest), signed
# with openssl pkeyutl, behind a signature_v2_hdr written with printf.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/sig
SIGN_FILE=${SIGN_FILE:-/usr/lib/linux-kbuild-6.1/scripts/sign-file}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir -p "$out"

# Keys: RSA-2048 and EC P-256, self-signed certificates (OpenSSL adds the SKID IMA's key id uses),
# a second RSA key that signs nothing here (the wrong key), and a CA with a leaf it issued for the
# keyring tests.
openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.crt -days 36500 \
    -subj "/CN=assay test IMA RSA key" -addext keyUsage=digitalSignature 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ec.key -out ec.crt \
    -days 36500 -subj "/CN=assay test IMA EC key" -addext keyUsage=digitalSignature 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 36500 \
    -subj "/CN=assay test unrelated key" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 36500 \
    -subj "/CN=assay test keyring CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=keyCertSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr \
    -subj "/CN=assay test key signed by the keyring CA" 2>/dev/null
openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out leaf.crt \
    -days 36500 -extfile <(printf 'keyUsage=digitalSignature\nsubjectKeyIdentifier=hash\n') 2>/dev/null
for k in rsa ec other ca leaf; do cp "$k.crt" "$out/$k.crt.pem"; done
openssl x509 -in leaf.crt -outform DER -out "$out/leaf.crt.der"
openssl x509 -in rsa.crt -outform DER -out "$out/rsa.crt.der"

# The signed file.
printf 'assay IMA signature test file\n' > file.bin
cp file.bin "$out/file.bin"

# v2: evmctl ima_sign --sigfile writes the security.ima value (type 3, version 2) to file.bin.sig.
for k in rsa ec leaf; do
    evmctl ima_sign --sigfile -a sha256 --key "$k.key" file.bin >/dev/null
    mv file.bin.sig "$out/evmctl-v2-sha256-$k.sig"
done
evmctl ima_sign --sigfile -a sha512 --key rsa.key file.bin >/dev/null
mv file.bin.sig "$out/evmctl-v2-sha512-rsa.sig"

# v3: ima_file_id = type 3, hash_algo 4 (sha256), the file's sha256; signed hash = sha256 of that.
hexkeyid() { xxd -p -s 3 -l 4 "$1"; }
{ printf '\003\004'; sha256sum -b file.bin | cut -d' ' -f1 | xxd -r -p; } > file_id.bin
openssl dgst -sha256 -binary file_id.bin > file_id.sha256
for k in rsa ec; do
    openssl pkeyutl -sign -inkey "$k.key" -pkeyopt digest:sha256 -in file_id.sha256 -out "v3.$k.raw"
    size=$(stat -c %s "v3.$k.raw")
    {
        printf '\003\003\004'
        hexkeyid "$out/evmctl-v2-sha256-$k.sig" | xxd -r -p
        printf "\\$(printf %03o $((size >> 8)))\\$(printf %03o $((size & 255)))"
        cat "v3.$k.raw"
    } > "$out/openssl-v3-sha256-$k.sig"
done

# modsig: scripts/sign-file appends PKCS#7 (CMS, no signed attributes, issuer and serial as the
# signer id), struct module_signature and the magic string; -k names the signer by its SKID.
printf 'assay test kernel module (not ELF)\n' > module.ko
cp module.ko "$out/module.ko"
"$SIGN_FILE" sha256 rsa.key rsa.crt module.ko "$out/sign-file-sha256-rsa.ko"
"$SIGN_FILE" -k sha256 rsa.key rsa.crt module.ko "$out/sign-file-keyid-sha256-rsa.ko"
"$SIGN_FILE" sha384 ec.key ec.crt module.ko "$out/sign-file-sha384-ec.ko"
# openssl cms with its default signed attributes (content type, signing time, digest): a form the
# kernel accepts and Assay refuses (docs/ima.md).
openssl cms -sign -binary -in module.ko -signer rsa.crt -inkey rsa.key -md sha256 -nocerts \
    -outform DER -out "$out/openssl-cms-signedattrs-sha256-rsa.p7"
openssl cms -sign -binary -noattr -in module.ko -signer rsa.crt -inkey rsa.key -md sha256 \
    -nocerts -outform DER -out "$out/openssl-cms-noattr-sha256-rsa.p7"

# Negative vectors, one attack each, from the v2/v3 RSA signatures above.
cd "$out"
v2=evmctl-v2-sha256-rsa.sig v3=openssl-v3-sha256-rsa.sig
# v3 signature relabelled v2 (the header is not signed; the signed data differs).
{ printf '\003\002'; tail -c +3 "$v3"; } > neg-v3-as-v2.sig
# v2 signature relabelled v3.
{ printf '\003\003'; tail -c +3 "$v2"; } > neg-v2-as-v3.sig
# header claims sha512 over a sha256 file digest.
{ printf '\003\002\006'; tail -c +4 "$v2"; } > neg-algo-sha512-header.sig
# one signature byte flipped (the last).
{ head -c -1 "$v2"; tail -c 1 "$v2" | xxd -p | { read -r b; printf "\\$(printf %03o $((0x$b ^ 1)))"; }; } > neg-flipped-byte.sig
# truncated: the header's sig_size still says 256.
head -c 100 "$v2" > neg-truncated.sig
echo "made $(ls | wc -l) files in $out"

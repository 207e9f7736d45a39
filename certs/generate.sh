#!/usr/bin/env bash
# Consortium credentials for a fedfraud deployment (see certs/README.md):
#   - a consortium CA (ca.crt, ca.key) that signs the SuperLink's TLS certificate;
#   - the SuperLink's TLS certificate (server.pem, server.key) with configurable SANs;
#   - one SuperNode authentication key pair per bank (EC P-384, OpenSSH format, as
#     `flower-supernode --auth-supernode-private-key` and `flwr supernode register` expect).
# Existing files are kept unless --force names them again, so the script can be re-run to add
# banks or renew the server certificate without invalidating anything else.
set -euo pipefail

OUT="certs/generated"
BANKS=""        # default: 3 when the folder is new, else none (re-runs add nothing unasked)
BANK_IDS=()
SANS="DNS:localhost,IP:127.0.0.1"
DAYS=397        # server certificate lifetime (the browser-industry maximum; rotate yearly)
CA_DAYS=1825    # CA lifetime
FORCE_SERVER=0
FORCE_BANKS=0
KEYS_ONLY=0

usage() {
  cat <<'EOF'
usage: certs/generate.sh [--out DIR] [--banks N | --bank ID ...] [--san LIST] [--days D]
                         [--renew-server] [--rotate-banks] [--bank-keys-only]

  --out DIR        output folder (default certs/generated, ignored by git)
  --banks N        make node-auth keys for bank-00 .. bank-(N-1) (default: 3 on a new folder)
  --bank ID        make a node-auth key for bank ID (repeatable; replaces --banks)
  --san LIST       server certificate subjectAltNames, openssl syntax
                   (default "DNS:localhost,IP:127.0.0.1"; e.g. "DNS:fl.consortium.example")
  --days D         server certificate validity in days (default 397)
  --renew-server   issue a new server key + certificate even if one exists (same CA)
  --rotate-banks   replace the key pairs of the named banks (re-register them afterwards)
  --bank-keys-only only make node-auth key pairs (a bank making its own: no CA, no server cert)
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --banks) BANKS="$2"; shift 2 ;;
    --bank) BANK_IDS+=("$2"); shift 2 ;;
    --san) SANS="$2"; shift 2 ;;
    --days) DAYS="$2"; shift 2 ;;
    --renew-server) FORCE_SERVER=1; shift ;;
    --rotate-banks) FORCE_BANKS=1; shift ;;
    --bank-keys-only) KEYS_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1'; see certs/generate.sh --help" >&2; exit 2 ;;
  esac
done

command -v openssl >/dev/null || { echo "error: openssl not found; install it (apt-get install openssl)" >&2; exit 2; }
if [[ -z "$BANKS" ]]; then
  if [[ -f "$OUT/ca.crt" || $KEYS_ONLY == 1 ]]; then BANKS=0; else BANKS=3; fi
fi
if ! [[ "$BANKS" =~ ^[0-9]+$ ]]; then
  echo "error: --banks must be a whole number, got '$BANKS'" >&2; exit 2
fi
if [[ ${#BANK_IDS[@]} -eq 0 ]]; then
  for ((i = 0; i < BANKS; i++)); do BANK_IDS+=("$(printf 'bank-%02d' "$i")"); done
fi
for id in "${BANK_IDS[@]}"; do
  if ! [[ "$id" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "error: bank id '$id' may only hold letters, digits, '.', '_' and '-'" >&2; exit 2
  fi
done

# Private keys are created 0600 and never leave this folder except the bank's own key.
umask 077
mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- consortium CA -------------------------------------------------------------------------
if [[ $KEYS_ONLY == 0 && ( ! -f "$OUT/ca.key" || ! -f "$OUT/ca.crt" ) ]]; then
  openssl ecparam -name secp384r1 -genkey -noout -out "$OUT/ca.key"
  openssl req -x509 -new -key "$OUT/ca.key" -sha384 -days "$CA_DAYS" \
    -subj "/O=fedfraud consortium/CN=fedfraud consortium CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$OUT/ca.crt"
  chmod 644 "$OUT/ca.crt"
  echo "made consortium CA: $OUT/ca.crt (keep $OUT/ca.key offline)"
fi

# --- SuperLink TLS certificate -------------------------------------------------------------
if [[ $KEYS_ONLY == 0 && ( $FORCE_SERVER == 1 || ! -f "$OUT/server.key" || ! -f "$OUT/server.pem" ) ]]; then
  openssl ecparam -name secp384r1 -genkey -noout -out "$TMP/server.key"
  openssl req -new -key "$TMP/server.key" -sha384 \
    -subj "/O=fedfraud consortium/CN=fedfraud SuperLink" -out "$TMP/server.csr"
  cat >"$TMP/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$SANS
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
  openssl x509 -req -in "$TMP/server.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" \
    -CAcreateserial -days "$DAYS" -sha384 -extfile "$TMP/server.ext" -out "$TMP/server.pem" \
    2>/dev/null
  openssl verify -CAfile "$OUT/ca.crt" "$TMP/server.pem" >/dev/null
  mv "$TMP/server.key" "$OUT/server.key"
  mv "$TMP/server.pem" "$OUT/server.pem"
  chmod 644 "$OUT/server.pem"
  echo "made SuperLink certificate: $OUT/server.pem (SANs: $SANS, $DAYS days)"
fi

# --- per-bank SuperNode authentication keys ------------------------------------------------
make_node_key() {  # $1 = private key path (public key goes to $1.pub), $2 = comment
  if command -v ssh-keygen >/dev/null; then
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "$2" -f "$1"
  else
    # Same format without OpenSSH: the `cryptography` package Flower depends on.
    "${PYTHON:-python3}" - "$1" "$2" <<'EOF'
import os, sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP384R1())
path, comment = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "wb") as f:
    f.write(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption()))
pub = key.public_key().public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH)
with open(path + ".pub", "wb") as f:
    f.write(pub + b" " + comment.encode() + b"\n")
EOF
  fi
}

for id in "${BANK_IDS[@]}"; do
  dir="$OUT/$id"
  key="$dir/node-auth.key"
  if [[ -f "$key" && $FORCE_BANKS == 0 ]]; then
    continue
  fi
  mkdir -p "$dir"
  rm -f "$TMP/node" "$TMP/node.pub"
  make_node_key "$TMP/node" "fedfraud $id"
  mv "$TMP/node" "$key"
  mv "$TMP/node.pub" "$dir/node-auth.pub"
  chmod 644 "$dir/node-auth.pub"
  if [[ -f "$OUT/ca.crt" ]]; then
    cp "$OUT/ca.crt" "$dir/ca.crt"
    chmod 644 "$dir/ca.crt"
  fi
  echo "made node-auth key pair for $id: $key (+ node-auth.pub to register)"
done

# Fingerprints to compare out of band (phone, signed e-mail) when files change hands.
{
  echo "# SHA-256 fingerprints (compare out of band before trusting a file)"
  for cert in ca.crt server.pem; do
    [[ -f "$OUT/$cert" ]] || continue
    echo "$cert $(openssl x509 -in "$OUT/$cert" -noout -fingerprint -sha256 | cut -d= -f2)"
  done
  for pub in "$OUT"/*/node-auth.pub; do
    [[ -f "$pub" ]] || continue
    echo "$(basename "$(dirname "$pub")")/node-auth.pub $(sha256sum "$pub" | cut -d' ' -f1)"
  done
} >"$OUT/fingerprints.txt"
chmod 644 "$OUT/fingerprints.txt"
echo "wrote $OUT/fingerprints.txt"

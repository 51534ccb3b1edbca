#!/bin/sh
# Makes a cluster CA and one certificate per node for raftgate's mutual TLS on the cluster port.
#
#   deploy/tls/make-cluster-certs.sh OUT_DIR NAME...
#
# Each NAME is the host part of a node's advertised cluster address: an IP (10.0.0.1), a DNS
# name (node1), or a wildcard (*.raftgate-peers, one certificate for every pod of a StatefulSet).
# Writes OUT_DIR/ca.pem, OUT_DIR/ca-key.pem (keep it offline), and OUT_DIR/NAME.pem and
# OUT_DIR/NAME-key.pem per name ('*' becomes 'wildcard'). Then start each node with
#   --cluster-ca ca.pem --cluster-cert NAME.pem --cluster-key NAME-key.pem
# An existing CA in OUT_DIR is reused, so nodes can be added later.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 OUT_DIR NAME..." >&2
    exit 2
fi
out=$1
shift
mkdir -p "$out"
umask 077

if [ ! -f "$out/ca.pem" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$out/ca-key.pem" -out "$out/ca.pem" -days 3650 \
        -subj "/CN=raftgate cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

for name in "$@"; do
    file=$(printf '%s' "$name" | sed 's/\*/wildcard/')
    case "$name" in
        *[!0-9.]*) san="DNS:$name" ;;
        *) san="IP:$name" ;;
    esac
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$out/$file-key.pem" -out "$out/$file.csr" -subj "/CN=$name"
    ext=$(mktemp)
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' "$san" >"$ext"
    openssl x509 -req -in "$out/$file.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
        -CAcreateserial -out "$out/$file.pem" -days 825 -extfile "$ext"
    rm -f "$ext" "$out/$file.csr"
    echo "$out/$file.pem ($san)"
done

#!/usr/bin/env bash
# certs.sh DIR: a throwaway PKI for demos and specs, written into DIR:
#   ca.pem/ca.key            the CA both sides trust
#   server.pem/server.key    the server (localhost, 127.0.0.1, ::1)
#   client.pem/client.key    a client the server lets in
#   mallory.pem/mallory.key  another client it lets in (a second party: the hostile one)
#   other-ca.pem, other.pem/other.key   a client from another CA (refused)
#   expired.pem/expired.key  a client the CA signed, valid only in January 2020 (refused)
#   revoked.pem/revoked.key  a client the CA signed, then revoked
#   crl-none.pem, crl.pem    the CA's CRL before and after that revocation
# EC P-256 keys: fast to make and to handshake with.
set -eu
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
[ -f ca.pem ] && [ -f server.pem ] && [ -f client.pem ] && [ -f other.pem ] && [ -f expired.pem ] &&
  [ -f crl.pem ] && [ -f mallory.pem ] && exit 0
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # name
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "/CN=TunneLS test $1" -days 3650 -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() { # name ca cn ext
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 825 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca
ca other-ca
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth"
leaf client ca "tunnels client" "extendedKeyUsage=clientAuth"
leaf mallory ca "mallory" "extendedKeyUsage=clientAuth"
leaf other other-ca "stranger" "extendedKeyUsage=clientAuth"
# An expired certificate needs explicit dates, which only `openssl ca` takes in OpenSSL 3.0.
key expired.key
openssl req -new -key expired.key -subj "/CN=expired client" -out expired.csr
mkdir -p ca-db
: > ca-db/index.txt
echo 1000 > ca-db/serial
cat > ca-db/ca.cnf <<CNF
[ ca ]
default_ca = tca
[ tca ]
database = ca-db/index.txt
new_certs_dir = ca-db
certificate = ca.pem
private_key = ca.key
serial = ca-db/serial
default_md = sha256
policy = any
default_crl_days = 3650
[ any ]
commonName = supplied
[ ext ]
extendedKeyUsage = clientAuth
CNF
openssl ca -batch -config ca-db/ca.cnf -extensions ext -notext -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20200201000000Z 2>/dev/null
rm -f expired.csr
# A client certificate, revoked: the CRLs without and with it (what easy-rsa's revoke and
# gen-crl write too).
key revoked.key
openssl req -new -key revoked.key -subj "/CN=revoked client" -out revoked.csr
openssl ca -batch -config ca-db/ca.cnf -extensions ext -notext -in revoked.csr -out revoked.pem \
  -days 825 2>/dev/null
rm -f revoked.csr
openssl ca -batch -config ca-db/ca.cnf -gencrl -out crl-none.pem 2>/dev/null
openssl ca -batch -config ca-db/ca.cnf -revoke revoked.pem 2>/dev/null
openssl ca -batch -config ca-db/ca.cnf -gencrl -out crl.pem 2>/dev/null
chmod 600 ./*.key

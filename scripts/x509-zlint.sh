#!/usr/bin/env bash
# Conformance check of every X.509 certificate Mandate issues or serves:
# its self-signed CA (as /v1/bundle serves it to federated peers too),
# the intermediate CA it has an upstream CA sign, and the X509-SVIDs of
# the admin, a node, agents (an ECDSA key through the CLI, an RSA key
# through a CSR) and the server's own TLS certificate, both under the
# self-signed CA and under an upstream one (made here with openssl), are
#   - linted with zlint (scripts/x509-zlint-check.go, built with
#     github.com/zmap/zlint/v3 v3.7.3 from the Go module proxy): any
#     error or warning of the RFC 5280, RFC 3279/5480/8813, RFC 5891 and
#     community lints fails the check, but for the lints allowed below;
#     the CA/Browser Forum's and the root programs' lints are for the Web
#     PKI, whose rules SVIDs do not follow (the SPIFFE X509-SVID spec
#     governs them), and are not applied;
#   - verified by OpenSSL (openssl verify -x509_strict), each leaf with
#     its chain as both a TLS client and a TLS server certificate
#     (X509-SVIDs are both), and each CA certificate.
# test.sh runs it; it needs Go and the module proxy, openssl, curl and
# jq. All on 127.0.0.1, under this user.
#
#   scripts/x509-zlint.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/interop.sh"
interop_start "x509 zlint"

# Lints whose findings do not apply to these certificates, each with why
# (passed to the check as -allow NAME; one that matches nothing is
# reported, so that a fixed finding leaves the list). Today none of the
# RFC and community lints needs it. Notices fail nothing: the server
# certificate's DNS name localhost is "a bare public suffix"
# (n_san_iana_pub_suffix_empty), as it is meant to be.
# The Web PKI's sources are left out as a whole (the check prints their
# findings with -v). What they report, and why it does not apply:
#   - a URI SAN (e_ext_san_uniform_resource_identifier_present): the
#     SPIFFE ID, which the X509-SVID spec requires, in the CA too;
#   - no country, locality or province (e_ca_country_name_missing,
#     e_sub_cert_*_must_appear): the X509-SVID spec leaves the Subject
#     free; identity is the URI SAN;
#   - no certificate policies, AIA or CRL distribution points, no SCTs
#     (e_sub_cert_certificate_policies_missing, e_sub_cert_aia_missing,
#     e_sub_ca_crl_distribution_points_missing, n_ct_sct_policy_*):
#     SVIDs are short-lived, revoked by the bundle, and not logged;
#   - a subject key identifier in the leaves
#     (w_ext_subject_key_identifier_not_recommended_subscriber): the
#     Baseline Requirements advise against what RFC 5280 asks for;
#   - a path length on the root (w_root_ca_basic_constraints_path_len_*):
#     the self-signed CA signs SVIDs only, so its pathLen is 0 on purpose;
#   - localhost and loopback IPs in the server certificate
#     (e_dnsname_not_valid_tld, e_ext_san_contains_reserved_ip): it is
#     reached on this host too, with the trust bundle, not a Web PKI root.
ALLOW=(
)

say "building the check with github.com/zmap/zlint/v3 $ZLINT_VERSION"
build_check x509-zlint-check.go zlint_module "$W/x509-check"

cd "$W"
# The upstream CA's authority has a trust domain of a long name, longer
# than an attribute of the Subject may be (RFC 5280: 64 characters).
TD=mandate.localhost
LONG_TD="a-trust-domain-whose-name-is-longer-than-a-subject-attribute.example"
# server_chain FILE: the chain the server presents, as PEM.
server_chain() {
  openssl s_client -connect "${URL#https://}" -showcerts </dev/null 2>/dev/null |
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' >"$1"
  grep -q 'BEGIN CERTIFICATE' "$1" || fail "no certificate from the server"
}
# issue DIR TD: in ./DIR, a node joined (DIR/node), an agent of an
# ECDSA key (DIR/agent, the CLI) and one of an RSA key (DIR/rsa.pem, a
# CSR made by openssl), and the server's chain (DIR/server.pem), from the
# authority of trust domain TD at URL, whose data directory is DIR/data.
issue() {
  local d=$1 td=$2 token node
  export MANDATE_SERVER=$URL
  adm() { "$MANDATE" "$@" --creds "$d/data/admin"; }
  token=$(adm admin join-token create --quiet)
  node=$("$MANDATE" node join --token "$token" --quiet --out "$d/node" --bundle "$d/data/admin/bundle.pem" --trust-domain "$td")
  adm admin agent create --spiffe-id "spiffe://$td/agent/ec" --node-id "$node" >/dev/null
  adm admin agent create --spiffe-id "spiffe://$td/agent/rsa" --node-id "$node" >/dev/null
  "$MANDATE" svid x509 --spiffe-id "spiffe://$td/agent/ec" --creds "$d/node" --out "$d/agent" >/dev/null
  openssl genrsa -out "$d/rsa.key" 2048 2>/dev/null
  openssl req -new -key "$d/rsa.key" -subj / -out "$d/rsa.csr"
  jq -n --rawfile csr "$d/rsa.csr" --arg id "spiffe://$td/agent/rsa" '{spiffe_id: $id, csr: $csr}' |
    curl -sS -f --cacert "$d/data/admin/bundle.pem" --cert "$d/node/svid.pem" --key "$d/node/svid.key" \
      -H 'Content-Type: application/json' -d @- "$URL/v1/svid/x509" | jq -er .x509_svid >"$d/rsa.pem"
  server_chain "$d/server.pem"
}
stop_serve() {
  kill "$SERVE" 2>/dev/null || true
  wait "$SERVE" 2>/dev/null || true
  SERVE=
}

# 1. A self-signed CA.
say "issuing under a self-signed CA"
mkdir self
start_serve --data-dir self/data --trust-domain "$TD" || fail "the authority did not start"
issue self "$TD"
# The bundle as federated peers fetch it: its CAs, from x5c.
curl -sS -f --cacert self/data/admin/bundle.pem "$URL/v1/bundle" |
  jq -er '.keys[] | select(.use == "x509-svid") | .x5c[0]' |
  while read -r der; do printf -- '-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n' "$(fold -w 64 <<<"$der")"; done >self/federation.pem
grep -q 'BEGIN CERTIFICATE' self/federation.pem || fail "no X.509 authority in the bundle"
stop_serve

# 2. An intermediate CA under an upstream CA (not Mandate's: not linted).
say "issuing under an upstream CA"
mkdir up
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout up/root.key -out up/root.pem -days 2 \
  -subj "/O=Upstream/CN=Upstream Root CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
chmod 600 up/root.key
cat >up.yaml <<EOF
data_dir: up/data
trust_domain: $LONG_TD
ca:
  upstream_cert_file: up/root.pem
  upstream_key_file: up/root.key
EOF
start_serve --config up.yaml || fail "the authority with an upstream CA did not start"
issue up "$LONG_TD"
stop_serve

say "linting with zlint $ZLINT_VERSION"
args=()
for a in "${ALLOW[@]}"; do args+=(-allow "$a"); done
./x509-check "${args[@]}" \
  ca=self/data/admin/bundle.pem federation-bundle=self/federation.pem \
  admin=self/data/admin/svid.pem node=self/node/svid.pem agent-ec=self/agent/svid.pem \
  agent-rsa=self/rsa.pem server=self/server.pem \
  upstream-admin=up/data/admin/svid.pem upstream-node=up/node/svid.pem upstream-agent-ec=up/agent/svid.pem \
  upstream-agent-rsa=up/rsa.pem upstream-server=up/server.pem ||
  fail "zlint: findings above"

say "verifying with openssl verify -x509_strict"
# verify ROOTS CHAIN PURPOSE: CHAIN's leaf through the rest of CHAIN to
# ROOTS, for PURPOSE.
verify() {
  local out
  out=$(openssl verify -x509_strict -purpose "$3" -CAfile "$1" -untrusted "$2" "$2" 2>&1) ||
    fail "openssl verify -purpose $3 $2: $out"
}
# The CAs by themselves: the self-signed one, and the intermediate (the
# second certificate of an SVID's chain) under the upstream root.
awk '/BEGIN CERTIFICATE/ { n++ } n == 2' up/node/svid.pem >up/intermediate.pem
grep -q 'BEGIN CERTIFICATE' up/intermediate.pem || fail "no intermediate CA in the chain"
verify self/data/admin/bundle.pem self/data/admin/bundle.pem any
verify up/root.pem up/intermediate.pem any
for d in self up; do
  for f in data/admin/svid.pem node/svid.pem agent/svid.pem rsa.pem server.pem; do
    for p in sslclient sslserver; do verify "$d/data/admin/bundle.pem" "$d/$f" "$p"; done
  done
done
say "ok"

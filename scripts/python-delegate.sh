#!/usr/bin/env bash
# Interoperability check: an agent written in another language (Python,
# with the jwcrypto JOSE library and curl) delegates through the plain
# HTTPS API, signing its hop statement with its X509-SVID key as
# docs/api.md §5d says, in Python's own JSON encoding. test.sh runs it; it
# needs python3-jwcrypto, jq and curl.
#
#   scripts/python-delegate.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
SERVE=
cleanup() {
  [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "python delegation interop: $*" >&2; [ -f "$W/serve.log" ] && tail -20 "$W/serve.log" >&2; exit 1; }
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # the distribution's, with its python3-jwcrypto
if [ -z "$MANDATE" ]; then
  MANDATE=$W/mandate
  (cd "$ROOT" && go build -o "$MANDATE" ./cmd/mandate)
fi
cd "$W"

. "$ROOT/scripts/interop.sh"
start_serve --trust-domain py.example --data-dir data || fail "the authority did not start"
m() { "$MANDATE" "$@" --server "$URL"; }
adm() { m "$@" --creds data/admin; }

# An operator registers two agents on a node; each gets its X509-SVID.
TOKEN=$(adm admin join-token create --quiet)
NODE=$(m node join --token "$TOKEN" --quiet --out node --bundle data/admin/bundle.pem)
A=spiffe://py.example/agent/planner B=spiffe://py.example/agent/booker
adm admin agent create --spiffe-id "$A" --node-id "$NODE" --scope calendar:read --responsible-party ann@py.example >/dev/null
adm admin agent create --spiffe-id "$B" --node-id "$NODE" >/dev/null
m svid x509 --spiffe-id "$A" --creds node --out planner >/dev/null
m svid x509 --spiffe-id "$B" --creds node --out booker >/dev/null

# The planner, in Python: sign the hop statement (Python's key order and
# separators, not Go's) with its SVID key, x5c its chain; a fifth
# argument is the statement's not_after (Unix seconds).
sign() {
  "$PY" - "$@" <<'PY'
import base64, json, re, sys
from jwcrypto import jwk, jws
from jwcrypto.common import json_encode
delegator, delegatee, principal, scopes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
pem = open("planner/svid.pem").read()
chain = [base64.b64encode(base64.b64decode("".join(b.split()))).decode()
         for b in re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)]
key = jwk.JWK.from_pem(open("planner/svid.key", "rb").read())
statement = {"scopes": scopes, "principal": principal, "delegatee": delegatee, "delegator": delegator, "purpose": "plan a trip"}
if len(sys.argv) > 5:
    statement["not_after"] = int(sys.argv[5])
sig = jws.JWS(json.dumps(statement).encode())
sig.add_signature(key, None, json_encode({"alg": "ES256", "typ": "mandate-hop+jws", "x5c": chain}))
print(sig.serialize(compact=True))
PY
}
delegate() { # SIGNATURE SCOPES
  jq -n --arg b "$B" --arg sig "$1" --arg s "$2" \
    '{delegatee: $b, scopes: ($s | split(",")), principal: "alice", purpose: "plan a trip", delegator_signature: $sig}' >req.json
  curl -sS --cacert data/admin/bundle.pem --cert planner/svid.pem --key planner/svid.key \
    -H 'Content-Type: application/json' --data @req.json "$URL/v1/delegations"
}

# The planner allows the hop two minutes (not_after): the authority caps
# the token there, not at its default ten.
not_after=$(( $(date +%s) + 120 ))
delegate "$(sign "$A" "$B" alice calendar:read "$not_after")" calendar:read >ans.json
jq -e .token ans.json >/dev/null || fail "delegation refused: $(cat ans.json)"
jq -e --argjson na "$not_after" '(.expires_at | fromdateiso8601) == $na' ans.json >/dev/null ||
  fail "the hop expires at $(jq -r .expires_at ans.json), not at the signed not_after $not_after"
jq -r .token ans.json >t.jwt
"$MANDATE" delegate verify t.jwt --bundles booker/bundles.json --presenter "$B" >verify.json || fail "the token does not verify: $(cat verify.json)"
jq -e '.valid and .principal == "alice"' verify.json >/dev/null || fail "verify: $(cat verify.json)"
echo "python delegation interop: $(jq -r .id ans.json) issued to $B on a statement signed by jwcrypto, expiring at its not_after, and verified"

# A statement over another hop is refused.
delegate "$(sign "$A" "$B" alice calendar:read)" calendar:read,mail:send >bad.json || true
[ "$(jq -r .type bad.json)" = "https://mandate.dev/problems/delegator-signature-invalid" ] || fail "a statement with fewer scopes: $(cat bad.json)"
delegate "$(sign "$A" "$B" mallory calendar:read)" calendar:read >bad.json || true
[ "$(jq -r .type bad.json)" = "https://mandate.dev/problems/delegator-signature-invalid" ] || fail "a statement for another principal: $(cat bad.json)"
echo "python delegation interop: statements over another hop refused ($(jq -r .type bad.json | sed 's|.*/||'))"

#!/usr/bin/env bash
# Interoperability check: openid-client (v6.9.0, from the npm registry),
# an OAuth 2.0 client library of another language, exchanges tokens at
# Mandate's token endpoint as docs/api.md (§5d) says any such library
# does (scripts/oauth-token-exchange.mjs):
#   - it finds the token endpoint in the RFC 8414 metadata, and
#     authenticates with the agent's X509-SVID (RFC 8705
#     tls_client_auth);
#   - a root hop (a → b, for alice) and a sub-delegation (b → c,
#     exchanging the token b holds), each with the delegator's statement
#     signed by jose (v6.2.18) over JSON as JavaScript writes it, with a
#     purpose JSON writers escape differently;
#   - jose verifies the tokens with the JWKS the metadata names;
#   - refusals come back as the library's OAuth errors, with their RFC
#     6749 codes;
# and then Mandate's own verifier and auditor read the same chain:
# mandate delegate verify takes the token c was given, and mandate audit
# chain --verify shows the purpose as it was signed.
# test.sh runs it; it needs Node.js 20.18 or later and npm (the npm
# registry), Go, gcc (cgo) and python3. All on 127.0.0.1, under this user.
#
#   scripts/oauth-token-exchange.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/interop.sh"
interop_start "oauth token exchange interop"

say "installing openid-client, jose and undici from the npm registry"
npm_packages "$W/js" openid-client@6.9.0 jose@6.2.18 undici@7.30.2
cp "$ROOT/scripts/oauth-token-exchange.mjs" "$W/js/"

cd "$W"
start_serve --data-dir data || fail "the authority did not start"
join_node
TD=spiffe://mandate.localhost/agent
adm admin agent create --spiffe-id "$TD/a" --node-id "$NODE" --scope calendar:read --scope mail:send >/dev/null
adm admin agent create --spiffe-id "$TD/b" --node-id "$NODE" >/dev/null
adm admin agent create --spiffe-id "$TD/c" --node-id "$NODE" >/dev/null
for x in a b c; do
  m svid x509 --creds node --spiffe-id "$TD/$x" --out "$x" >/dev/null
done

# A purpose JSON writers escape differently: JavaScript's JSON.stringify
# escapes only the quotes, Go's encoding/json also <, & and >.
PURPOSE='plan Zoë’s trip — 東京 "day 1" <&>'
node js/oauth-token-exchange.mjs "$URL" a b c sub.jwt "$PURPOSE" || fail "openid-client's token exchange did not go as documented"

# Mandate's verifier takes the token c holds, as c presents it.
m delegate verify sub.jwt --bundles c/bundles.json --presenter "$TD/c" --audience "$TD/c" >verify.out 2>verify.err ||
  { cat verify.out verify.err >&2; fail "mandate delegate verify refused the token openid-client obtained"; }
python3 - "$PURPOSE" <<'PY' || { cat verify.out >&2; fail "mandate delegate verify does not show the chain as signed"; }
import json, sys
chain = json.load(open("verify.out"))["chain"]
assert [h["delegator"].rsplit("/", 1)[1] for h in chain] == ["a", "b"], chain
assert chain[0]["purpose"] == sys.argv[1] and "purpose" not in chain[1], chain
PY
ID=$(python3 -c 'import base64, json, sys; p = open(sys.argv[1]).read().split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["jti"])' sub.jwt)
# The auditor walks the chain and finds the purpose a signed, as signed.
adm audit chain "$ID" --verify --vkey data/audit/log.vkey >chain.out 2>&1 || { cat chain.out >&2; fail "audit chain --verify"; }
grep -qF "purpose: $PURPOSE" chain.out || { cat chain.out >&2; fail "the audit chain does not show the purpose as signed"; }
say "mandate delegate verify took the token c was given, and audit chain --verify shows the purpose as a signed it"
say "ok"

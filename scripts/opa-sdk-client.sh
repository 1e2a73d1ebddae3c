#!/usr/bin/env bash
# Interoperability check: a platform asks Mandate's policy decision API
# (OPA's v1 REST Data API, docs/api.md §5c) with the OPA TypeScript SDK
# (@styra/opa v1.7.10, from the npm registry), written for OPA and
# knowing nothing of Mandate (scripts/opa-sdk-client.mjs):
#   - evaluate with an input (POST /v1/data/{path}) and without (GET),
#     of the embedded policies, their data, and a module of the
#     platform's own in --policy-dir;
#   - evaluateBatch falls back to one evaluation per input on the 404
#     of OPA Enterprise's batch API, as with OPA;
#   - a policy's evaluation error is the SDK's ServerError internal_error.
# test.sh runs it; it needs Node.js 20.18 or later and npm (the npm
# registry), Go and gcc (cgo). All on 127.0.0.1, under this user.
#
#   scripts/opa-sdk-client.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/interop.sh"
interop_start "OPA SDK interop"

say "installing @styra/opa and undici from the npm registry"
npm_packages "$W/js" @styra/opa@1.7.10 undici@7.30.2
cp "$ROOT/scripts/opa-sdk-client.mjs" "$W/js/"

cd "$W"
# The embedded policies, and a module of the platform's: a rule to ask,
# and one whose two definitions conflict (an evaluation error).
"$MANDATE" policy export --dir policies >/dev/null
cat >policies/sdkcheck.rego <<'REGO'
package sdkcheck

greeting := concat("", ["hello, ", input.name])

conflict := 1

conflict := 2 if true
REGO
TD=spiffe://mandate.localhost/agent
cat >mandate.yaml <<YAML
data_dir: data
policy:
  decision_callers: ["$TD/platform"]
YAML
start_serve --config mandate.yaml --policy-dir policies || fail "the authority did not start"
join_node
adm admin agent create --spiffe-id "$TD/platform" --node-id "$NODE" >/dev/null
m svid x509 --creds node --spiffe-id "$TD/platform" --out platform >/dev/null

node js/opa-sdk-client.mjs "$URL" platform || fail "the OPA SDK's calls did not go as documented"
say "ok"

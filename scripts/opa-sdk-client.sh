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
W=$(mktemp -d)
SERVE=
cleanup() {
  [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() {
  echo "OPA SDK interop: $*" >&2
  [ -f "$W/serve.log" ] && { echo "--- serve.log" >&2; tail -15 "$W/serve.log" >&2; }
  exit 1
}
say() { echo "OPA SDK interop: $*"; }
trap 'fail "a command failed at line $LINENO"' ERR
command -v node >/dev/null && command -v npm >/dev/null || fail "needs Node.js and npm"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || a === 20 && b >= 18 ? 0 : 1)' ||
  fail "needs Node.js 20.18 or later, not $(node --version)"
if [ -z "$MANDATE" ]; then
  MANDATE=$W/mandate
  (cd "$ROOT" && go build -o "$MANDATE" ./cmd/mandate)
fi

say "installing @styra/opa and undici from the npm registry"
mkdir "$W/js"
cp "$ROOT/scripts/opa-sdk-client.mjs" "$W/js/"
npm_install() { npm install --prefix "$W/js" --no-audit --no-fund --save-exact @styra/opa@1.7.10 undici@7.30.2; }
retry3 npm_install >"$W/npm.log" 2>&1 || { cat "$W/npm.log" >&2; fail "npm install failed"; }

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
export MANDATE_SERVER=$URL
m() { "$MANDATE" "$@"; }
adm() { m "$@" --creds data/admin; }
TOKEN=$(adm admin join-token create --quiet)
NODE=$(m node join --token "$TOKEN" --quiet --out node --bundle data/admin/bundle.pem)
adm admin agent create --spiffe-id "$TD/platform" --node-id "$NODE" >/dev/null
m svid x509 --creds node --spiffe-id "$TD/platform" --out platform >/dev/null

node js/opa-sdk-client.mjs "$URL" platform || fail "the OPA SDK's calls did not go as documented"
say "ok"

#!/usr/bin/env bash
# Interoperability check: a Mandate authority (org-a.example) and a SPIRE
# server (spire.example, v1.13.3, built from the Go module proxy) federate
# both ways with the SPIFFE bundle endpoint, https_spiffe profile, as
# README.md (Federation) and docs/api.md say:
#   - each fetches the other's bundle, and a new X.509 CA or JWT key of
#     either (a SPIRE prepared authority, a Mandate ca rotate) reaches the
#     other without help;
#   - a SPIRE X509-SVID is a decision caller of Mandate (mTLS), and a
#     delegatee Mandate binds a delegation to, verified with either side's
#     bundles; a SPIRE JWT-SVID validates at a Mandate node's Workload API;
#   - Mandate's X509-SVIDs and JWT-SVIDs verify with the bundle SPIRE
#     fetched (openssl, go-spiffe);
#   - SPIRE's endpoint under Mandate's default endpoint ID is refused,
#     naming the ID expected.
# test.sh runs it; it needs Go and the module proxy, gcc (SPIRE's
# SQLite), jq, openssl, curl and python3. All on 127.0.0.1. Building SPIRE
# takes minutes with an empty build cache, seconds with a warm one.
#
#   scripts/spire-federation.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/interop.sh"
W=$(mktemp -d)
SERVE= SPIRE= NODE_RUN=
cleanup() {
  for p in "$NODE_RUN" "$SPIRE" "$SERVE"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() {
  echo "spire federation interop: $*" >&2
  for f in serve.log spire.log node-run.log; do [ -f "$W/$f" ] && { echo "--- $f" >&2; tail -15 "$W/$f" >&2; }; done
  exit 1
}
say() { echo "spire federation interop: $*"; }
if [ -z "$MANDATE" ]; then
  MANDATE=$W/mandate
  (cd "$ROOT" && go build -o "$MANDATE" ./cmd/mandate)
fi

# SPIRE's server, and a go-spiffe checker, in a module of their own.
mkdir "$W/spire"
cat >"$W/spire/check.go" <<'EOF'
// check verifies SVIDs as a SPIFFE workload does, with go-spiffe:
//
//	check x509 BUNDLE TD SVID_PEM             the chain, against TD's SPIFFE bundle
//	check jwt BUNDLE TD AUDIENCE TOKEN_FILE   a JWT-SVID, against TD's SPIFFE bundle
//	check validate SOCKET AUDIENCE TOKEN_FILE a Workload API's ValidateJWTSVID
package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	a := os.Args[1:]
	id, err := check(a)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(id)
}

func check(a []string) (spiffeid.ID, error) {
	switch a[0] {
	case "x509", "jwt":
		b, err := spiffebundle.Load(spiffeid.RequireTrustDomainFromString(a[2]), a[1])
		if err != nil {
			return spiffeid.ID{}, err
		}
		if a[0] == "jwt" {
			tok, err := os.ReadFile(a[4])
			if err != nil {
				return spiffeid.ID{}, err
			}
			s, err := jwtsvid.ParseAndValidate(string(bytes.TrimSpace(tok)), b, []string{a[3]})
			if err != nil {
				return spiffeid.ID{}, err
			}
			return s.ID, nil
		}
		p, err := os.ReadFile(a[3])
		if err != nil {
			return spiffeid.ID{}, err
		}
		var chain []*x509.Certificate
		for blk, rest := pem.Decode(p); blk != nil; blk, rest = pem.Decode(rest) {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return spiffeid.ID{}, err
			}
			chain = append(chain, c)
		}
		id, _, err := x509svid.Verify(chain, b)
		return id, err
	case "validate":
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+a[1]))
		if err != nil {
			return spiffeid.ID{}, err
		}
		defer c.Close()
		tok, err := os.ReadFile(a[3])
		if err != nil {
			return spiffeid.ID{}, err
		}
		s, err := c.ValidateJWTSVID(ctx, string(bytes.TrimSpace(tok)), a[2])
		if err != nil {
			return spiffeid.ID{}, err
		}
		return s.ID, nil
	}
	return spiffeid.ID{}, fmt.Errorf("unknown check %q", a[0])
}
EOF
say "building spire-server $SPIRE_VERSION"
(build_spire "$W/spire" spire-interop "$SPIRE_VERSION" &&
  cd "$W/spire" && GOWORK=off GOFLAGS=-buildvcs=false go build -o check .) >"$W/build.log" 2>&1 ||
  { cat "$W/build.log" >&2; fail "building SPIRE failed"; }
SS=$W/spire/spire-server CHECK=$W/spire/check
cd "$W"

# Mandate, with a short refresh hint and SVID life, so that a rotation
# takes over within the check.
cat >mandate.yaml <<'EOF'
trust_domain: org-a.example
data_dir: data
federation:
  bundle_refresh_hint: 10s
ca:
  x509_svid_ttl: 1m
policy:
  decision_callers: [spiffe://spire.example/caller]
EOF
start_serve --config mandate.yaml || fail "the authority did not start"
export MANDATE_SERVER=$URL
m() { "$MANDATE" "$@"; }
adm() { m "$@" --creds data/admin; }
m bundle show --bundle data/admin/bundle.pem >org-a.bundle.json

# SPIRE, its bundle endpoint on https_spiffe, federated with Mandate (whose
# endpoint presents spiffe://org-a.example/mandate/server).
SOCK=$W/spire-api.sock
start_spire() {
  local api_port bundle_port
  for _ in 1 2 3; do
    api_port=$(free_port) bundle_port=$(free_port)
    cat >spire.conf <<EOF
server {
  bind_address = "127.0.0.1"
  bind_port = "$api_port"
  socket_path = "$SOCK"
  trust_domain = "spire.example"
  data_dir = "$W/spire-data"
  log_level = "DEBUG"
  ca_ttl = "1h"
  default_x509_svid_ttl = "5m"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = $bundle_port
      refresh_hint = "10s"
      profile "https_spiffe" {}
    }
    federates_with "org-a.example" {
      bundle_endpoint_url = "$URL/v1/bundle"
      bundle_endpoint_profile "https_spiffe" {
        endpoint_spiffe_id = "spiffe://org-a.example/mandate/server"
      }
    }
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$W/spire-data/datastore.sqlite3"
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
EOF
    if run_spire "$SS" "$SOCK" curl -sk "https://127.0.0.1:$bundle_port/"; then
      SPIRE_BUNDLE_URL=https://127.0.0.1:$bundle_port
      return 0
    fi
  done
  return 1
}
start_spire || fail "the SPIRE server did not start"
ss() { "$SS" "$@" -socketPath "$SOCK"; }
say "Mandate at $URL, SPIRE's bundle endpoint at $SPIRE_BUNDLE_URL"

# A bundle's authorities, as sorted lines: x509 <base64 DER> or jwt <kid>.
keys() { jq -r '.keys[] | if .use == "x509-svid" then "x509 " + .x5c[0] else "jwt " + .kid end' | sort; }
held_by_mandate() { adm admin federation list | jq '.federations[] | select(.trust_domain == "spire.example") | .bundle' | keys; }
held_by_spire() { ss bundle list -id spiffe://org-a.example -format spiffe | keys; }
served_by_spire() { curl -sk "$SPIRE_BUNDLE_URL" | keys; }
served_by_mandate() { curl -s --cacert data/admin/bundle.pem "$URL/v1/bundle" | keys; }
# until SECONDS WHAT CMD...: CMD succeeds within SECONDS, else fail.
until_ok() {
  local n=$1 what=$2
  shift 2
  for _ in $(seq "$n"); do "$@" && return 0; sleep 1; done
  fail "$what (after $n s)"
}
# same A B: the two lists are equal, and not empty.
same() { [ -n "$1" ] && [ "$1" = "$2" ]; }
mandate_has_spire() { same "$(held_by_mandate)" "$(served_by_spire)"; }
spire_has_mandate() { same "$(held_by_spire)" "$(served_by_mandate)"; }
# holds WHO FILE: WHO (held_by_mandate or held_by_spire) holds every
# authority FILE lists.
holds() { [ -z "$(comm -13 <($1) "$2")" ]; }

# Each side is given the other's bundle once, out of band. Mandate's
# default endpoint ID is not SPIRE's: the refusal names the one expected.
ss bundle set -format spiffe -id spiffe://org-a.example -path org-a.bundle.json >/dev/null
ss bundle show -format spiffe >spire.bundle.json
adm admin federation add --trust-domain spire.example --url "$SPIRE_BUNDLE_URL" --bundle-file spire.bundle.json >/dev/null
refused_for_id() {
  adm admin federation list | jq -e '.federations[0].last_error |
    contains("unexpected ID \"spiffe://spire.example/spire/server\"") and contains("endpoint_spiffe_id is \"spiffe://spire.example/mandate/server\"")' >/dev/null
}
until_ok 20 "SPIRE's endpoint under the default endpoint ID: $(adm admin federation list | jq -c '.federations[0].last_error')" refused_for_id
adm admin federation add --trust-domain spire.example --url "$SPIRE_BUNDLE_URL" \
  --endpoint-spiffe-id spiffe://spire.example/spire/server --bundle-file spire.bundle.json >/dev/null
until_ok 30 "Mandate did not fetch SPIRE's bundle: $(adm admin federation list | jq -c '.federations[0] | del(.bundle)')" mandate_has_spire
adm admin federation list | jq -e '.federations[0] | .bundle_sequence and .last_error == null and (.bundle.spiffe_refresh_hint == 10)' >/dev/null ||
  fail "Mandate's relationship: $(adm admin federation list | jq -c '.federations[0] | del(.bundle)')"
! grep -q "without a new sequence number" serve.log || fail "Mandate blamed SPIRE for a bundle it did not change: $(grep "sequence number" serve.log)"
ss federation refresh -id org-a.example >/dev/null || fail "SPIRE could not fetch Mandate's bundle"
until_ok 30 "SPIRE does not hold Mandate's bundle" spire_has_mandate
say "each holds the other's bundle ($(served_by_spire | wc -l) SPIRE authorities, $(served_by_mandate | wc -l) Mandate ones)"

# SPIRE publishes a new X.509 CA and JWT key: Mandate holds them by its
# next refresh (SPIRE's hint, 10 s), and takes them once active.
x=$(ss localauthority x509 prepare | awk '/Authority ID/ {print $3; exit}')
j=$(ss localauthority jwt prepare | awk '/Authority ID/ {print $3; exit}')
[ -n "$x" ] && [ -n "$j" ] || fail "SPIRE did not prepare a new X.509 CA and JWT key"
ss bundle show -format spiffe | keys >spire.new
[ "$(grep -c '^x509 ' spire.new)" = 2 ] && grep -qxF "jwt $j" spire.new || fail "SPIRE's bundle does not hold its prepared authorities"
until_ok 30 "Mandate did not pick up SPIRE's prepared authorities $x, $j" holds held_by_mandate spire.new
ss localauthority x509 activate -authorityID "$x" >/dev/null
ss localauthority jwt activate -authorityID "$j" >/dev/null
say "SPIRE's new X.509 CA and JWT key reached Mandate"

# Mandate publishes a new X.509 CA and activates a new JWT key: SPIRE
# fetches them on its own.
adm admin ca rotate --kind x509 --reason "spire interop" >/dev/null
j=$(adm admin ca rotate --kind jwt --reason "spire interop" --immediately | jq -r .authority.id)
served_by_mandate >mandate.new
[ "$(grep -c '^x509 ' mandate.new)" = 2 ] && grep -qxF "jwt $j" mandate.new || fail "Mandate's bundle does not hold its new authorities"
until_ok 120 "SPIRE did not pick up Mandate's new authorities" holds held_by_spire mandate.new
say "Mandate's new X.509 CA and JWT key reached SPIRE"

# A SPIRE workload calls Mandate's decision API over mTLS as a federated
# decision caller; another SPIRE ID is refused.
mkdir caller other wl
ss x509 mint -spiffeID spiffe://spire.example/caller -ttl 5m -write caller >/dev/null 2>&1
ss x509 mint -spiffeID spiffe://spire.example/other -ttl 5m -write other >/dev/null 2>&1
ss x509 mint -spiffeID spiffe://spire.example/workload -ttl 5m -write wl >/dev/null 2>&1
evaluate() {
  curl -sS -o eval.json -w '%{http_code}' --cacert data/admin/bundle.pem --cert "$1/svid.pem" --key "$1/key.pem" \
    -H 'Content-Type: application/json' \
    -d '{"subject": {"type": "agent", "id": "spiffe://org-a.example/agent/planner"}, "action": {"name": "calendar:read"}, "resource": {"type": "calendar", "id": "c1"}}' \
    "$URL/access/v1/evaluation"
}
[ "$(evaluate caller)" = 200 ] && jq -e 'has("decision")' eval.json >/dev/null || fail "a SPIRE decision caller: $(cat eval.json)"
[ "$(evaluate other)" = 403 ] || fail "a SPIRE ID that is no decision caller: $(cat eval.json)"
say "a SPIRE X509-SVID is a decision caller; another SPIRE ID is refused"

# An org-a agent delegates to the SPIRE workload, bound to its SPIRE
# X509-SVID; the token verifies with Mandate's bundles and with SPIRE's.
TOKEN=$(adm admin join-token create --quiet)
NODE=$(m node join --token "$TOKEN" --quiet --out node --bundle data/admin/bundle.pem)
A=spiffe://org-a.example/agent/planner
adm admin agent create --spiffe-id "$A" --node-id "$NODE" --scope calendar:read >/dev/null
m svid x509 --spiffe-id "$A" --creds node --out planner >/dev/null
m delegate request --creds planner --delegatee spiffe://spire.example/workload --scope calendar:read \
  --principal alice --bind-svid wl/svid.pem --out hop.jwt >/dev/null || fail "delegating to the SPIRE workload"
m delegate verify hop.jwt --bundles planner/bundles.json --presenter spiffe://spire.example/workload --presenter-cert wl/svid.pem >v.json ||
  fail "the delegation does not verify with Mandate's bundles: $(cat v.json)"
jq -n --slurpfile a <(ss bundle list -id spiffe://org-a.example -format spiffe) --slurpfile s <(ss bundle show -format spiffe) \
  '{"org-a.example": $a[0], "spire.example": $s[0]}' >spire-side.json
m delegate verify hop.jwt --bundles spire-side.json --presenter spiffe://spire.example/workload --presenter-cert wl/svid.pem >v.json ||
  fail "the delegation does not verify with SPIRE's bundles: $(cat v.json)"
say "a delegation to the SPIRE workload, bound to its SVID, verifies with either side's bundles"

# Mandate's SVIDs (a JWT-SVID signed by its new key) verify with SPIRE's
# view of org-a.example.
m svid x509 --spiffe-id "$A" --creds node --out planner >/dev/null
ss bundle list -id spiffe://org-a.example -format spiffe >spire-view.json
ss bundle list -id spiffe://org-a.example -format pem >spire-view.pem
openssl verify -CAfile spire-view.pem planner/svid.pem >/dev/null 2>&1 || fail "openssl: Mandate's X509-SVID does not verify with SPIRE's roots"
[ "$("$CHECK" x509 spire-view.json org-a.example planner/svid.pem)" = "$A" ] || fail "go-spiffe: Mandate's X509-SVID"
m svid jwt --creds planner --audience spiffe://spire.example/api --out planner.jwt
[ "$("$CHECK" jwt spire-view.json org-a.example spiffe://spire.example/api planner.jwt)" = "$A" ] || fail "go-spiffe: Mandate's JWT-SVID"
say "Mandate's X509-SVID and JWT-SVID verify with the bundle SPIRE fetched"

# A SPIRE JWT-SVID validates at an org-a node's Workload API (it holds the
# federated bundles), for its audience only.
"$MANDATE" node run --out node --workload-api "$W/w.sock" --workload "uid:$(id -u)=$A" >node-run.log 2>&1 &
NODE_RUN=$!
until_ok 20 "the node's Workload API did not start" test -S "$W/w.sock"
ss jwt mint -spiffeID spiffe://spire.example/workload -audience "$A" -ttl 5m -write spire.jwt >/dev/null 2>&1
[ "$("$CHECK" validate "$W/w.sock" "$A" spire.jwt)" = spiffe://spire.example/workload ] || fail "a SPIRE JWT-SVID does not validate at the Workload API"
! "$CHECK" validate "$W/w.sock" spiffe://org-a.example/agent/other spire.jwt >/dev/null 2>&1 || fail "a SPIRE JWT-SVID validated for another audience"
say "a SPIRE JWT-SVID validates at a Mandate node's Workload API"

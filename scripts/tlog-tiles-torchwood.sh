#!/usr/bin/env bash
# Interoperability check: a reader of the audit log that knows nothing of
# Mandate but the C2SP tlog-tiles read path and the log's verifier key
# (scripts/tlog-tiles-check.go, built with filippo.io/torchwood v0.6.1
# from the Go module proxy) verifies the signed checkpoint, reads and
# checks every entry from the entry bundles and hash tiles, finds a few
# byte for byte as the JSON API gives them, and, after more than a
# full tile of new entries, proves the grown log consistent with the
# checkpoint it saw first, as docs/api.md (§5e, C2SP tlog-tiles) says
# generic tlog tools and witnesses can.
# test.sh runs it; it needs Go and the module proxy, gcc (cgo) and curl.
# All on 127.0.0.1, under this user.
#
#   scripts/tlog-tiles-torchwood.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/interop.sh"
interop_start "tlog-tiles interop"

say "building the check with filippo.io/torchwood $TORCHWOOD_VERSION"
build_check tlog-tiles-check.go torchwood_module "$W/tlog-check"

cd "$W"
start_serve --data-dir data || fail "the authority did not start"
check() { ./tlog-check "$URL" data/audit/log.vkey seen.checkpoint data/admin/bundle.pem data/admin; }
check || fail "the first read of the log"

# Over a full tile (256 entries) more: an admin's join tokens,
# each an entry, eight requests at a time.
seq 300 | xargs -P 8 -I{} curl -sS -f -o /dev/null --cacert data/admin/bundle.pem --cert data/admin/svid.pem --key data/admin/svid.key \
  -H 'Content-Type: application/json' -d '{"ttl_seconds": 600}' "$URL/v1/admin/join-tokens" || fail "creating join tokens"
check || fail "the second read of the log"
say "ok"

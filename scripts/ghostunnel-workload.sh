#!/usr/bin/env bash
# Interoperability check: ghostunnel (v1.8.4, built from the Go module
# proxy), a SPIFFE Workload API consumer, tunnels over mTLS with the
# identities a Mandate node's Workload API gives it, as README.md and
# docs/api.md (the SPIFFE Workload API) say:
#   - a ghostunnel server and client, told apart by their executables'
#     paths, get an agent's identity each; a request through both
#     reaches a plain backend; a third ghostunnel (its path and sha256)
#     gets another agent's identity, which the server refuses;
#   - node run stopped and started again: ghostunnel watches the new
#     Workload API by itself;
#   - renewed X509-SVIDs, and after ca rotate --kind x509 the new CA's
#     bundle and then SVIDs it signed, reach both over the stream without
#     a restart, and requests go through all along;
#   - an agent's registration deleted: the Workload API stops serving it,
#     and ghostunnel says why.
# test.sh runs it; it needs Go and the module proxy, gcc (cgo), openssl,
# curl and python3. All on 127.0.0.1, under this user. Building ghostunnel
# takes a minute or two with an empty build cache, seconds with a warm one.
#
#   scripts/ghostunnel-workload.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/interop.sh"
W=$(cd "$(mktemp -d)" && pwd -P) # the path:PATH selectors take no symbolic link
SERVE= NODE_RUN= BACKEND= GT_SERVER= GT_CLIENT= GT_OTHER=
cleanup() {
  for p in "$GT_OTHER" "$GT_CLIENT" "$GT_SERVER" "$BACKEND" "$NODE_RUN" "$SERVE"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() {
  echo "ghostunnel workload interop: $*" >&2
  for f in serve.log node-run.log gt-server.log gt-client.log gt-other.log; do [ -f "$W/$f" ] && { echo "--- $f" >&2; tail -15 "$W/$f" >&2; }; done
  exit 1
}
say() { echo "ghostunnel workload interop: $*"; }
trap 'fail "a command failed at line $LINENO"' ERR
if [ -z "$MANDATE" ]; then
  MANDATE=$W/mandate
  (cd "$ROOT" && go build -o "$MANDATE" ./cmd/mandate)
fi

# ghostunnel, built in a copy of its module (ghostunnel_source).
say "building ghostunnel $GHOSTUNNEL_VERSION"
build_ghostunnel "$W/gt-src" "$W/gt-server" >"$W/build.log" 2>&1 || { cat "$W/build.log" >&2; fail "building ghostunnel failed"; }
rm -rf "$W/gt-src"
# One binary at three paths: the entries below tell the copies apart.
cp "$W/gt-server" "$W/gt-client"
cp "$W/gt-server" "$W/gt-other"
cd "$W"

# Mandate, with short SVID lives and refresh hint, so that renewals and a
# CA rotation happen within the check.
cat >mandate.yaml <<'EOF'
data_dir: data
ca:
  x509_svid_ttl: 1m
federation:
  bundle_refresh_hint: 5s
EOF
start_serve --config mandate.yaml || fail "the authority did not start"
export MANDATE_SERVER=$URL
m() { "$MANDATE" "$@"; }
adm() { m "$@" --creds data/admin; }
TOKEN=$(adm admin join-token create --quiet)
NODE=$(m node join --token "$TOKEN" --quiet --out node --bundle data/admin/bundle.pem)
TD=spiffe://mandate.localhost/agent
for a in server client other; do
  adm admin agent create --spiffe-id "$TD/$a" --node-id "$NODE" >/dev/null
done
U=$(id -u)
H=$(sha256sum gt-other | cut -d' ' -f1)
SOCK=$W/workload.sock
start_node_run() {
  "$MANDATE" node run --out node --workload-api "$SOCK" \
    --workload "uid:$U,path:$W/gt-server=$TD/server" \
    --workload "uid:$U,path:$W/gt-client=$TD/client" \
    --workload "uid:$U,path:$W/gt-other,sha256:$H=$TD/other" >>node-run.log 2>&1 &
  NODE_RUN=$!
  for _ in $(seq 100); do
    [ -S "$SOCK" ] && return 0
    kill -0 "$NODE_RUN" 2>/dev/null || break
    sleep 0.1
  done
  fail "node run did not serve the Workload API"
}
start_node_run

# start NAME ARGS...: runs ghostunnel NAME (gt-NAME) with ARGS, a free
# --listen and --status port (in NAME_PORT and NAME_STATUS), and the
# Workload API; sets GT_NAME to its pid once it listens.
start() {
  local name=$1 pid port status
  shift
  for _ in 1 2 3; do
    port=$(free_port) status=$(free_port)
    "./gt-$name" "$@" --listen "127.0.0.1:$port" --status "127.0.0.1:$status" \
      --use-workload-api-addr "unix://$SOCK" >"gt-$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      if grep -q "listening for connections on 127.0.0.1:$port" "gt-$name.log"; then
        printf -v "GT_${name^^}" %s "$pid"
        printf -v "${name^^}_PORT" %s "$port"
        printf -v "${name^^}_STATUS" %s "$status"
        return 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  fail "ghostunnel $name did not start"
}
mkdir www
echo "hello through ghostunnel" >www/index.txt
for _ in 1 2 3; do
  BACKEND_PORT=$(free_port)
  python3 -m http.server "$BACKEND_PORT" --bind 127.0.0.1 --directory www >backend.log 2>&1 &
  BACKEND=$!
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$BACKEND_PORT/index.txt" >/dev/null && break 2; sleep 0.1; done
  kill "$BACKEND" 2>/dev/null || true
  BACKEND=
done
[ -n "$BACKEND" ] || fail "the backend did not start"
start server server --target "127.0.0.1:$BACKEND_PORT" --allow-uri "$TD/client"
start client client --target "127.0.0.1:$SERVER_PORT" --verify-uri "$TD/server"
start other client --target "127.0.0.1:$SERVER_PORT" --verify-uri "$TD/server"

# get PORT: the backend's file, through the ghostunnel client at PORT.
get() { curl -sS -m 10 "http://127.0.0.1:$1/index.txt" 2>&1; }
# svid PORT: the serial, issuer key id and SPIFFE ID of the X509-SVID a
# ghostunnel presents on its status port (nothing if it presents none;
# s_client's exit status varies with how the connection ends).
svid() {
  echo | timeout 10 openssl s_client -connect "127.0.0.1:$1" 2>/dev/null |
    openssl x509 -noout -serial -ext subjectAltName,authorityKeyIdentifier 2>/dev/null |
    grep -oE 'serial=[0-9A-F]+|URI:[^ ,]+|([0-9A-F]{2}:){19}[0-9A-F]{2}' | sed -E '/^URI:/!s/://g; s/^URI://' | tr '\n' ' ' || true
}
# until_ok SECONDS WHAT CMD...: CMD succeeds within SECONDS, else fail.
until_ok() {
  local n=$1 what=$2
  shift 2
  for _ in $(seq "$n"); do "$@" && return 0; sleep 1; done
  fail "$what (after $n s)"
}
goes_through() { [ "$(get "$CLIENT_PORT")" = "hello through ghostunnel" ]; }
until_ok 20 "a request through both ghostunnels: $(get "$CLIENT_PORT")" goes_through
for who in server client other; do
  port=${who^^}_STATUS
  case "$(svid "${!port}")" in
  *" $TD/$who "*) ;;
  *) fail "ghostunnel $who presents $(svid "${!port}"), not $TD/$who" ;;
  esac
done
[ "$(get "$OTHER_PORT")" != "hello through ghostunnel" ] || fail "the server let $TD/other through"
# The refusal reaches the server's log just after the client sees it.
server_refused() { grep -q "principal not allowed" gt-server.log; }
until_ok 10 "the server did not refuse $TD/other" server_refused
say "a request goes through a ghostunnel client ($TD/client) and server ($TD/server); $TD/other is refused"

# node run stopped and started again: the SVIDs held serve meanwhile.
kill "$NODE_RUN"
wait "$NODE_RUN" 2>/dev/null || true
[ ! -e "$SOCK" ] || fail "node run left its socket behind"
goes_through || fail "a request while node run was stopped: $(get "$CLIENT_PORT")"
start_node_run
say "node run stopped and started again"

# Renewals and an X.509 CA rotation: the new CA is published at once,
# and signs from activates_at (a minute, the SVIDs' life, and a rotation
# step later); every request goes through meanwhile, and both ghostunnels
# end with SVIDs of the new CA, taken from the stream (the restarted
# Workload API's included).
held_before() {
  before_server=$(svid "$SERVER_STATUS") before_client=$(svid "$CLIENT_STATUS")
  [ -n "$before_server" ] && [ -n "$before_client" ]
}
until_ok 10 "the ghostunnels present no SVID" held_before
NEW=$(adm admin ca rotate --kind x509 --reason "ghostunnel interop" | python3 -c 'import json, sys; print(json.load(sys.stdin)["authority"]["id"].upper())')
[ -n "$NEW" ] || fail "ca rotate"
on_new_ca() {
  goes_through || fail "a request during the rotation: $(get "$CLIENT_PORT")"
  case "$(svid "$SERVER_STATUS")$(svid "$CLIENT_STATUS")" in
  *"$NEW "*"$NEW "*) return 0 ;;
  esac
  return 1
}
until_ok 150 "the ghostunnels did not get SVIDs of the new CA $NEW: server $(svid "$SERVER_STATUS"), client $(svid "$CLIENT_STATUS")" on_new_ca
[ "$(svid "$SERVER_STATUS")" != "$before_server" ] && [ "$(svid "$CLIENT_STATUS")" != "$before_client" ] || fail "no renewal reached the ghostunnels"
goes_through || fail "a request after the rotation: $(get "$CLIENT_PORT")"
say "renewed SVIDs and the new CA $NEW reached both ghostunnels without a restart; requests went through all along"

# The client agent's registration deleted: node run serves it no more
# from its next sync, and ghostunnel's Workload API stream says why.
adm admin agent delete "$(adm admin agent list | python3 -c 'import json, sys; print([a["id"] for a in json.load(sys.stdin)["agents"] if a["spiffe_id"].endswith("/agent/client")][0])')" >/dev/null
client_told() { grep -q "agent-not-registered" gt-client.log; }
until_ok 30 "ghostunnel was not told the client agent is no longer served" client_told
node_run_said() { grep -q "no longer lets this host serve an identity.*$TD/client" node-run.log; }
until_ok 10 "node run did not say it stopped serving $TD/client" node_run_said
say "a registration deleted: node run stops serving it, and ghostunnel says why"

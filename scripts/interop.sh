# Sourced by the interop scripts (and scripts/bench-spire.sh, and test.sh
# to fetch modules ahead): what they share to start the authority, pick
# ports, fetch modules and build SPIRE, ghostunnel, torchwood and zlint.

# The versions the checks build, from the Go module proxy.
SPIRE_VERSION=v1.13.3
GHOSTUNNEL_VERSION=v1.8.4
TORCHWOOD_VERSION=v0.6.1
ZLINT_VERSION=v3.7.3

# start_serve runs "$MANDATE serve" with the given flags on 127.0.0.1 in
# the current directory (output in serve.out and serve.log) and sets
# SERVE (its pid) and URL once it serves; it fails if serve exits first,
# or after 20 s.
start_serve() {
  "$MANDATE" serve "$@" --listen 127.0.0.1:0 >serve.out 2>serve.log &
  SERVE=$!
  URL=
  for _ in $(seq 200); do
    URL=$(grep -o 'is serving on https://[^ ]*' serve.out 2>/dev/null | cut -d' ' -f4 || true)
    [ -n "$URL" ] && return 0
    kill -0 "$SERVE" 2>/dev/null || return 1 # it exited
    sleep 0.1
  done
  return 1
}

# free_port prints a TCP port free on 127.0.0.1 now (another process may
# take it before it is used: its users try again with another).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# retry3 CMD...: runs CMD until it succeeds, three times at most, 5 s
# apart: the module proxy may fail a download once.
retry3() {
  local attempt
  for attempt in 1 2 3; do
    "$@" && return 0
    [ "$attempt" = 3 ] && return 1
    sleep 5
  done
}

# spire_module DIR NAME VERSION makes DIR a module NAME of its own with
# spire-server VERSION as a tool, its modules fetched.
spire_module() {
  (
    cd "$1" &&
      export GOWORK=off GOFLAGS=-buildvcs=false &&
      go mod init "$2" >/dev/null 2>&1 &&
      retry3 go get -tool "github.com/spiffe/spire/cmd/spire-server@$3"
  )
}

# build_spire DIR NAME VERSION builds spire-server VERSION from the
# module proxy as DIR/spire-server, in DIR made a module NAME of its own
# (where the caller's own Go programs may be built next). Each step must
# succeed (callers run it in a list, where set -e does not stop).
build_spire() {
  spire_module "$@" &&
    (cd "$1" && GOWORK=off GOFLAGS=-buildvcs=false go build -o spire-server github.com/spiffe/spire/cmd/spire-server)
}

# ghostunnel_source DIR copies ghostunnel GHOSTUNNEL_VERSION's module to
# DIR, with its modules fetched: it is built there, with its own go.sum
# (its vendor directory is incomplete in the module's zip, and is
# removed).
ghostunnel_source() {
  local from
  (
    export GOWORK=off GOFLAGS=-buildvcs=false
    from=$(retry3 go mod download -json "github.com/ghostunnel/ghostunnel@$GHOSTUNNEL_VERSION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') &&
      cp -r "$from" "$1" && chmod -R u+w "$1" && rm -rf "$1/vendor" &&
      cd "$1" && retry3 go mod download
  )
}

# build_ghostunnel DIR OUT builds ghostunnel GHOSTUNNEL_VERSION into
# OUT, an absolute path, in DIR (ghostunnel_source).
build_ghostunnel() {
  ghostunnel_source "$1" && (cd "$1" && GOWORK=off GOFLAGS=-buildvcs=false go build -mod=mod -o "$2" .)
}

# torchwood_module DIR makes DIR a module of its own requiring
# filippo.io/torchwood TORCHWOOD_VERSION, its modules fetched.
torchwood_module() {
  (
    cd "$1" &&
      export GOWORK=off GOFLAGS=-buildvcs=false &&
      go mod init tlogcheck >/dev/null 2>&1 &&
      retry3 go get "filippo.io/torchwood@$TORCHWOOD_VERSION" golang.org/x/mod
  )
}

# zlint_module DIR makes DIR a module of its own requiring
# github.com/zmap/zlint/v3 ZLINT_VERSION, its modules fetched.
zlint_module() {
  (
    cd "$1" &&
      export GOWORK=off GOFLAGS=-buildvcs=false &&
      go mod init x509check >/dev/null 2>&1 &&
      retry3 go get "github.com/zmap/zlint/v3@$ZLINT_VERSION"
  )
}

# prefetch_modules DIR fetches, into the module cache, what the checks
# that build SPIRE, ghostunnel, torchwood and zlint will fetch (each in a
# directory under DIR, removed after): test.sh runs it in the background
# while the tests use the CPU, so that the downloads do not wait for
# them. Then it compiles spire-server into the build cache, at a low
# priority (nice): the tests leave the CPU idle while they wait on the
# servers they start, and the SPIRE check's own build, minutes with an
# empty cache, then finds its packages compiled. A failure is only
# reported: each check fetches and builds what it misses.
prefetch_modules() {
  mkdir -p "$1/spire" "$1/torchwood" "$1/zlint"
  spire_module "$1/spire" prefetch "$SPIRE_VERSION" || echo "prefetch: spire-server $SPIRE_VERSION's modules: failed"
  ghostunnel_source "$1/ghostunnel" || echo "prefetch: ghostunnel $GHOSTUNNEL_VERSION's modules: failed"
  torchwood_module "$1/torchwood" || echo "prefetch: torchwood $TORCHWOOD_VERSION's modules: failed"
  zlint_module "$1/zlint" || echo "prefetch: zlint $ZLINT_VERSION's modules: failed"
  (cd "$1/spire" && GOWORK=off GOFLAGS=-buildvcs=false nice -n 10 go build -o /dev/null github.com/spiffe/spire/cmd/spire-server) ||
    echo "prefetch: spire-server $SPIRE_VERSION's build: failed"
  rm -rf "$1/spire" "$1/ghostunnel" "$1/torchwood" "$1/zlint"
}

# prebuild_checks DIR compiles, into the build cache, the programs of
# the checks that run after SPIRE's (ghostunnel, the torchwood and zlint
# readers; each in a directory under DIR, removed after): test.sh runs
# it in the background while the first checks run, which mostly wait on
# the processes they start, so that the later checks' own builds find
# most of their packages compiled. A failure is only reported: each
# check builds what it needs.
prebuild_checks() {
  mkdir -p "$1"
  build_ghostunnel "$1/ghostunnel" "$1/gt-server" || echo "prebuild: ghostunnel $GHOSTUNNEL_VERSION: failed"
  compile_check scripts/tlog-tiles-check.go torchwood_module "$1/torchwood" "$1/tlog-check" || echo "prebuild: the torchwood reader: failed"
  compile_check scripts/x509-zlint-check.go zlint_module "$1/zlint" "$1/x509-check" || echo "prebuild: the zlint check: failed"
  rm -rf "$1/ghostunnel" "$1/torchwood" "$1/zlint" "$1/gt-server" "$1/tlog-check" "$1/x509-check"
}

# run_spire SS SOCK [CHECK...] starts "SS run -config spire.conf" in the
# current directory (its state in spire-data, its log in spire.log),
# sets SPIRE (its pid), and waits, 20 s at most, until its API answers on
# the socket SOCK and CHECK, when given, succeeds. Else it stops it,
# removes spire-data and fails: a port it was given may have been taken
# meanwhile, and the caller tries again with others.
run_spire() {
  local ss=$1 sock=$2
  shift 2
  mkdir -p spire-data
  "$ss" run -config spire.conf >spire.log 2>&1 &
  SPIRE=$!
  for _ in $(seq 100); do
    kill -0 "$SPIRE" 2>/dev/null || break
    if "$ss" healthcheck -socketPath "$sock" >/dev/null 2>&1 && { [ $# = 0 ] || "$@" >/dev/null 2>&1; }; then
      return 0
    fi
    sleep 0.2
  done
  kill "$SPIRE" 2>/dev/null || true
  wait "$SPIRE" 2>/dev/null || true
  SPIRE=
  rm -rf spire-data
  return 1
}

# interop_start NAME: the common start of a check that runs the
# authority by itself: a work directory W (removed at exit, the
# authority in SERVE stopped first), say and fail prefixed with NAME
# (fail also prints the end of serve.log), any failing command failing
# the check with its line, and MANDATE built into W when the caller left
# it empty. The caller sets ROOT and MANDATE first.
interop_start() {
  INTEROP_NAME=$1
  W=$(mktemp -d)
  SERVE=
  trap interop_cleanup EXIT
  set -E # the ERR trap in functions too
  trap 'fail "a command failed at line $LINENO"' ERR
  if [ -z "$MANDATE" ]; then
    MANDATE=$W/mandate
    (cd "$ROOT" && go build -o "$MANDATE" ./cmd/mandate)
  fi
}
interop_cleanup() {
  [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
say() { echo "$INTEROP_NAME: $*"; }
fail() {
  echo "$INTEROP_NAME: $*" >&2
  [ -f "$W/serve.log" ] && { echo "--- serve.log" >&2; tail -15 "$W/serve.log" >&2; }
  exit 1
}

# compile_check SRC MODULE DIR OUT builds the Go program SRC (kept out
# of the mandate module by its build constraint) into OUT, an absolute
# path, in DIR made a module of its own by MODULE (torchwood_module,
# zlint_module).
compile_check() {
  mkdir -p "$3" && cp "$1" "$3/main.go" &&
    ("$2" "$3" && cd "$3" && GOWORK=off GOFLAGS=-buildvcs=false go build -o "$4" main.go)
}

# build_check SRC MODULE OUT: after interop_start, compile_check of
# scripts/SRC in W/check; a failed build fails the check with its log.
build_check() {
  compile_check "$ROOT/scripts/$1" "$2" "$W/check" "$3" >"$W/build.log" 2>&1 ||
    { cat "$W/build.log" >&2; fail "building the check failed"; }
}

# join_node: after start_serve, m and adm (the CLI as anyone, and as the
# admin of ./data) with MANDATE_SERVER set, and a node joined with a join
# token, its credential in ./node and its SPIFFE ID in NODE.
join_node() {
  export MANDATE_SERVER=$URL
  m() { "$MANDATE" "$@"; }
  adm() { m "$@" --creds data/admin; }
  local token
  token=$(adm admin join-token create --quiet)
  NODE=$(m node join --token "$token" --quiet --out node --bundle data/admin/bundle.pem)
}

# npm_packages DIR PACKAGE@VERSION...: these exact versions in
# DIR/node_modules, from the npm registry (tried three times); fails
# without Node.js 20.18 or later and npm.
npm_packages() {
  command -v node >/dev/null && command -v npm >/dev/null || fail "needs Node.js and npm"
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || a === 20 && b >= 18 ? 0 : 1)' ||
    fail "needs Node.js 20.18 or later, not $(node --version)"
  local dir=$1
  shift
  mkdir -p "$dir"
  retry3 npm install --prefix "$dir" --no-audit --no-fund --save-exact "$@" >"$dir/npm.log" 2>&1 ||
    { cat "$dir/npm.log" >&2; fail "npm install $* failed"; }
}

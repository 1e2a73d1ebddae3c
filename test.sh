#!/usr/bin/env bash
# The project's test command (CI runs exactly this): formatting, vet, every
# test with the race detector, then eight interoperability checks: TPM
# attestation with another TPM 2.0 stack (tpm2-tools on swtpm), a
# delegation signed by an agent in another language (Python, jwcrypto),
# federation both ways with a SPIRE server (built from the module
# proxy: minutes with an empty build cache), ghostunnel tunnelling
# with the identities of a node's Workload API (built from the module
# proxy too: a minute or two with an empty build cache), RFC 8693
# token exchange by an OAuth client library of another language
# (Node.js's openid-client, from the npm registry), decisions asked
# with the OPA TypeScript SDK (@styra/opa, from the npm registry too),
# the audit log read through its C2SP tiles by a reader built on
# filippo.io/torchwood (from the module proxy), and every certificate
# Mandate issues linted with zlint (from the module proxy too) and
# verified by OpenSSL.
#
# Needs Go 1.26 and gcc (cgo: the race detector and the TPM simulator),
# OpenSSL's headers (the simulator links libcrypto), SoftHSM (softhsm2:
# the PKCS#11 token the CA's keys are tested in), and for the interop
# checks tpm2-tools, swtpm, jq, xxd, openssl, curl, python3-jwcrypto,
# and Node.js 20.18 or later with npm. What is missing of the Debian
# packages is installed with apt-get when the script runs as root;
# otherwise it says what to install (Node.js is not installed: Debian
# bookworm's is older). Modules come from the Go module proxy and the npm
# registry.
set -euo pipefail
cd "$(dirname "$0")"

# phase says what starts, and when since the start: where a slow run
# spends its time.
phase() { printf 'test.sh: %s at %dm%02ds\n' "$1" $((SECONDS / 60)) $((SECONDS % 60)); }

missing=()
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
for tool in tpm2_createek:tpm2-tools swtpm:swtpm jq:jq xxd:xxd openssl:openssl curl:curl softhsm2-util:softhsm2; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import jwcrypto' 2>/dev/null || missing+=(python3-jwcrypto)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: ${missing[*]} (install these Debian packages, or run as root to have them installed)"; exit 1
  fi
  echo "installing ${missing[*]}"
  for attempt in 1 2 3; do
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/tmp/mandate-apt.log 2>&1; then
      break
    fi
    [ "$attempt" = 3 ] && { cat /tmp/mandate-apt.log; exit 1; }
    sleep 5
  done
fi

phase "gofmt and vet"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
# The libraries and the mandate command build for macOS and Windows too
# (an auditor verifies a chain from any machine): each package imported
# must have files for them. Compiling for them takes minutes with an empty
# build cache; listing the imports takes a second.
for target in windows/amd64 darwin/arm64; do
  GOOS=${target%/*} GOARCH=${target#*/} CGO_ENABLED=0 go list -deps ./... >/dev/null
done
# While the tests use the CPU, the modules the interop checks build with
# (SPIRE, ghostunnel, a torchwood reader, zlint) are fetched in the background:
# network, not CPU (once vet has fetched the module's own, which the
# tests wait for); then spire-server is compiled, at a low priority, with
# the CPU the tests leave idle. Each check still fetches and builds what
# is missing.
bin=$(mktemp -d)
pre=$(mktemp -d)
# Each background job runs in a process group of its own (setsid), so that
# the exit trap stops the go commands it started along with it.
setsid bash -c 'set -euo pipefail; . scripts/interop.sh && prefetch_modules "$1"' _ "$pre/work" >"$pre/log" 2>&1 &
prefetch=$!
prebuild=
trap 'for job in $prefetch $prebuild; do kill -- "-$job" 2>/dev/null || true; done; rm -rf "$bin" "$pre"' EXIT
# The packages whose tests take longest start first (go test starts them
# in the order named), so that the short ones fill the CPU beside them
# rather than leave one of them running alone at the end; three at a
# time, since a package's tests leave a core idle a quarter of the time
# (waiting on the servers and files they use): 312 s instead of 344 s
# with warm caches on 2 cores. A package's tests may take 20 minutes
# (go test's default bound is 10): the cmd/mandate tests take 2 minutes
# on an idle machine, and near 10 with empty caches and the CPU shared.
phase "tests"
go test -race -count=1 -p 3 -timeout 20m ./cmd/mandate ./api ./authority ./...
go build -o "$bin/mandate" ./cmd/mandate
wait "$prefetch" || true
grep 'prefetch:' "$pre/log" || true
# The first checks mostly wait on the processes they start: meanwhile
# the programs of the later ones (ghostunnel, the torchwood and zlint
# readers) are compiled into the build cache, which their own builds
# then find filled.
setsid bash -c 'set -euo pipefail; . scripts/interop.sh && prebuild_checks "$1"' _ "$pre/build" >"$pre/build.log" 2>&1 &
prebuild=$!
phase "interop checks"
scripts/tpm2-tools-attest.sh "$bin/mandate"
scripts/python-delegate.sh "$bin/mandate"
scripts/spire-federation.sh "$bin/mandate"
scripts/ghostunnel-workload.sh "$bin/mandate"
scripts/oauth-token-exchange.sh "$bin/mandate"
scripts/opa-sdk-client.sh "$bin/mandate"
scripts/tlog-tiles-torchwood.sh "$bin/mandate"
scripts/x509-zlint.sh "$bin/mandate"
wait "$prebuild" || true
grep 'prebuild:' "$pre/build.log" || true
phase "done"

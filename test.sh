#!/usr/bin/env bash
# The project's test command (CI runs exactly this): formatting, vet, then
# every test with the race detector. Needs Go 1.26, gcc (cgo: the race
# detector and the TPM simulator) and OpenSSL's headers (the TPM simulator
# links libcrypto); installs libssl-dev with apt-get when it is missing and
# it can. Modules come from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f /usr/include/openssl/evp.h ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing libssl-dev (for the TPM simulator)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev) >/dev/null
  else
    echo "OpenSSL headers missing: install libssl-dev (the TPM simulator needs them)"; exit 1
  fi
fi
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -race -count=1 ./...

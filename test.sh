#!/usr/bin/env bash
# The project's test command (CI runs exactly this): formatting, vet, then
# every test with the race detector. Needs Go 1.26 and gcc (cgo, for the
# race detector); modules come from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -race -count=1 ./...

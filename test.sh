#!/usr/bin/env bash
# The project's test command: vet, then every test with the race detector
# off (race doubles CI time on 2 cores; run `go test -race ./...` locally).
set -euo pipefail
cd "$(dirname "$0")"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -count=1 ./...

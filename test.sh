#!/usr/bin/env bash
# The whole test suite: vet, race-enabled tests, and every fuzz target briefly.
set -euo pipefail
cd "$(dirname "$0")"
FUZZTIME=${FUZZTIME:-10s}
echo "== go vet"; go vet ./...
echo "== go test -race"; go test -race -count=1 -timeout 20m ./...
echo "== CGO_ENABLED=0 build"; CGO_ENABLED=0 go build -o /dev/null ./...
echo "== fuzz ($FUZZTIME each)"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "-- $pkg $f"
    go test -run='^$' -fuzz="^$f\$" -fuzztime="$FUZZTIME" "$pkg"
  done
done
echo "== all tests passed"

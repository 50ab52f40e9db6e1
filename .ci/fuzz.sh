#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (default 10s). Targets are found, not listed, so a new
# one is fuzzed without touching this script.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10s}"
found=0
while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  echo "fuzz $pkg $name ($fuzztime)"
  # go's fuzzer now and then ends a healthy run with "context deadline exceeded" as its time runs out; a real
  # finding says "Failing input written to". Retry only the former, once.
  if ! out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 </dev/null); then
    echo "$out"
    if grep -q "Failing input written to" <<<"$out" || ! grep -q "context deadline exceeded" <<<"$out"; then
      exit 1
    fi
    echo "retrying $name once (fuzzer deadline flake, no failing input)"
    go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" </dev/null
  else
    echo "$out" | tail -n 2
  fi
  found=$((found + 1))
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's|^\./||; s|:func |:|' | sort)
echo "$found fuzz targets run"
[ "$found" -gt 0 ]

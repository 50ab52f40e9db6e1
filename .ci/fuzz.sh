#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (default 10s; any -fuzztime value, e.g. 500x). Targets are
# found (every `func Fuzz...` in a _test.go file), not listed by hand, so a new one is fuzzed without touching this
# script. `fuzz.sh --list` prints the targets as "package target" and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10s}"

targets() {
  { git ls-files --cached --others --exclude-standard -z '*_test.go' |
    xargs -0 -r grep -Ho '^func Fuzz[A-Za-z0-9_]*' || true; } |
    sed 's|:func |:|' | sort -u
}

if [ "${1:-}" = "--list" ]; then
  targets | while IFS=: read -r file name; do echo "./$(dirname "$file") $name"; done
  exit 0
fi

found=0
while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  echo "fuzz $pkg $name ($fuzztime)"
  # go's fuzzer now and then ends a healthy run with "context deadline exceeded" as its time runs out (more often
  # on a loaded machine, when its workers stall); a real finding says "Failing input written to". Retry only the
  # former, up to three times.
  for attempt in 1 2 3 4; do
    if out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 </dev/null); then
      echo "$out" | tail -n 2
      break
    fi
    echo "$out"
    if grep -q "Failing input written to" <<<"$out" || ! grep -q "context deadline exceeded" <<<"$out" || [ "$attempt" = 4 ]; then
      exit 1
    fi
    echo "retrying $name (fuzzer deadline flake, no failing input)"
  done
  found=$((found + 1))
done < <(targets)
echo "$found fuzz targets run"
[ "$found" -gt 0 ]

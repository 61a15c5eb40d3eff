#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (a duration such as 60s, or a count of inputs such as
# 20000x; default 5s), one package and target at a time, since `go test -fuzz` takes exactly one of each. Fails on
# the first finding.
#
# Go 1.26's fuzz coordinator can fail a target at the end of a duration with a bare "context deadline exceeded"
# and no failing input (golang/go#75804, fixed in Go 1.27): its deadline races the workers' last calls, more often
# on a loaded machine. A count has no deadline to race, so `make test` runs counts. With a duration, that bare
# failure is reported, the target's corpus (seeds and testdata) is replayed, and the run goes on; anything else,
# and any written failing input, fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}
found=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
while IFS= read -r file; do
  dir=$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
    found=$((found + 1))
    echo "fuzz ./$dir $target for $fuzztime"
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "./$dir" 2>&1 | tee "$out"; then
      continue
    fi
    if grep -qx $'    context deadline exceeded' "$out" && ! grep -q 'Failing input written to' "$out" &&
      ! grep -qE '^\s+--- FAIL|panic:|fuzzing process hung' "$out"; then
      echo "fuzz: $target: Go's fuzz-coordinator deadline race (golang/go#75804), no failing input; replaying its corpus"
      go test -run "^${target}\$" "./$dir"
      continue
    fi
    exit 1
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
echo "fuzz: $found targets ran for $fuzztime each"

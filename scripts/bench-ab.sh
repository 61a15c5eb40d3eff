#!/usr/bin/env bash
# bench-ab.sh OLD_TREE NEW_TREE PKG BENCH [COUNT] [OUT]: compares a benchmark of two checkouts in one sitting. Both
# test binaries are built first, then run in turns, one run each at a time, COUNT times (default 6), so that the
# machine's background load hits both alike; benchstat prints the comparison. The raw outputs are OUT.old.txt and
# OUT.new.txt (default /tmp/bench-ab). PKG may be OLD_PKG:NEW_PKG for a benchmark that moved; both outputs then
# name NEW_PKG, so that benchstat pairs them. Example, against an earlier commit checked out with git worktree:
#   git worktree add /tmp/old fa28038 && scripts/bench-ab.sh /tmp/old . ./runner:./transport Engine
set -euo pipefail
old=$(cd "$1" && pwd) new=$(cd "$2" && pwd) bench=$4 count=${5:-6} out=${6:-/tmp/bench-ab}
oldpkg=${3%%:*} pkg=${3#*:}
import=$(cd "$new" && go list "$pkg")
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$old" && go test -c -o "$bin/old.test" "$oldpkg")
(cd "$new" && go test -c -o "$bin/new.test" "$pkg")
: > "$out.old.txt"
: > "$out.new.txt"
for _ in $(seq 1 "$count"); do
  (cd "$old/$oldpkg" && "$bin/old.test" -test.run '^$' -test.bench "$bench" -test.benchmem -test.count 1 |
    sed "s|^pkg: .*|pkg: $import|" >> "$out.old.txt")
  (cd "$new/$pkg" && "$bin/new.test" -test.run '^$' -test.bench "$bench" -test.benchmem -test.count 1 >> "$out.new.txt")
done
go run golang.org/x/perf/cmd/benchstat@latest "$out.old.txt" "$out.new.txt"

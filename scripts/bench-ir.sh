#!/bin/sh
# bench-ir.sh: instructions per op of a Go benchmark, counted by valgrind (cachegrind's Ir), for comparisons that
# wall time cannot settle on a shared machine. The benchmark runs twice, N1 and N2 iterations, with GOGC=off and
# GOMAXPROCS=1; the difference over N2-N1 cancels setup and the harness. Repeat runs agree within ~0.5 %.
#
#   go test -c -o /tmp/runner.test ./runner/
#   (cd runner && ../scripts/bench-ir.sh /tmp/runner.test '^BenchmarkEngine$/^chain$' 100 600)
#
# Anchor every level of the name ('^A$/^b$'): a sub-benchmark pattern like 'timings$' also matches 'stream-timings'.
set -eu
bin=$1 bench=$2 n1=${3:-100} n2=${4:-600}
ir() {
	GOGC=off GOMAXPROCS=1 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
		"$bin" -test.run '^$' -test.bench "$bench" -test.benchtime "${1}x" -test.cpu 1 2>&1 |
		awk '/I *refs:/ {gsub(",", "", $NF); print $NF}'
}
a=$(ir "$n1")
b=$(ir "$n2")
echo "$bench $(((b - a) / (n2 - n1))) instructions/op"

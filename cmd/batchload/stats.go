package main

import (
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of sorted, which must be in ascending order:
// the smallest value such that at least p% of the samples are ≤ it. It returns 0 for no samples; p ≤ 0 gives the
// minimum.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	// rank = ceil(p/100 × n), computed on integers where possible so that p50 of 100 samples is exactly the 50th.
	rank := int(p * float64(n) / 100)
	if float64(rank)*100 < p*float64(n) {
		rank++
	}
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// latencyStats summarises one phase's recorded latencies (in JSON, in nanoseconds).
type latencyStats struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	Mean time.Duration `json:"mean_ns"`
	Max  time.Duration `json:"max_ns"`
}

// summarize sorts a copy of lat and computes its statistics.
func summarize(lat []time.Duration) latencyStats {
	if len(lat) == 0 {
		return latencyStats{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return latencyStats{
		N:    len(s),
		P50:  percentile(s, 50),
		P99:  percentile(s, 99),
		Mean: sum / time.Duration(len(s)),
		Max:  s[len(s)-1],
	}
}

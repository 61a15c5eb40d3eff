package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func seqMS(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = ms(i + 1)
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := seqMS(100) // 1..100 ms
	ten := seqMS(10)      // 1..10 ms
	for _, tc := range []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", []time.Duration{ms(7)}, 50, ms(7)},
		{"one sample p99", []time.Duration{ms(7)}, 99, ms(7)},
		{"100 p50 is the 50th", hundred, 50, ms(50)},
		{"100 p99 is the 99th", hundred, 99, ms(99)},
		{"100 p100 is the max", hundred, 100, ms(100)},
		{"100 p1 is the 1st", hundred, 1, ms(1)},
		{"p0 is the min", hundred, 0, ms(1)},
		{"10 p50 is the 5th", ten, 50, ms(5)},
		{"10 p99 rounds up to the 10th", ten, 99, ms(10)},
		{"10 p90 is the 9th", ten, 90, ms(9)},
		{"10 p91 rounds up to the 10th", ten, 91, ms(10)},
		{"3 p50 rounds up to the 2nd", seqMS(3), 50, ms(2)},
		{"200 p99 is the 198th", seqMS(200), 99, ms(198)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, percentile(tc.in, tc.p))
		})
	}
}

func TestSummarizeDoesNotReorderInput(t *testing.T) {
	in := []time.Duration{ms(5), ms(1), ms(4), ms(2), ms(3)}
	s := summarize(in)
	assert.Equal(t, latencyStats{N: 5, P50: ms(3), P99: ms(5), Mean: ms(3), Max: ms(5)}, s)
	assert.Equal(t, []time.Duration{ms(5), ms(1), ms(4), ms(2), ms(3)}, in)
	assert.Equal(t, latencyStats{}, summarize(nil))
}

package main

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// callsOp makes n calls to the upstream per group (n may vary per group) and records its name.
func callsOp(t *testing.T, c *http.Client, up *upstream, name string, trace *[]string, n func() int) op {
	return func(ctx context.Context) (time.Duration, error) {
		*trace = append(*trace, name)
		for range n() {
			status, _, err := post(ctx, c, up.url+"fast/Item/Add", []byte(`{}`))
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, status)
		}
		return time.Millisecond, nil
	}
}

func TestRunInterleavedOrderAndCounts(t *testing.T) {
	up := newTestUpstream(t, 0)
	c := newTestClient(t)
	var trace []string
	three := func() int { return 3 }
	flip := 0
	twoOrThree := func() int { flip++; return 2 + flip%2 } // a "batch" that sometimes makes one call too few
	rows := runInterleaved(context.Background(), up, []seqPhase{
		{mode: "a", steps: 3, count: 3, warmup: 1, op: callsOp(t, c, up, "a", &trace, three)},
		{mode: "b", steps: 3, count: 1, warmup: 0, op: callsOp(t, c, up, "b", &trace, three)},
		{mode: "c", steps: 3, count: 2, warmup: 0, op: callsOp(t, c, up, "c", &trace, twoOrThree)},
	})
	assert.Equal(t, []string{"a", "b", "c", "a", "c", "a", "a"}, trace, "one group of each phase per round")
	require.Len(t, rows, 3)

	a := rows[0]
	assert.Equal(t, 4, a.Sent)
	assert.Equal(t, 3, a.Measured, "warm-up not measured")
	assert.Equal(t, time.Millisecond, a.Lat.P50)
	assert.True(t, a.ok())
	assert.Equal(t, callCheck{PerGroup: 3, Total: 12, Expected: 12, MinPerGroup: 3, MaxPerGroup: 3}, *a.Upstream)

	assert.True(t, rows[1].ok())
	assert.Equal(t, 1, rows[1].Measured)

	cRow := rows[2]
	assert.False(t, cRow.ok(), "a group with the wrong number of calls invalidates the row")
	assert.Equal(t, callCheck{PerGroup: 3, Total: 5, Expected: 6, MinPerGroup: 2, MaxPerGroup: 3}, *cRow.Upstream)
}

func TestRunInterleavedErrorsAndCancel(t *testing.T) {
	n := 0
	failing := func(context.Context) (time.Duration, error) {
		n++
		if n%2 == 0 {
			return 0, errors.New("boom")
		}
		return time.Millisecond, nil
	}
	rows := runInterleaved(context.Background(), nil, []seqPhase{{mode: "x", steps: 1, count: 4, op: failing}})
	assert.Equal(t, 2, rows[0].Errors)
	assert.Equal(t, "boom", rows[0].FirstError)
	assert.Equal(t, 2, rows[0].Measured)
	assert.Nil(t, rows[0].Upstream)
	assert.False(t, rows[0].ok())

	ctx, cancel := context.WithCancel(context.Background())
	stopping := func(context.Context) (time.Duration, error) { cancel(); return time.Millisecond, nil }
	rows = runInterleaved(ctx, nil, []seqPhase{{mode: "y", steps: 1, count: 1000, op: stopping}})
	assert.True(t, rows[0].Aborted)
	assert.Equal(t, 1, rows[0].Sent, "no group starts after the context ends")
}

func TestRunConcurrentCountsEveryGroupItStarts(t *testing.T) {
	up := newTestUpstream(t, 0)
	c := newTestClient(t)
	var mu sync.Mutex
	groups := map[string]int{}
	var order []string // the phase of each group started, in start order
	phase := func(name string, calls int) concPhase {
		return concPhase{mode: name, steps: calls, op: func(ctx context.Context) (time.Duration, error) {
			mu.Lock()
			groups[name]++
			order = append(order, name)
			mu.Unlock()
			for range calls {
				if _, _, err := post(ctx, c, up.url+"fast/Item/Add", []byte(`{}`)); err != nil {
					return 0, err
				}
			}
			return time.Millisecond, nil
		}}
	}
	rows := runConcurrent(context.Background(), []concPhase{phase("x", 2), phase("y", 1)}, 4, 3,
		50*time.Millisecond, 600*time.Millisecond, up)
	require.Len(t, rows, 2)
	for i, name := range []string{"x", "y"} {
		row := rows[i]
		calls := 2 - i
		assert.Equal(t, name, row.Mode)
		assert.Equal(t, groups[name], row.Sent)
		assert.Zero(t, row.Errors)
		assert.LessOrEqual(t, row.Measured+row.Warmup, row.Sent)
		assert.Positive(t, row.Measured)
		assert.Equal(t, 600*time.Millisecond, row.Elapsed, "three windows of 200 ms")
		assert.InDelta(t, float64(row.Measured)/0.6, row.Throughput, 1e-9)
		// Every call of the row, none of the other's, although the upstream is shared.
		assert.Equal(t, callCheck{PerGroup: int64(calls), Total: int64(calls * groups[name]),
			Expected: int64(calls * groups[name]), MinPerGroup: -1, MaxPerGroup: -1}, *row.Upstream)
		assert.True(t, row.ok())
	}
	// The phases took turns, window by window: x y x y x y, never overlapping.
	var turns []string
	for _, name := range order {
		if len(turns) == 0 || turns[len(turns)-1] != name {
			turns = append(turns, name)
		}
	}
	assert.Equal(t, []string{"x", "y", "x", "y", "x", "y"}, turns)
}

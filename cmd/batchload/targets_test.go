package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// row is a valid measurement with the given p50 and throughput (groups/s).
func row(mode string, steps int, p50 time.Duration, groupsPerSec float64) phaseResult {
	return phaseResult{Mode: mode, Steps: steps, Measured: 100, Lat: latencyStats{N: 100, P50: p50}, Throughput: groupsPerSec,
		Upstream: &callCheck{PerGroup: int64(steps), Total: int64(steps) * 120, Expected: int64(steps) * 120, MinPerGroup: int64(steps), MaxPerGroup: int64(steps)}}
}

func rowsOf(rs ...phaseResult) map[string]phaseResult {
	m := map[string]phaseResult{}
	for _, r := range rs {
		m[r.Mode] = r
	}
	return m
}

func us(n int) time.Duration { return time.Duration(n) * time.Microsecond }

func TestEvalTargets(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scenario  string
		rows      map[string]phaseResult
		wantValue float64
		wantPass  bool
	}{
		{"a50 faster than par", "a50", rowsOf(row(modeBatchd, 50, us(800), 0), row(modePar, 50, us(1000), 0)), 0.8, true},
		{"a50 within 10% of par passes", "a50", rowsOf(row(modeBatchd, 50, us(1100), 0), row(modePar, 50, us(1000), 0)), 1.1, true},
		{"a50 slower than par", "a50", rowsOf(row(modeBatchd, 50, us(1500), 0), row(modePar, 50, us(1000), 0)), 1.5, false},
		{"b50 within 5% of par", "b50", rowsOf(row(modeBatchd, 50, us(10_400), 0), row(modePar, 50, us(10_000), 0)), 1.04, true},
		{"b50 over", "b50", rowsOf(row(modeBatchd, 50, us(10_600), 0), row(modePar, 50, us(10_000), 0)), 1.06, false},
		{"c10 within 1%", "c10", rowsOf(row(modeBatchd, 10, us(100_500), 0), row(modeSeq, 10, ms(100), 0)), 1.005, true},
		{"c10 over", "c10", rowsOf(row(modeBatchd, 10, us(102_000), 0), row(modeSeq, 10, ms(100), 0)), 1.02, false},
		{"d10 at 0.95 of par", "d10", rowsOf(row(modeBatchd, 10, 0, 950), row(modePar, 10, 0, 1000)), 0.95, true},
		{"d10 at 0.85 of par", "d10", rowsOf(row(modeBatchd, 10, 0, 850), row(modePar, 10, 0, 1000)), 0.85, false},
		{"a50 baseline missing fails", "a50", rowsOf(row(modeBatchd, 50, us(800), 0)), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := evalTargets(tc.scenario, tc.rows)
			require.NotEmpty(t, ts)
			assert.InDelta(t, tc.wantValue, ts[0].Value, 1e-9)
			assert.Equal(t, tc.wantPass, ts[0].Pass, ts[0].String())
		})
	}
}

// TestCPUTarget: batchd's CPU per batch against the seq client's for the same calls, from the rows' CPU figures;
// not measured (and failed) without them.
func TestCPUTarget(t *testing.T) {
	cpu := func(r phaseResult, server, client time.Duration, groups int) phaseResult {
		r.ServerCPU, r.ClientCPU, r.CPUGroups = server, client, groups
		return r
	}
	for _, tc := range []struct {
		name  string
		rows  map[string]phaseResult
		value float64
		pass  bool
	}{
		{"within 1.2", rowsOf(cpu(row(modeBatchd, 10, 0, 950), 110*time.Millisecond, 30*time.Millisecond, 100),
			cpu(row(modeSeq, 10, 0, 1000), 0, 100*time.Millisecond, 100), row(modePar, 10, 0, 1000)), 1.1, true},
		{"over", rowsOf(cpu(row(modeBatchd, 10, 0, 950), 150*time.Millisecond, 0, 100),
			cpu(row(modeSeq, 10, 0, 1000), 0, 50*time.Millisecond, 50), row(modePar, 10, 0, 1000)), 1.5, false},
		{"not measured", rowsOf(row(modeBatchd, 10, 0, 950), row(modeSeq, 10, 0, 1000), row(modePar, 10, 0, 1000)), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := evalTargets("d10", tc.rows)
			require.Len(t, ts, 2)
			assert.InDelta(t, tc.value, ts[1].Value, 1e-9, ts[1].String())
			assert.Equal(t, tc.pass, ts[1].Pass, ts[1].String())
		})
	}
}

func TestEvalTargetsInvalidRowFails(t *testing.T) {
	good := rowsOf(row(modeBatchd, 50, us(800), 0), row(modePar, 50, us(1000), 0))
	require.True(t, evalTargets("a50", good)[0].Pass)

	withErrors := good[modeBatchd]
	withErrors.Errors = 1
	assert.False(t, evalTargets("a50", rowsOf(withErrors, good[modePar]))[0].Pass, "a row with errors proves nothing")

	miscounted := good[modeBatchd]
	miscounted.Upstream = &callCheck{PerGroup: 50, Total: 5999, Expected: 6000, MinPerGroup: 49, MaxPerGroup: 50}
	assert.False(t, evalTargets("a50", rowsOf(miscounted, good[modePar]))[0].Pass, "a wrong upstream count proves nothing")
}

func TestEvalTargetsDemo(t *testing.T) {
	demo := func(batch1, single1 time.Duration, batchTput, singleTput float64) []target {
		return evalTargets("demo10", rowsOf(
			phaseResult{Mode: modeBatch1, Steps: 10, Measured: 10, Lat: latencyStats{P50: batch1}},
			phaseResult{Mode: modeSingle1, Steps: 1, Measured: 10, Lat: latencyStats{P50: single1}},
			phaseResult{Mode: modeBatchC, Steps: 10, Measured: 10, Throughput: batchTput},
			phaseResult{Mode: modeSingleC, Steps: 1, Measured: 10, Throughput: singleTput},
		))
	}
	ts := demo(us(400), us(150), 1000, 1500) // 10 000 vs 1 500 steps/s; +0.25 ms
	require.Len(t, ts, 2)
	assert.InDelta(t, 10000.0/1500, ts[0].Value, 1e-9)
	assert.True(t, ts[0].Pass)
	assert.InDelta(t, 0.25, ts[1].Value, 1e-9)
	assert.True(t, ts[1].Pass)

	ts = demo(us(1400), us(150), 600, 1500) // 6 000 vs 1 500 steps/s = 4×; +1.25 ms
	assert.False(t, ts[0].Pass)
	assert.False(t, ts[1].Pass)
}

func TestCallCheck(t *testing.T) {
	assert.True(t, (*callCheck)(nil).OK(), "demo mode: nothing to count")
	assert.True(t, (&callCheck{PerGroup: 10, Total: 100, Expected: 100, MinPerGroup: -1, MaxPerGroup: -1}).OK())
	assert.False(t, (&callCheck{PerGroup: 10, Total: 100, Expected: 100, MinPerGroup: 9, MaxPerGroup: 11}).OK(), "totals agree, batches do not")
	assert.False(t, (&callCheck{PerGroup: 10, Total: 101, Expected: 100, MinPerGroup: -1, MaxPerGroup: -1}).OK())
	assert.False(t, (&callCheck{PerGroup: 10, Total: 100, Expected: 100, MinPerGroup: -1, MaxPerGroup: -1, Bad: 1}).OK())
}

func TestContextNotes(t *testing.T) {
	notes := contextNotes("b50", rowsOf(row(modeBatchd, 50, ms(12), 0), row(modeSeq, 50, ms(500), 0), row(modePar, 50, ms(15), 0)))
	require.Len(t, notes, 1)
	assert.Contains(t, notes[0], "par p50 / one call = 15.00 ms / 10.00 ms = 1.500")
	assert.Contains(t, notes[0], "batchd p50 / par p50 = 0.800")

	notes = contextNotes("c10", rowsOf(row(modeBatchd, 10, ms(103), 0), row(modeSeq, 10, ms(100), 0)))
	require.Len(t, notes, 1)
	assert.Contains(t, notes[0], "3.00 ms over 10 steps (0.30 ms per step; the 2% allowance is 2.00 ms)")

	assert.Empty(t, contextNotes("c10", rowsOf(row(modeBatchd, 10, ms(103), 0))), "nothing to compare with")
}

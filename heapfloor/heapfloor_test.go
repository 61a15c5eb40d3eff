package heapfloor_test

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/heapfloor"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		floor, live uint64
		want        int
	}{
		{32 * mib, 0, 3100}, // no cycle yet: counted as 1 MiB
		{32 * mib, 1 * mib, 3100},
		{32 * mib, 4 * mib, 700},
		{32 * mib, 15 * mib, 113},
		{32 * mib, 16 * mib, 100}, // half the floor: the default again
		{32 * mib, 200 * mib, 100},
		{1 << 40, 1 * mib, heapfloor.MaxPercent},
	} {
		assert.Equal(t, c.want, heapfloor.Percent(c.floor, c.live), "floor %d live %d", c.floor, c.live)
	}
}

func gogc(t *testing.T) int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	require.Equal(t, metrics.KindUint64, s[0].Value.Kind())
	return int(s[0].Value.Uint64())
}

// eventually collects and waits for the floor's finalizer to set want. The bound only catches a floor that never
// tunes; it is not what the test measures.
func eventually(t *testing.T, want func(int) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !want(gogc(t)) {
		require.True(t, time.Now().Before(deadline), "GOGC %d: never %s", gogc(t), what)
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

var keep [][]byte

// The floor follows the live heap from one collection to the next, and stop restores GOGC.
func TestStartFollowsLiveHeapAndStopRestores(t *testing.T) {
	prev := debug.SetGCPercent(90)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	const floor = 64 * mib
	stop, ok := heapfloor.Start(floor)
	require.True(t, ok)
	second, ok := heapfloor.Start(floor)
	assert.False(t, ok, "one floor per process")
	second()
	eventually(t, func(p int) bool { return p > 200 }, "raised over a small live heap")

	// A live heap over half the floor: the default multiplier is enough.
	for range 40 {
		keep = append(keep, make([]byte, mib))
	}
	eventually(t, func(p int) bool { return p == 100 }, "back to 100 over a large live heap")

	keep = nil
	eventually(t, func(p int) bool { return p > 200 }, "raised again once the heap shrank")

	stop()
	assert.Equal(t, 90, gogc(t), "stop restores the GOGC Start found")
	stop() // idempotent
	assert.Equal(t, 90, gogc(t))

	again, ok := heapfloor.Start(floor)
	require.True(t, ok, "a floor may start again once the last one stopped")
	again()
}

func TestStartZeroDoesNothing(t *testing.T) {
	prev := debug.SetGCPercent(90)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	stop, ok := heapfloor.Start(0)
	assert.False(t, ok)
	runtime.GC()
	assert.Equal(t, 90, gogc(t))
	stop()
	assert.Equal(t, 90, gogc(t))
}

package heapfloor_test

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/heapfloor"
)

const mib = 1 << 20

func goal(t *testing.T) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	require.Equal(t, metrics.KindUint64, s[0].Value.Kind())
	return s[0].Value.Uint64()
}

// rss is the process's resident memory (Linux), or 0 where /proc is missing.
func rss(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err, line)
			return kb << 10
		}
	}
	return 0
}

// The floor raises the collector's target to at least itself, without making the process use that memory, and
// stop gives the default back.
func TestFloorRaisesTheTargetNotTheRSS(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	const floor = 256 * mib
	runtime.GC()
	before, rssBefore := goal(t), rss(t)
	require.Less(t, before, uint64(floor), "the test's own heap is small")

	stop := heapfloor.Start(floor)
	runtime.GC()
	assert.GreaterOrEqual(t, goal(t), uint64(floor))
	if rssBefore > 0 {
		// 128 MiB of ballast, untouched: resident memory grows by far less (allow for the test's own churn).
		assert.Less(t, rss(t), rssBefore+32*mib, "the ballast must not be resident")
	}

	stop()
	runtime.GC()
	runtime.GC()
	assert.Less(t, goal(t), uint64(floor), "stop releases the floor")
}

func TestTinyFloorDoesNothing(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	before := goal(t)
	stop := heapfloor.Start(1)
	runtime.GC()
	assert.InDelta(t, float64(before), float64(goal(t)), float64(4*mib))
	stop()
}

// Package heapfloor keeps the Go garbage collector's heap target at or above a floor while the live heap is small.
//
// A batch service's live heap is small (the batches in flight, a few MiB) and its garbage is per request. With the
// default GOGC=100 the collector then starts a cycle every few MiB allocated: under load, dozens of cycles a second,
// each with costs that do not shrink with the heap (scanning every goroutine's stack, write barriers and assists
// while marking). A floor raises the target instead: after every cycle, GOGC is set so that the next target is
// max(floor, 2 × live heap), that is GOGC=100 again once the live heap reaches half the floor. The heap then grows
// to the floor at most, plus what GOGC=100 would use anyway; GOMEMLIMIT, when set, still bounds it.
//
// Contract: Start changes the process-wide GOGC (runtime/debug.SetGCPercent) until its stop function is called,
// which restores the value Start found. One floor per process: while one runs, Start does nothing and says so.
package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// running guards the process-wide GOGC: the one piece of package state, because what it guards is process-wide
// too (several servers in one process, as in tests, would otherwise restore each other's settings out of order).
var running atomic.Bool

// MaxPercent caps the GOGC a floor sets, so that a nearly empty heap does not get an absurd multiplier.
const MaxPercent = 10_000

// floor is the state shared by the finalizers of successive cycles.
type floor struct {
	bytes  uint64
	mu     sync.Mutex
	live   []metrics.Sample
	last   int
	before int
	done   bool
}

// Start keeps the heap target at or above bytes and returns the function that stops it. With bytes == 0, or while
// another floor runs, it does nothing: ok is false and stop a no-op.
func Start(bytes uint64) (stop func(), ok bool) {
	if bytes == 0 || !running.CompareAndSwap(false, true) {
		return func() {}, false
	}
	f := &floor{bytes: bytes, live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	f.mu.Lock()
	f.last = f.percent()
	f.before = debug.SetGCPercent(f.last)
	f.mu.Unlock()
	f.watch()
	return f.stop, true
}

// Percent is the GOGC that makes the target of a heap of live bytes max(floor, 2 × live).
func Percent(floor, live uint64) int {
	live = max(live, 1<<20) // before the first cycle the runtime reports 0: count a small heap
	if floor <= 2*live {
		return 100
	}
	return int(min(floor*100/live-100, MaxPercent))
}

func (f *floor) percent() int {
	metrics.Read(f.live)
	var live uint64
	if v := f.live[0].Value; v.Kind() == metrics.KindUint64 {
		live = v.Uint64()
	}
	return Percent(f.bytes, live)
}

// watch arranges for tune to run after the next collection: the finalizer of an object nothing refers to runs
// once a cycle has found it unreachable.
func (f *floor) watch() {
	runtime.SetFinalizer(new(sentinel), func(*sentinel) { f.tune() })
}

// sentinel is a pointer-holding type: the runtime may not set finalizers on zero-size or tiny pointer-free objects
// reliably (they can share a block with other tiny objects).
type sentinel struct{ _ *int }

// tune runs after each collection, on the finalizer goroutine: it sets GOGC for the live heap just measured.
func (f *floor) tune() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	if p := f.percent(); p != f.last {
		f.last = p
		debug.SetGCPercent(p)
	}
	f.watch()
}

func (f *floor) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done {
		f.done = true
		debug.SetGCPercent(f.before)
		running.Store(false)
	}
}

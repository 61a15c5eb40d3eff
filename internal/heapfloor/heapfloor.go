// Package heapfloor keeps the Go garbage collector's heap target at or above a floor while the live heap is small.
//
// A batch service's live heap is small (the batches in flight, a few MiB) and its garbage is per request. With the
// default GOGC=100 the collector then starts a cycle every few MiB allocated: under load, dozens of cycles a second,
// each with costs that do not shrink with the heap (scanning every goroutine's stack, write barriers and assists
// while marking). A floor makes the cycles rarer.
//
// It is a ballast: one pointer-free allocation of half the floor, never written. The collector counts it as live,
// so with GOGC=100 its target is 2 × (live + floor/2) = floor + 2 × live, computed afresh by the runtime at every
// cycle, with no lag and no process-wide setting changed; the pages are never touched, so they take address space
// but no resident memory (Linux maps fresh zero pages lazily and the runtime does not zero memory it just got from
// the kernel). What grows is the garbage between cycles: at most the floor more than GOGC=100 would let through.
// Visible consequences: the runtime's heap metrics (go_memstats_heap_alloc_bytes, /gc/heap/live) include the
// ballast, and a memory limit (GOMEMLIMIT) counts it as in use.
//
// Contract: Start returns the function that releases the ballast; the floor holds until then. Each call keeps its
// own ballast (several servers in one process add up).
package heapfloor

// floor holds the ballast.
type floor struct{ ballast []byte }

// Start keeps the heap target at or above bytes (plus twice the live heap) until the returned stop is called.
// bytes < 2 does nothing.
func Start(bytes uint64) (stop func()) {
	if bytes < 2 {
		return func() {}
	}
	f := &floor{ballast: make([]byte, bytes/2)}
	return f.stop
}

// stop drops the ballast: the next cycle finds it unreachable.
func (f *floor) stop() { f.ballast = nil }

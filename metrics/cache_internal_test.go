package metrics

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestCacheStaysBounded checks the cache's size itself: many distinct names, from many goroutines, never hold
// more than maxCache entries (plus the few a race may add), and a long name is never cached.
func TestCacheStaysBounded(t *testing.T) {
	m, err := New(nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 3 * maxCache {
				m.Label(fmt.Sprintf("W%d/N%d", w, i))
			}
		})
	}
	wg.Wait()
	entries := 0
	m.cache.Range(func(any, any) bool { entries++; return true })
	if entries > maxCache+8 {
		t.Fatalf("cache holds %d entries, bound %d", entries, maxCache)
	}

	m.cache.Clear()
	long := "Producer/" + strings.Repeat("x", maxNameLen)
	if got := m.Label(long); got != OtherMethod {
		t.Fatalf("Label(long) = %q", got)
	}
	if _, ok := m.cache.Load(long); ok {
		t.Fatal("a name longer than maxNameLen was cached")
	}
}

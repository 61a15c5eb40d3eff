package ratelimit_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/ratelimit"
)

// clock is a manual clock for the limiter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimiter(t *testing.T, cfg ratelimit.Config, c *clock) *ratelimit.Limiter {
	t.Helper()
	cfg.Now = c.Now
	l, err := ratelimit.New(cfg)
	require.NoError(t, err)
	return l
}

func TestBatchCostsItsSteps(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 50}, c)
	assert.True(t, l.Allow("a", 50).Allowed, "a full bucket holds one batch of Burst steps")
	d := l.Allow("a", 1)
	require.False(t, d.Allowed, "the 50-step batch spent the whole bucket")
	assert.False(t, d.OverBurst)
	assert.Equal(t, 100*time.Millisecond, d.RetryAfter, "one token at 10/s")
	assert.Equal(t, 1, d.RetryAfterSeconds(), "rounded up to a whole second")

	// 50 one-step batches cost the same as one 50-step batch.
	c.Add(5 * time.Second)
	for i := range 50 {
		require.True(t, l.Allow("a", 1).Allowed, "batch %d", i)
	}
	assert.False(t, l.Allow("a", 1).Allowed)
}

func TestRefusalTakesNothing(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 10}, c)
	require.True(t, l.Allow("a", 8).Allowed)
	d := l.Allow("a", 5) // 2 left, 3 missing
	require.False(t, d.Allowed)
	assert.Equal(t, 3*time.Second, d.RetryAfter)
	assert.Equal(t, 3, d.RetryAfterSeconds())
	assert.True(t, l.Allow("a", 2).Allowed, "the refused batch took no tokens")
	c.Add(2500 * time.Millisecond)
	d = l.Allow("a", 3)
	require.False(t, d.Allowed)
	assert.Equal(t, 500*time.Millisecond, d.RetryAfter)
	assert.Equal(t, 1, d.RetryAfterSeconds())
	c.Add(500 * time.Millisecond)
	assert.True(t, l.Allow("a", 3).Allowed, "refilled at Rate")
}

func TestRetryAfterRoundsUp(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 3, Burst: 3}, c)
	require.True(t, l.Allow("a", 3).Allowed)
	d := l.Allow("a", 2) // 2/3 s
	require.False(t, d.Allowed)
	assert.Equal(t, 1, d.RetryAfterSeconds())
	d = l.Allow("a", 3) // exactly 1 s
	assert.Equal(t, time.Second, d.RetryAfter)
	assert.Equal(t, 1, d.RetryAfterSeconds())
	slow := newLimiter(t, ratelimit.Config{Rate: 0.5, Burst: 3}, c)
	require.True(t, slow.Allow("a", 3).Allowed)
	assert.Equal(t, 4, slow.Allow("a", 2).RetryAfterSeconds(), "2 tokens at 0.5/s")
}

func TestBucketNeverExceedsBurst(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 100, Burst: 5}, c)
	c.Add(time.Hour)
	require.True(t, l.Allow("a", 5).Allowed)
	require.False(t, l.Allow("a", 1).Allowed)
}

func TestOverBurstIsRefusedWithoutWait(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 10}, c)
	d := l.Allow("a", 11)
	assert.False(t, d.Allowed)
	assert.True(t, d.OverBurst)
	assert.Equal(t, 10, d.Burst)
	assert.Zero(t, d.RetryAfter)
	assert.True(t, l.Allow("a", 10).Allowed, "the refused batch took nothing")
	assert.Equal(t, 10, l.Burst())
}

func TestCallersAreIndependent(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 5}, c)
	require.True(t, l.Allow("a", 5).Allowed)
	assert.False(t, l.Allow("a", 1).Allowed)
	assert.True(t, l.Allow("b", 5).Allowed, "another caller has its own bucket")
}

func TestIdleBucketsAreEvicted(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 20}, c) // full again after 2 s
	for i := range 100 {
		l.Allow(fmt.Sprint("idle", i), 1)
	}
	assert.Equal(t, 100, l.Len())
	c.Add(time.Second)
	l.Allow("busy", 20)
	assert.Equal(t, 101, l.Len(), "not idle long enough to be full")
	c.Add(time.Second)
	l.Allow("other", 1)
	assert.Equal(t, 2, l.Len(), "the 100 full buckets are gone; busy (still refilling) and other stay")
	assert.False(t, l.Allow("busy", 20).Allowed, "a bucket still refilling was kept")
}

func TestMaxKeysBound(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 10, MaxKeys: 3}, c)
	for _, k := range []string{"a", "b", "c"} {
		require.True(t, l.Allow(k, 10).Allowed)
	}
	require.False(t, l.Allow("a", 1).Allowed) // a is now the most recently used
	require.True(t, l.Allow("d", 1).Allowed)  // evicts b, the least recently used
	assert.Equal(t, 3, l.Len())
	assert.False(t, l.Allow("a", 1).Allowed, "a was kept")
	assert.False(t, l.Allow("c", 1).Allowed, "c was kept")
	for i := range 1000 {
		l.Allow(fmt.Sprint("flood", i), 1)
	}
	assert.Equal(t, 3, l.Len(), "never more than MaxKeys buckets")
}

func TestClockGoingBackRefillsNothing(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 2}, c)
	require.True(t, l.Allow("a", 2).Allowed)
	c.Add(-time.Hour)
	assert.False(t, l.Allow("a", 1).Allowed)
	c.Add(time.Hour + time.Second)
	assert.True(t, l.Allow("a", 1).Allowed)
}

func TestDefaultsAndValidation(t *testing.T) {
	for _, rate := range []float64{0, -1} {
		_, err := ratelimit.New(ratelimit.Config{Rate: rate})
		assert.Error(t, err, "rate %v", rate)
	}
	_, err := ratelimit.New(ratelimit.Config{Rate: 1, Burst: -1})
	assert.Error(t, err)
	l, err := ratelimit.New(ratelimit.Config{Rate: 5})
	require.NoError(t, err)
	assert.Equal(t, 50, l.Burst(), "at least one batch of the default -max-steps")
	l, err = ratelimit.New(ratelimit.Config{Rate: 200.5})
	require.NoError(t, err)
	assert.Equal(t, 201, l.Burst(), "one second's worth when larger")
	assert.True(t, l.Allow("x", 0).Allowed)
}

func TestIdentity(t *testing.T) {
	a := ratelimit.Identity("Bearer secret", "10.0.0.1")
	assert.Equal(t, a, ratelimit.Identity("Bearer secret", "10.0.0.2"), "the credential identifies the caller wherever it comes from")
	assert.NotContains(t, a, "secret", "the raw credential is not kept")
	assert.NotEqual(t, a, ratelimit.Identity("Bearer other", "10.0.0.1"))
	assert.Equal(t, "ip:10.0.0.1", ratelimit.Identity("", "10.0.0.1"))
	assert.NotEqual(t, ratelimit.Identity("", "10.0.0.1"), ratelimit.Identity("", "10.0.0.2"))
}

func TestConcurrentCallersSpendExactlyTheBurst(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 100}, c)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 50 {
		wg.Go(func() {
			for range 10 {
				if l.Allow("shared", 1).Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 100, allowed, "500 attempts on a frozen clock pass exactly Burst")
}

// Package ratelimit is a token-bucket rate limit per caller identity, in steps per second.
//
// Contract (README "Limits and guarantees"):
//   - Each caller has a bucket of Burst tokens that refills at Rate tokens per second. A batch costs its step count,
//     so one batch of 50 steps spends as much as 50 batches of one: a batch cannot be used to bypass a per-request
//     limit.
//   - A batch is let through only when its whole cost is available, and then the whole cost is taken; a refused batch
//     takes nothing. A batch costing more than Burst can never pass: Allow says so (Decision.OverBurst) rather than
//     naming a wait that would not help.
//   - Memory is bounded: at most MaxKeys buckets. A bucket idle long enough to have refilled completely is the same as
//     no bucket and is dropped; past MaxKeys the least recently used bucket is dropped even if not full (that caller
//     then starts again with a full bucket: the bound on memory wins over exactness for the longest-idle caller).
//   - Safe for concurrent use. The clock is injectable (Config.Now) so tests need no sleeping.
package ratelimit

import (
	"container/list"
	"crypto/sha256"
	"errors"
	"math"
	"sync"
	"time"
)

// DefaultBurst is the smallest default burst: one full batch of the default -max-steps.
const DefaultBurst = 50

// DefaultMaxKeys bounds the buckets kept at once (about 100 bytes each).
const DefaultMaxKeys = 100_000

// Config configures a Limiter.
type Config struct {
	Rate    float64          // tokens (steps) per second; must be positive
	Burst   int              // bucket capacity in steps; default max(DefaultBurst, ceil(Rate))
	MaxKeys int              // most buckets kept; default DefaultMaxKeys
	Now     func() time.Time // clock; default time.Now
}

// Decision is the outcome of Allow.
type Decision struct {
	Allowed bool
	// RetryAfter, when not Allowed, is how long until the bucket holds the cost (zero when OverBurst).
	RetryAfter time.Duration
	// OverBurst: the cost exceeds the bucket's capacity, Burst, so no wait helps.
	OverBurst bool
	Burst     int
}

// RetryAfterSeconds is d as a Retry-After header value: whole seconds, rounded up, at least 1.
func (d Decision) RetryAfterSeconds() int {
	s := int(math.Ceil(d.RetryAfter.Seconds()))
	return max(s, 1)
}

// Limiter holds one token bucket per caller key.
type Limiter struct {
	rate     float64
	burst    float64
	burstN   int
	fillTime time.Duration // from empty to full: a bucket idle this long is full, the same as absent
	maxKeys  int
	now      func() time.Time

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // front: most recently used
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time // when tokens was computed
}

// New returns a Limiter, or an error when cfg.Rate is not positive or cfg.Burst is negative.
func New(cfg Config) (*Limiter, error) {
	if !(cfg.Rate > 0) || math.IsInf(cfg.Rate, 0) {
		return nil, errors.New("ratelimit: rate must be a positive number of steps per second")
	}
	if cfg.Burst < 0 {
		return nil, errors.New("ratelimit: burst must not be negative")
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurstFor(cfg.Rate)
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{
		rate:     cfg.Rate,
		burst:    float64(cfg.Burst),
		burstN:   cfg.Burst,
		fillTime: time.Duration(math.Ceil(float64(cfg.Burst) / cfg.Rate * float64(time.Second))),
		maxKeys:  cfg.MaxKeys,
		now:      cfg.Now,
		buckets:  make(map[string]*list.Element),
	}
	return l, nil
}

// DefaultBurstFor is the burst used when none is configured: max(DefaultBurst, ceil(rate)).
func DefaultBurstFor(rate float64) int {
	return max(DefaultBurst, int(math.Min(math.Ceil(rate), math.MaxInt32)))
}

// Burst is the bucket capacity: the most a single batch may cost.
func (l *Limiter) Burst() int { return l.burstN }

// Len is the number of buckets kept now.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Allow charges key cost tokens if its bucket holds them.
func (l *Limiter) Allow(key string, cost int) Decision {
	if cost <= 0 {
		return Decision{Allowed: true}
	}
	if float64(cost) > l.burst {
		return Decision{OverBurst: true, Burst: l.burstN}
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evictIdle(now)

	var b *bucket
	if e, ok := l.buckets[key]; ok {
		b = e.Value.(*bucket)
		if elapsed := now.Sub(b.last); elapsed > 0 { // a clock that went back refills nothing
			b.tokens = math.Min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
			b.last = now
		}
		l.lru.MoveToFront(e)
	} else {
		b = &bucket{key: key, tokens: l.burst, last: now}
		l.buckets[key] = l.lru.PushFront(b)
		for len(l.buckets) > l.maxKeys {
			l.remove(l.lru.Back())
		}
	}
	if b.tokens >= float64(cost) {
		b.tokens -= float64(cost)
		return Decision{Allowed: true}
	}
	missing := float64(cost) - b.tokens
	return Decision{RetryAfter: time.Duration(math.Ceil(missing / l.rate * float64(time.Second)))}
}

// evictIdle drops the buckets that have been idle long enough to be full again. Buckets are in order of last use, so
// it stops at the first one still refilling: amortised O(1) per call.
func (l *Limiter) evictIdle(now time.Time) {
	for e := l.lru.Back(); e != nil; e = l.lru.Back() {
		if now.Sub(e.Value.(*bucket).last) < l.fillTime {
			return
		}
		l.remove(e)
	}
}

func (l *Limiter) remove(e *list.Element) {
	delete(l.buckets, e.Value.(*bucket).key)
	l.lru.Remove(e)
}

// Identity is the caller key of a request: a digest of its Authorization header when it has one (so that the raw
// credential is never kept in memory), else its client address. The two never collide: they carry different
// prefixes.
func Identity(authorization, clientIP string) string {
	if authorization != "" {
		sum := sha256.Sum256([]byte(authorization))
		return "a:" + string(sum[:])
	}
	return "ip:" + clientIP
}

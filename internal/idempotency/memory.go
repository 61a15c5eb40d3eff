package idempotency

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"
)

// MemoryConfig configures a Memory store. Zero values mean defaults.
type MemoryConfig struct {
	// MaxEntries bounds the number of keys held, running or done; past it the oldest entry is evicted. Default
	// 10000.
	MaxEntries int
	// MaxBytes bounds the bytes held: each entry counts its key, its answer's body and content type, and
	// entryOverhead for the rest. Past it the oldest entries are evicted. Default 64 MiB.
	MaxBytes int64
	// Now is the clock; default time.Now. Tests pass their own to expire entries without waiting.
	Now func() time.Time
}

// Memory is the in-process Store: one replica's keys, lost on restart. It holds at most MaxEntries entries and
// MaxBytes bytes: a new entry evicts the oldest ones (the least recently written), so a flood of keys or of large
// answers costs replays of old answers, never unbounded memory. Expired entries are swept lazily: a lookup drops the expired entry it finds, and every write
// first drops expired entries from the old end.
type Memory struct {
	max      int
	maxBytes int64
	now      func() time.Time

	mu      sync.Mutex
	bytes   int64                    // the size of every entry held
	entries map[string]*list.Element // key → element of order
	order   *list.List               // *memEntry, least recently written first
}

type memEntry struct {
	key     string
	entry   Entry
	expires time.Time
	size    int64
}

// entryOverhead is what an entry costs besides its key and answer: the list element, the map slot, the struct.
const entryOverhead = 256

func (me *memEntry) measure() int64 {
	return int64(entryOverhead + len(me.key) + len(me.entry.Answer.ContentType) + len(me.entry.Answer.Body) +
		len(me.entry.Token))
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{max: cfg.MaxEntries, maxBytes: cfg.MaxBytes, now: cfg.Now, entries: make(map[string]*list.Element),
		order: list.New()}
}

// Claim implements Store.
func (m *Memory) Claim(_ context.Context, key string, fp Fingerprint, lease time.Duration) (Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	if el, ok := m.entries[key]; ok {
		me := el.Value.(*memEntry)
		if now.Before(me.expires) {
			return me.entry, false, nil
		}
		m.remove(el)
	}
	e := Entry{Fingerprint: fp, Token: newToken()}
	me := &memEntry{key: key, entry: e, expires: now.Add(lease)}
	me.size = me.measure()
	m.entries[key] = m.order.PushBack(me)
	m.bytes += me.size
	if !m.evict(nil) {
		m.remove(m.entries[key])
		return Entry{}, false, ErrFull
	}
	return e, true, nil
}

// Complete implements Store.
func (m *Memory) Complete(_ context.Context, key string, claim Entry, a Answer, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	el := m.live(key, claim, now)
	if el == nil {
		return false, nil
	}
	me := el.Value.(*memEntry)
	me.entry.Done, me.entry.Answer = true, a
	me.expires = now.Add(ttl)
	m.bytes -= me.size
	me.size = me.measure()
	m.bytes += me.size
	m.order.MoveToBack(el)
	if !m.evict(el) {
		// The running batches leave no room for this answer: keep the key as run, without its answer, rather
		// than drop it and let a retry run the batch again.
		m.bytes -= me.size
		me.entry.Answer = Answer{Status: a.Status, NotStored: true}
		me.size = me.measure()
		m.bytes += me.size
	}
	return true, nil
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, key string, claim Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el := m.live(key, claim, m.now()); el != nil {
		m.remove(el)
	}
	return nil
}

// Len is the number of entries held, expired ones not yet swept included.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len()
}

// live returns key's element when it still holds claim's unexpired running entry.
func (m *Memory) live(key string, claim Entry, now time.Time) *list.Element {
	el, ok := m.entries[key]
	if !ok {
		return nil
	}
	me := el.Value.(*memEntry)
	if me.entry.Done || me.entry.Token != claim.Token || !now.Before(me.expires) {
		return nil
	}
	return el
}

// sweep drops expired entries from the old end. Entries further on may have expired too (a running entry's lease
// is shorter than a done entry's TTL); lookups drop those, and the size bound holds whatever remains.
func (m *Memory) sweep(now time.Time) {
	for el := m.order.Front(); el != nil && !now.Before(el.Value.(*memEntry).expires); el = m.order.Front() {
		m.remove(el)
	}
}

// evict drops the oldest done entries but keep while the store holds more than its bounds, and reports whether
// it is within them. A running entry is never dropped: its batch would then run twice.
func (m *Memory) evict(keep *list.Element) bool {
	el := m.order.Front()
	for el != nil && (m.order.Len() > m.max || m.bytes > m.maxBytes) {
		next := el.Next()
		if el != keep && el.Value.(*memEntry).entry.Done {
			m.remove(el)
		}
		el = next
	}
	return m.order.Len() <= m.max && m.bytes <= m.maxBytes
}

// ErrFull is Claim's error when the store holds as many running batches as it may: none of them can be dropped.
var ErrFull = errors.New("idempotency: the memory store is full of running batches")

// Bytes is the size of the entries held, as counted against MaxBytes.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

func (m *Memory) remove(el *list.Element) {
	me := el.Value.(*memEntry)
	delete(m.entries, me.key)
	m.bytes -= me.size
	m.order.Remove(el)
}

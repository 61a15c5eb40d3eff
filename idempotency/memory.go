package idempotency

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// MemoryConfig configures a Memory store. Zero values mean defaults.
type MemoryConfig struct {
	// MaxEntries bounds the number of keys held, running or done; past it the oldest entry is evicted. Default
	// 10000.
	MaxEntries int
	// Now is the clock; default time.Now. Tests pass their own to expire entries without waiting.
	Now func() time.Time
}

// Memory is the in-process Store: one replica's keys, lost on restart. It holds at most MaxEntries entries: a new
// key evicts the oldest one (the least recently written), so a flood of keys costs replays of old answers, never
// unbounded memory. Expired entries are swept lazily: a lookup drops the expired entry it finds, and every write
// first drops expired entries from the old end.
type Memory struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element // key → element of order
	order   *list.List               // *memEntry, least recently written first
}

type memEntry struct {
	key     string
	entry   Entry
	expires time.Time
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{max: cfg.MaxEntries, now: cfg.Now, entries: make(map[string]*list.Element), order: list.New()}
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
	m.entries[key] = m.order.PushBack(&memEntry{key: key, entry: e, expires: now.Add(lease)})
	for m.order.Len() > m.max {
		m.remove(m.order.Front())
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
	m.order.MoveToBack(el)
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

func (m *Memory) remove(el *list.Element) {
	delete(m.entries, el.Value.(*memEntry).key)
	m.order.Remove(el)
}

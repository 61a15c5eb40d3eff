// Package budget bounds the bytes that client input can make batchd hold (README "Limits and guarantees"): a Pool for
// the whole process and an Account per batch, drawn from the pool.
//
// Contract:
//   - Bytes are reserved where they are about to be allocated (a response read, a call built, an index kept, an
//     answer copied) and released when they are let go; Account.Close releases whatever the batch still holds.
//   - A reservation succeeds only when both the account's limit and the pool's limit hold it; otherwise it takes
//     nothing and returns an *Error naming the budget that is full.
//   - Every method is safe for concurrent use. A nil *Account has no limit and reserves nothing, so code that runs
//     without budgets (library use, tests) needs no special case.
package budget

import (
	"strconv"
	"sync/atomic"
)

// Scope names a budget in an Error.
type Scope string

const (
	ScopeBatch   Scope = "batch"   // -max-batch-bytes
	ScopeProcess Scope = "process" // -memory-budget
)

// Error is a reservation that a budget could not hold.
type Error struct {
	Scope Scope
	Want  int64 // the bytes asked for
	Used  int64 // the bytes the budget held already
	Limit int64
}

func (e *Error) Error() string {
	name := "the batch's byte budget (-max-batch-bytes)"
	if e.Scope == ScopeProcess {
		name = "the process memory budget (-memory-budget)"
	}
	return strconv.FormatInt(e.Want, 10) + " more bytes would cross " + name + " of " + Size(e.Limit) +
		" (" + Size(e.Used) + " in use)"
}

// Pool is the process-wide budget: the bytes held by every batch in flight.
type Pool struct {
	limit int64
	used  atomic.Int64
}

// NewPool returns a pool of limit bytes; a limit of 0 or less means no limit.
func NewPool(limit int64) *Pool { return &Pool{limit: limit} }

// Limit is the pool's limit in bytes, 0 for none.
func (p *Pool) Limit() int64 {
	if p == nil || p.limit <= 0 {
		return 0
	}
	return p.limit
}

// InUse is the bytes reserved now by every open account.
func (p *Pool) InUse() int64 {
	if p == nil {
		return 0
	}
	return p.used.Load()
}

// reserve takes n bytes from the pool if it holds them.
func (p *Pool) reserve(n int64) error {
	if p == nil {
		return nil
	}
	if used, ok := take(&p.used, n, p.limit); !ok {
		return &Error{Scope: ScopeProcess, Want: n, Used: used, Limit: p.limit}
	}
	return nil
}

// take adds n to used unless that would cross limit (0: none); it returns what used held when it refused. A
// compare-and-swap loop: a refused reservation never shows in used, not even for a moment.
func take(used *atomic.Int64, n, limit int64) (int64, bool) {
	for {
		old := used.Load()
		if limit > 0 && old+n > limit {
			return old, false
		}
		if used.CompareAndSwap(old, old+n) {
			return old, true
		}
	}
}

func (p *Pool) release(n int64) {
	if p != nil {
		p.used.Add(-n)
	}
}

// Open admits a batch: it returns an account of limit bytes (0: bounded by the pool alone) holding initial bytes
// already, or an *Error when the pool cannot hold initial. A nil pool gives an account bounded by limit alone.
func (p *Pool) Open(limit, initial int64) (*Account, error) {
	a := &Account{pool: p, limit: limit}
	if err := a.Reserve(initial); err != nil {
		return nil, err
	}
	return a, nil
}

// Account is one batch's share of the pool.
type Account struct {
	pool  *Pool
	limit int64
	used  atomic.Int64
}

// Reserve takes n more bytes, or none and an *Error when the account or the pool cannot hold them.
func (a *Account) Reserve(n int64) error {
	if a == nil || n <= 0 {
		return nil
	}
	if used, ok := take(&a.used, n, a.limit); !ok {
		return &Error{Scope: ScopeBatch, Want: n, Used: used, Limit: a.limit}
	}
	if err := a.pool.reserve(n); err != nil {
		a.used.Add(-n)
		return err
	}
	return nil
}

// Release gives back n bytes reserved earlier.
func (a *Account) Release(n int64) {
	if a == nil || n <= 0 {
		return
	}
	a.used.Add(-n)
	a.pool.release(n)
}

// Used is the bytes the account holds now.
func (a *Account) Used() int64 {
	if a == nil {
		return 0
	}
	return a.used.Load()
}

// Close releases everything the account still holds. It must be the account's last call.
func (a *Account) Close() {
	if a == nil {
		return
	}
	a.pool.release(a.used.Swap(0))
}

// Size renders a byte count for messages: "8 MiB", "512 KiB", "1234 bytes".
func Size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + " GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

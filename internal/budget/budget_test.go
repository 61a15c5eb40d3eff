package budget

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAccountAndPoolLimits(t *testing.T) {
	p := NewPool(1000)
	a, err := p.Open(600, 100)
	require.NoError(t, err)
	require.NoError(t, a.Reserve(500))
	assert.Equal(t, int64(600), a.Used())
	assert.Equal(t, int64(600), p.InUse())

	// Over the batch's own limit: nothing taken, the error names the batch budget.
	err = a.Reserve(1)
	var be *Error
	require.ErrorAs(t, err, &be)
	assert.Equal(t, Error{Scope: ScopeBatch, Want: 1, Used: 600, Limit: 600}, *be)
	assert.Contains(t, be.Error(), "-max-batch-bytes")
	assert.Equal(t, int64(600), p.InUse())

	// Over the pool: another batch gets what is left, no more, and cannot be admitted past it.
	b, err := p.Open(0, 400)
	require.NoError(t, err)
	err = b.Reserve(1)
	require.ErrorAs(t, err, &be)
	assert.Equal(t, ScopeProcess, be.Scope)
	assert.Contains(t, be.Error(), "-memory-budget")
	_, err = p.Open(0, 1)
	require.ErrorAs(t, err, &be)
	assert.Equal(t, int64(1000), p.InUse(), "a refused admission takes nothing")

	a.Release(100)
	require.NoError(t, b.Reserve(100))
	a.Close()
	b.Close()
	assert.Zero(t, p.InUse())
	assert.Zero(t, a.Used())
}

func TestNilAccountAndPool(t *testing.T) {
	var a *Account
	require.NoError(t, a.Reserve(1<<40))
	a.Release(1)
	a.Close()
	assert.Zero(t, a.Used())

	var p *Pool
	acct, err := p.Open(10, 5)
	require.NoError(t, err)
	assert.Error(t, acct.Reserve(6), "the batch limit holds without a pool")
	acct.Close()
	assert.Zero(t, p.InUse())
	assert.Zero(t, NewPool(0).Limit())
}

// TestConcurrentReservations: from many goroutines, the pool never holds more than its limit, and what was
// reserved is released.
func TestConcurrentReservations(t *testing.T) {
	p := NewPool(10_000)
	var peak int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			a, err := p.Open(2_000, 10)
			if err != nil {
				return
			}
			defer a.Close()
			for i := range 200 {
				if a.Reserve(int64(i%50)) == nil {
					mu.Lock()
					peak = max(peak, p.InUse())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, peak, int64(10_000))
	assert.Zero(t, p.InUse())
}

func TestSize(t *testing.T) {
	assert.Equal(t, "8 MiB", Size(8<<20))
	assert.Equal(t, "64 KiB", Size(64<<10))
	assert.Equal(t, "2 GiB", Size(2<<30))
	assert.Equal(t, "1000 bytes", Size(1000))
	assert.True(t, errors.As(error(&Error{}), new(*Error)))
}

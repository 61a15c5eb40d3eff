package runner_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// safety bounds every wait of a test on another goroutine. It is never what a test measures: a test that hits it
// has failed (a missed signal or a deadlock), however slow the machine.
const safety = 20 * time.Second

const okBody = `{"ok":true,"result":{"new_id":7}}`

// fakeInvoker records every call's start and end, in order, and answers with Step[key] or, without one, with
// 200 okBody. A rollback call (Call.Rollback) is recorded and looked up as "rollback <key>".
type fakeInvoker struct {
	Step map[string]func(ctx context.Context, c runner.Call) (runner.Response, error)

	mu          sync.Mutex
	events      []string
	calls       map[string][]runner.Call
	inFlight    int
	maxInFlight int
}

var _ runner.Invoker = (*fakeInvoker)(nil)

func (f *fakeInvoker) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	key := c.Key
	if c.Rollback {
		key = "rollback " + key
	}
	f.mu.Lock()
	f.events = append(f.events, "start "+key)
	if f.calls == nil {
		f.calls = make(map[string][]runner.Call)
	}
	f.calls[key] = append(f.calls[key], c)
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.events = append(f.events, "end "+key)
		f.inFlight--
		f.mu.Unlock()
	}()
	if h := f.Step[key]; h != nil {
		return h(ctx, c)
	}
	return runner.Response{Status: 200, Body: []byte(okBody)}, nil
}

func (f *fakeInvoker) Events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

func (f *fakeInvoker) Calls(key string) []runner.Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[key])
}

func (f *fakeInvoker) Started() []string {
	var keys []string
	for _, e := range f.Events() {
		if k, ok := strings.CutPrefix(e, "start "); ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func (f *fakeInvoker) MaxInFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxInFlight
}

// pos returns the position of event e in events, failing the test when it is missing.
func pos(t *testing.T, events []string, e string) int {
	t.Helper()
	i := slices.Index(events, e)
	require.GreaterOrEqual(t, i, 0, "event %q missing from %q", e, events)
	return i
}

func reply(status int, body string) func(context.Context, runner.Call) (runner.Response, error) {
	return func(context.Context, runner.Call) (runner.Response, error) {
		return runner.Response{Status: status, Body: []byte(body)}, nil
	}
}

// barrier lets each of n callers through once all n have arrived.
type barrier struct {
	t     *testing.T
	n     int32
	count atomic.Int32
	ch    chan struct{}
}

func newBarrier(t *testing.T, n int) *barrier {
	return &barrier{t: t, n: int32(n), ch: make(chan struct{})}
}

func (b *barrier) Arrive() {
	if b.count.Add(1) == b.n {
		close(b.ch)
	}
	wait(b.t, b.ch, "barrier")
}

// wait blocks until ch is closed, failing the test (from any goroutine) past the safety bound.
func wait(t *testing.T, ch <-chan struct{}, what string) bool {
	select {
	case <-ch:
		return true
	case <-time.After(safety):
		t.Errorf("timed out waiting for %s", what)
		return false
	}
}

// mustPlan parses a batch body with the real planner.
func mustPlan(t testing.TB, body string) *planner.Plan {
	t.Helper()
	p, err := planner.Parse([]byte(body), planner.Config{MaxSteps: 1000})
	require.NoError(t, err)
	return p
}

// byKey indexes results by key.
func byKey(results []runner.Result) map[string]runner.Result {
	m := make(map[string]runner.Result, len(results))
	for _, r := range results {
		m[r.Key] = r
	}
	return m
}

// recorder is a runner.Recorder that keeps every event.
type recorder struct {
	mu        sync.Mutex
	started   []string
	steps     []runner.StepEvent
	batches   []runner.BatchEvent
	rollbacks []string // "<rollback name without undo/> ok=<bool>"
}

func (r *recorder) RollbackDone(name string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rollbacks = append(r.rollbacks, strings.TrimPrefix(name, "undo/")+" ok="+strconv.FormatBool(ok))
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.rollbacks)
}

func (r *recorder) StepStarted(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, name)
}

func (r *recorder) StepDone(e runner.StepEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, e)
}

func (r *recorder) BatchDone(e runner.BatchEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, e)
}

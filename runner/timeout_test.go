package runner_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/runner"
)

// TestStepTimeoutsStaggered runs steps that start at different times in one batch: each slow step is cancelled at
// its own deadline, not an earlier step's, with its own cause; a step that returns before its deadline is not
// reported as timed out, even when an older step's deadline passed while it ran.
func TestStepTimeoutsStaggered(t *testing.T) {
	const timeout = 400 * time.Millisecond
	type seen struct {
		start, deadline time.Time
		hasDeadline     bool
		err, cause      error
	}
	var mu sync.Mutex
	slow := map[string]seen{}
	block := func(ctx context.Context, c runner.Call) (runner.Response, error) {
		s := seen{start: time.Now()}
		s.deadline, s.hasDeadline = ctx.Deadline()
		select {
		case <-ctx.Done():
		case <-time.After(safety):
		}
		s.err, s.cause = ctx.Err(), context.Cause(ctx)
		mu.Lock()
		slow[c.Key] = s
		mu.Unlock()
		return runner.Response{}, s.err
	}
	sleep := func(d time.Duration) func(context.Context, runner.Call) (runner.Response, error) {
		return func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			select {
			case <-time.After(d):
				return runner.Response{Status: 200, Body: []byte(okBody)}, nil
			case <-ctx.Done():
				return runner.Response{}, ctx.Err()
			}
		}
	}
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"S0": block, "S1": block, "S2": block,
		"Q0": sleep(timeout / 2),        // 0 → 0.5: half its time left
		"G1": sleep(timeout / 2),        // releases S1 and Q1 at 0.5
		"Q1": sleep(timeout * 65 / 100), // 0.5 → 1.15: S0's deadline (1.0) passes while it runs; its own is 1.5
		"G2": sleep(timeout * 3 / 4),    // releases S2 at 0.75
	}}
	results := run(t, f, runner.Config{StepTimeout: timeout}, `{"requests":[
		{"key":"S0","path":"Demo/Sleep"},
		{"key":"Q0","path":"Demo/Echo"},
		{"key":"G1","path":"Demo/Echo"},
		{"key":"G2","path":"Demo/Echo"},
		{"key":"S1","path":"Demo/Sleep","depends_on":["G1"]},
		{"key":"Q1","path":"Demo/Echo","depends_on":["G1"]},
		{"key":"S2","path":"Demo/Sleep","depends_on":["G2"]}
	]}`, runner.Options{})
	m := byKey(results)
	for _, k := range []string{"Q0", "G1", "G2", "Q1"} {
		requireOK(t, m[k])
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range []string{"S0", "S1", "S2"} {
		requireDecided(t, m[k], errcode.StepTimeout, runner.OutcomeTimeout, true)
		assert.GreaterOrEqual(t, m[k].Duration, timeout, "%s cancelled before its own deadline", k)
		s, ok := slow[k]
		require.True(t, ok, k)
		var ste *runner.StepTimeoutError
		require.ErrorAs(t, s.cause, &ste, k)
		assert.Equal(t, k, ste.Key)
		assert.Equal(t, timeout, ste.Timeout)
		assert.ErrorIs(t, s.err, context.DeadlineExceeded, k)
		require.True(t, s.hasDeadline, k)
		// The deadline is the step's own: StepTimeout after its start, which comes just before the call.
		assert.LessOrEqual(t, s.deadline.Sub(s.start), timeout, k)
		assert.Greater(t, s.deadline.Sub(s.start), timeout/2, k)
	}
	assert.Less(t, m["S0"].Started, m["S1"].Started)
	assert.Less(t, m["S1"].Started, m["S2"].Started)
}

// TestStepTimeoutEachBatch runs batches concurrently on one Runner, each with a step that times out and steps that
// do not: every batch's timeouts cancel only its own steps.
func TestStepTimeoutEachBatch(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": blockUntilDone,
	}}
	r := runner.New(f, runner.Config{StepTimeout: 30 * time.Millisecond})
	p := mustPlan(t, `{"requests":[{"key":"A","path":"Demo/Sleep"},{"key":"B","path":"Demo/Echo"},
		{"key":"C","path":"Demo/Echo","depends_on":["B"]}]}`)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			m := byKey(r.Run(context.Background(), p, runner.Options{}))
			requireDecided(t, m["A"], errcode.StepTimeout, runner.OutcomeTimeout, true)
			requireOK(t, m["B"])
			requireOK(t, m["C"])
		})
	}
	wg.Wait()
}

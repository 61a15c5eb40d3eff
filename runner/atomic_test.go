package runner_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/batchtest"
	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
)

type handlers = map[string]func(context.Context, runner.Call) (runner.Response, error)

// decodeAnswer is the answer of a batch as the service writes it (transport.AppendAnswer), decoded.
func decodeAnswer(t *testing.T, body string, results []runner.Result) batchtest.Answer {
	t.Helper()
	out := transport.AppendAnswer(nil, mustPlan(t, body), results)
	require.True(t, json.Valid(out), "%s", out)
	var a batchtest.Answer
	require.NoError(t, json.Unmarshal(out, &a), "%s", out)
	return a
}

// rollbackEvents returns the keys of the rollback calls that started, in order.
func rollbackEvents(f *fakeInvoker) []string {
	var keys []string
	for _, e := range f.Events() {
		if k, ok := strings.CutPrefix(e, "start rollback "); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

const chainABC = `{"atomic": true, "requests": [
	{"key": "A", "path": "Producer/Add", "rollback": {"path": "Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
	{"key": "B", "path": "Producer/Add", "depends_on": ["A"],
	 "rollback": {"path": "Producer/${A.result.new_id}/Undo", "payload": {"ids": ["${self.result.new_id}"], "of": "${B.result.new_id}"}}},
	{"key": "C", "path": "Demo/Fail", "depends_on": ["B"], "rollback": {"path": "never"}}
]}`

func TestAtomicCommitted(t *testing.T) {
	f := &fakeInvoker{}
	body := strings.Replace(chainABC, "Demo/Fail", "Demo/Echo", 1)
	results := run(t, f, runner.Config{}, body, runner.Options{OnRollback: func(runner.Result) { t.Error("OnRollback in a committed batch") }})
	for _, r := range results {
		requireOK(t, r)
		assert.Nil(t, r.Rollback)
	}
	assert.Empty(t, rollbackEvents(f), "a committed batch runs no rollback")
	a := decodeAnswer(t, body, results)
	require.NotNil(t, a.Atomic)
	assert.True(t, a.Atomic.Committed)
	assert.NotNil(t, a.Atomic.RollbackFailures, "always listed, empty")
	assert.Empty(t, a.Atomic.RollbackFailures)
	for _, r := range a.Responses {
		require.NotNil(t, r.RolledBack, r.Key)
		assert.False(t, *r.RolledBack)
		assert.Zero(t, r.RollbackStatus)
		assert.Nil(t, r.Timing, "no timings unless asked")
	}
	assert.Nil(t, a.CriticalPath)
}

func TestAtomicRollsBackInReverseDependencyOrder(t *testing.T) {
	ids := map[string]int{"A": 11, "B": 22}
	f := &fakeInvoker{Step: handlers{
		"A": reply(200, `{"ok":true,"result":{"new_id":11}}`),
		"B": reply(200, `{"ok":true,"result":{"new_id":22}}`),
		"C": reply(200, `{"ok":false,"result":{"error":1008,"description":"no"}}`),
	}}
	var mu sync.Mutex
	var lines []string
	opt := runner.Options{
		OnResult: func(r runner.Result) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, "result "+r.Key)
			assert.Nil(t, r.Rollback, "a step's result comes before any rollback")
		},
		OnRollback: func(r runner.Result) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, "rollback "+r.Key)
			assert.True(t, r.RolledBack(), r.Key)
		},
	}
	results := run(t, f, runner.Config{}, chainABC, opt)
	m := byKey(results)

	assert.Equal(t, []string{"B", "A"}, rollbackEvents(f), "B's rollback before A's; the failed C has none")
	ev := f.Events()
	assert.Less(t, pos(t, ev, "end C"), pos(t, ev, "start rollback B"), "rollbacks after every step ended")
	assert.Less(t, pos(t, ev, "end rollback B"), pos(t, ev, "start rollback A"), "A's rollback waits for B's")

	// Each rollback was built from its step's own response and its dependencies'.
	rbA := f.Calls("rollback A")
	require.Len(t, rbA, 1)
	assert.True(t, rbA[0].Rollback)
	assert.Equal(t, "Producer/Delete", rbA[0].Path)
	assert.Equal(t, "Producer/Delete", rbA[0].Name)
	assert.Equal(t, "POST", rbA[0].Method)
	assert.JSONEq(t, `{"ids":[11]}`, string(rbA[0].Body))
	rbB := f.Calls("rollback B")
	require.Len(t, rbB, 1)
	assert.Equal(t, "Producer/11/Undo", rbB[0].Path)
	assert.JSONEq(t, `{"ids":[22],"of":22}`, string(rbB[0].Body))

	for key := range ids {
		r := m[key]
		requireOK(t, r)
		require.NotNil(t, r.Rollback, key)
		assert.True(t, r.RolledBack(), key)
		assert.Equal(t, 200, r.Rollback.Status)
		assert.True(t, r.Rollback.Executed)
		assert.Nil(t, r.Rollback.Body, "kept only when the rollback failed")
		assert.Equal(t, 200, r.Status, "the step keeps its own status")
	}
	assert.Nil(t, m["C"].Rollback, "a failed step is not rolled back")
	assert.Equal(t, runner.OutcomeError, m["C"].Outcome)

	mu.Lock()
	assert.Equal(t, []string{"result A", "result B", "result C", "rollback B", "rollback A"}, lines)
	mu.Unlock()

	a := decodeAnswer(t, chainABC, results)
	assert.False(t, a.Atomic.Committed)
	assert.Empty(t, a.Atomic.RollbackFailures)
	for i, want := range []bool{true, true, false} {
		assert.Equal(t, want, *a.Responses[i].RolledBack, a.Responses[i].Key)
	}
	assert.Equal(t, 200, a.Responses[0].RollbackStatus)
	assert.Zero(t, a.Responses[2].RollbackStatus)
}

func TestAtomicFailedRollbackIsReported(t *testing.T) {
	// A ← B ← D and A ← C; D fails. B's rollback fails, so A (which B depends on) is not rolled back; C's rollback
	// is independent of B's and runs.
	body := `{"atomic": true, "requests": [
		{"key": "A", "path": "a", "rollback": {"path": "undo/a"}},
		{"key": "B", "path": "b", "depends_on": ["A"], "rollback": {"path": "undo/b"}},
		{"key": "C", "path": "c", "depends_on": ["A"], "rollback": {"path": "undo/c"}},
		{"key": "D", "path": "d", "depends_on": ["B"]}
	]}`
	rec := &recorder{}
	cDone := make(chan struct{}) // D fails only once C has succeeded, so that C is rolled back
	f := &fakeInvoker{Step: handlers{
		"D": func(context.Context, runner.Call) (runner.Response, error) {
			wait(t, cDone, "C")
			return runner.Response{Status: 500, Body: []byte(`{"ok":false}`)}, nil
		},
		"rollback B": reply(409, `{"ok":false,"result":{"error":7,"description":"in use"}}`),
	}}
	var mu sync.Mutex
	var rolled []string
	opt := runner.Options{
		OnResult: func(r runner.Result) {
			if r.Key == "C" {
				close(cDone)
			}
		},
		OnRollback: func(r runner.Result) {
			mu.Lock()
			defer mu.Unlock()
			rolled = append(rolled, r.Key)
		},
	}
	results := run(t, f, runner.Config{Recorder: rec}, body, opt)
	m := byKey(results)

	assert.ElementsMatch(t, []string{"B", "C"}, rollbackEvents(f), "A's rollback is not attempted")
	require.NotNil(t, m["B"].Rollback)
	assert.False(t, m["B"].RolledBack())
	assert.Equal(t, 409, m["B"].Rollback.Status)
	assert.JSONEq(t, `{"ok":false,"result":{"error":7,"description":"in use"}}`, string(m["B"].Rollback.Body))
	assert.True(t, m["C"].RolledBack())
	require.NotNil(t, m["A"].Rollback)
	assert.False(t, m["A"].RolledBack())
	assert.False(t, m["A"].Rollback.Executed)
	assert.Equal(t, errcode.DependencyFailed, m["A"].Rollback.Code)
	assert.Equal(t, 424, m["A"].Rollback.Status)
	assert.Contains(t, decodeError(t, m["A"].Rollback.Body).Result.Description, "the rollback of B")

	mu.Lock()
	assert.ElementsMatch(t, []string{"A", "B", "C"}, rolled, "OnRollback once per attempted rollback")
	mu.Unlock()
	assert.ElementsMatch(t, []string{"a ok=false", "b ok=false", "c ok=true"}, rec.events(),
		"the recorder counts the rollback not attempted as failed")

	a := decodeAnswer(t, body, results)
	assert.False(t, a.Atomic.Committed)
	require.Len(t, a.Atomic.RollbackFailures, 2, "never hidden")
	assert.Equal(t, "A", a.Atomic.RollbackFailures[0].Key)
	assert.Equal(t, 424, a.Atomic.RollbackFailures[0].Status)
	assert.Equal(t, "B", a.Atomic.RollbackFailures[1].Key)
	assert.Equal(t, 409, a.Atomic.RollbackFailures[1].Status)
	assert.JSONEq(t, `{"ok":false,"result":{"error":7,"description":"in use"}}`, string(a.Atomic.RollbackFailures[1].Response))
	assert.Equal(t, 409, a.Responses[1].RollbackStatus)
	assert.False(t, *a.Responses[1].RolledBack)
}

func TestAtomicNeverStartedStepsAreNotRolledBack(t *testing.T) {
	// F fails while S is still running; N (waiting for S) never starts: 412. S finishes and is rolled back.
	sStarted := make(chan struct{})
	release := make(chan struct{}) // closed once F's failure is final
	f := &fakeInvoker{Step: handlers{
		"S": func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			close(sStarted)
			wait(t, release, "F to fail")
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
		"F": func(context.Context, runner.Call) (runner.Response, error) {
			wait(t, sStarted, "S to start")
			return runner.Response{Status: 502, Body: []byte(`"bad gateway"`)}, nil
		},
	}}
	body := `{"atomic": true, "requests": [
		{"key": "S", "path": "s", "rollback": {"path": "undo/s"}},
		{"key": "F", "path": "f", "rollback": {"path": "undo/f"}},
		{"key": "N", "path": "n", "depends_on": ["S"], "rollback": {"path": "undo/n"}}
	]}`
	results := run(t, f, runner.Config{}, body, runner.Options{OnResult: func(r runner.Result) {
		if r.Key == "F" {
			close(release)
		}
	}})
	m := byKey(results)
	requireOK(t, m["S"])
	assert.True(t, m["S"].RolledBack(), "a step that finished after the failure is rolled back")
	requireDecided(t, m["N"], errcode.NotExecuted, runner.OutcomeSkipped, false)
	assert.Nil(t, m["N"].Rollback)
	assert.Nil(t, m["F"].Rollback)
	assert.Equal(t, []string{"S"}, rollbackEvents(f))
}

func TestAtomicStepWithoutRollback(t *testing.T) {
	// B has no rollback: nothing to undo, and A's rollback still waits for it (and runs).
	body := `{"atomic": true, "requests": [
		{"key": "A", "path": "a", "rollback": {"path": "undo/a"}},
		{"key": "B", "path": "b", "depends_on": ["A"]},
		{"key": "C", "path": "c", "depends_on": ["B"]}
	]}`
	f := &fakeInvoker{Step: handlers{"C": reply(400, `{}`)}}
	results := run(t, f, runner.Config{}, body, runner.Options{})
	m := byKey(results)
	assert.True(t, m["A"].RolledBack())
	assert.Nil(t, m["B"].Rollback)
	assert.False(t, m["B"].RolledBack())
	assert.Equal(t, []string{"A"}, rollbackEvents(f))
}

func TestAtomicRollbacksRunInParallelWithinLimits(t *testing.T) {
	// Four independent steps succeed and one fails: their four rollbacks are independent and meet at a barrier,
	// which they can only pass together.
	body := `{"atomic": true, "requests": [
		{"key": "A", "path": "a", "rollback": {"path": "u"}}, {"key": "B", "path": "b", "rollback": {"path": "u"}},
		{"key": "C", "path": "c", "rollback": {"path": "u"}}, {"key": "D", "path": "d", "rollback": {"path": "u"}},
		{"key": "F", "path": "f", "depends_on": ["A", "B", "C", "D"]}
	]}`
	bar := newBarrier(t, 4)
	arrive := func(context.Context, runner.Call) (runner.Response, error) {
		bar.Arrive()
		return runner.Response{Status: 200, Body: []byte(okBody)}, nil
	}
	f := &fakeInvoker{Step: handlers{"F": reply(500, "null"),
		"rollback A": arrive, "rollback B": arrive, "rollback C": arrive, "rollback D": arrive}}
	results := run(t, f, runner.Config{MaxParallel: 4}, body, runner.Options{})
	for _, r := range results[:4] {
		assert.True(t, r.RolledBack(), r.Key)
	}

	// With MaxParallel 2 they still all run, never more than 2 at once.
	f = &fakeInvoker{Step: handlers{"F": reply(500, "null")}}
	results = run(t, f, runner.Config{MaxParallel: 2}, body, runner.Options{})
	for _, r := range results[:4] {
		assert.True(t, r.RolledBack(), r.Key)
	}
	assert.LessOrEqual(t, f.MaxInFlight(), 2)
}

func TestAtomicRollbackSurvivesClientLeaving(t *testing.T) {
	// The client goes away while B runs: B is cancelled (499), and A's rollback still runs, with a live context.
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	f := &fakeInvoker{Step: handlers{
		"B": func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			close(started)
			<-ctx.Done()
			return runner.Response{}, ctx.Err()
		},
		"rollback A": func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			if err := ctx.Err(); err != nil {
				return runner.Response{}, err
			}
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
	}}
	p := mustPlan(t, `{"atomic": true, "requests": [
		{"key": "A", "path": "a", "rollback": {"path": "undo/a"}},
		{"key": "B", "path": "b", "depends_on": ["A"], "rollback": {"path": "undo/b"}}
	]}`)
	go func() {
		wait(t, started, "B to start")
		cancel()
	}()
	results := runner.New(f, runner.Config{}).Run(ctx, p, runner.Options{})
	requireDecided(t, results[1], errcode.Cancelled, runner.OutcomeSkipped, true)
	assert.True(t, results[0].RolledBack(), "rollback: %+v", results[0].Rollback)
}

func TestAtomicRollbackTimeoutAndUnresolvable(t *testing.T) {
	body := `{"atomic": true, "requests": [
		{"key": "A", "path": "a", "rollback": {"path": "undo/a"}},
		{"key": "B", "path": "b", "rollback": {"path": "undo/b", "payload": {"id": "${self.result.missing}"}}},
		{"key": "F", "path": "f", "depends_on": ["A", "B"]}
	]}`
	f := &fakeInvoker{Step: handlers{"F": reply(500, "null"), "rollback A": blockUntilDone}}
	results := run(t, f, runner.Config{StepTimeout: 20 * time.Millisecond}, body, runner.Options{})
	m := byKey(results)
	require.NotNil(t, m["A"].Rollback)
	assert.Equal(t, errcode.StepTimeout, m["A"].Rollback.Code)
	assert.Equal(t, 504, m["A"].Rollback.Status)
	require.NotNil(t, m["B"].Rollback)
	assert.Equal(t, errcode.Unresolvable, m["B"].Rollback.Code)
	assert.Equal(t, 424, m["B"].Rollback.Status)
	assert.False(t, m["B"].Rollback.Executed)
	assert.Contains(t, decodeError(t, m["B"].Rollback.Body).Result.Description, "${self.result.missing}")
	assert.Equal(t, []string{"A"}, rollbackEvents(f))
}

func TestAtomicRollbackPanic(t *testing.T) {
	f := &fakeInvoker{Step: handlers{"F": reply(500, "null"),
		"rollback A": func(context.Context, runner.Call) (runner.Response, error) { panic("boom") }}}
	results := run(t, f, runner.Config{Logger: slog.New(slog.DiscardHandler)}, `{"atomic": true, "requests": [
		{"key": "A", "path": "a", "rollback": {"path": "undo/a"}}, {"key": "F", "path": "f", "depends_on": ["A"]}]}`,
		runner.Options{})
	require.NotNil(t, results[0].Rollback)
	assert.Equal(t, errcode.StepPanic, results[0].Rollback.Code)
	assert.False(t, results[0].RolledBack())
}

func TestNotAtomicRunsNoRollback(t *testing.T) {
	f := &fakeInvoker{Step: handlers{"F": reply(500, "null")}}
	body := `{"stop_on_error": true, "requests": [
		{"key": "A", "path": "a", "rollback": {"path": "undo/a"}}, {"key": "F", "path": "f", "depends_on": ["A"]}]}`
	results := run(t, f, runner.Config{}, body, runner.Options{})
	assert.Nil(t, results[0].Rollback)
	assert.Empty(t, rollbackEvents(f))
	a := decodeAnswer(t, body, results)
	assert.Nil(t, a.Atomic, "no extension member")
	for _, r := range a.Responses {
		assert.Nil(t, r.RolledBack, "no extension member")
	}
}

func TestTimings(t *testing.T) {
	body := `{"timings": true, "requests": [
		{"key": "A", "path": "a"},
		{"key": "B", "path": "b", "depends_on": ["A"]},
		{"key": "C", "path": "c", "depends_on": ["B"]},
		{"key": "D", "path": "d"},
		{"key": "X", "path": "x", "depends_on": ["F"]},
		{"key": "F", "path": "f"}
	]}`
	sleep := func(ctx context.Context, _ runner.Call) (runner.Response, error) {
		time.Sleep(2 * time.Millisecond) // so that durations are not zero at microsecond precision
		return runner.Response{Status: 200, Body: []byte(okBody)}, nil
	}
	f := &fakeInvoker{Step: handlers{"A": sleep, "B": sleep, "C": sleep, "F": reply(500, "null")}}
	results := run(t, f, runner.Config{}, body, runner.Options{})
	p := mustPlan(t, body)
	cp := runner.CriticalPath(p, results)
	for _, r := range results {
		if !r.Executed {
			continue
		}
		assert.GreaterOrEqual(t, r.Started, r.Queued, r.Key)
		assert.LessOrEqual(t, r.Duration, cp, r.Key)
	}
	m := byKey(results)
	assert.GreaterOrEqual(t, m["B"].Queued, m["A"].Started+m["A"].Duration, "B is ready once A ended")
	assert.GreaterOrEqual(t, cp, m["A"].Duration+m["B"].Duration+m["C"].Duration)

	a := decodeAnswer(t, body, results)
	require.NotNil(t, a.CriticalPath)
	assert.InDelta(t, float64(cp.Microseconds())/1000, *a.CriticalPath, 0.0005)
	assert.Nil(t, a.Atomic)
	for i, r := range a.Responses {
		require.NotNil(t, r.Timing, r.Key)
		assert.Nil(t, r.RolledBack, "not atomic")
		res := results[i]
		assert.InDelta(t, float64(res.Queued.Microseconds())/1000, r.Timing.Queued, 0.0005)
		if !res.Executed {
			assert.Nil(t, r.Timing.Started, "%s never started", r.Key)
			assert.Nil(t, r.Timing.Duration)
			continue
		}
		require.NotNil(t, r.Timing.Started)
		assert.GreaterOrEqual(t, *r.Timing.Started, r.Timing.Queued)
		assert.LessOrEqual(t, *r.Timing.Duration, *a.CriticalPath)
	}
	assert.False(t, results[4].Executed, "X depends on the failed F")
}

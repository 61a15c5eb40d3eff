package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/semaphore"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/syncbuf"
	"github.com/batchd/batchd/runner"
)

// errorResult decodes an ErrorResult body.
type errorResult struct {
	OK     bool `json:"ok"`
	Result struct {
		Error       int    `json:"error"`
		Description string `json:"description"`
	} `json:"result"`
}

func decodeError(t *testing.T, body []byte) errorResult {
	t.Helper()
	var e errorResult
	require.NoError(t, json.Unmarshal(body, &e), "body %s", body)
	require.False(t, e.OK)
	return e
}

// requireDecided checks a result whose outcome batchd decided.
func requireDecided(t *testing.T, r runner.Result, code errcode.Code, o runner.Outcome, executed bool) errorResult {
	t.Helper()
	assert.Equal(t, code, r.Code, "code of %s", r.Key)
	assert.Equal(t, code.Status(), r.Status, "status of %s", r.Key)
	assert.Equal(t, o, r.Outcome, "outcome of %s", r.Key)
	assert.Equal(t, executed, r.Executed, "executed of %s", r.Key)
	assert.True(t, r.Failed, "failed of %s", r.Key)
	e := decodeError(t, r.Body)
	assert.Equal(t, int(code), e.Result.Error)
	return e
}

func requireOK(t *testing.T, r runner.Result) {
	t.Helper()
	assert.Equal(t, runner.OutcomeOK, r.Outcome, "outcome of %s: %s", r.Key, r.Body)
	assert.False(t, r.Failed, "failed of %s", r.Key)
	assert.True(t, r.Executed, "executed of %s", r.Key)
	assert.Zero(t, r.Code, "code of %s", r.Key)
}

func run(t *testing.T, inv runner.Invoker, cfg runner.Config, body string, opt runner.Options) []runner.Result {
	t.Helper()
	p := mustPlan(t, body)
	results := runner.New(inv, cfg).Run(context.Background(), p, opt)
	require.Len(t, results, len(p.Steps))
	for i, r := range results {
		require.Equal(t, i, r.Index)
		require.Equal(t, p.Steps[i].Key, r.Key)
		require.True(t, json.Valid(r.Body), "body of %s: %s", r.Key, r.Body)
	}
	return results
}

func TestIndependentStepsOverlap(t *testing.T) {
	const n = 5
	bar := newBarrier(t, n)
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){}}
	var keys []string
	for i := range n {
		k := fmt.Sprintf("S%d", i)
		keys = append(keys, fmt.Sprintf(`{"key":%q,"path":"Demo/Echo"}`, k))
		f.Step[k] = func(context.Context, runner.Call) (runner.Response, error) {
			bar.Arrive()
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		}
	}
	results := run(t, f, runner.Config{}, `{"requests":[`+strings.Join(keys, ",")+`]}`, runner.Options{})
	for _, r := range results {
		requireOK(t, r)
	}
	ev := f.Events()
	require.Len(t, ev, 2*n)
	for i := range n {
		assert.True(t, strings.HasPrefix(ev[i], "start "), "every start before any end: %q", ev)
	}
	assert.Equal(t, n, f.MaxInFlight())
}

func TestChainIsSerial(t *testing.T) {
	f := &fakeInvoker{}
	results := run(t, f, runner.Config{}, `{"requests":[
		{"key":"C","path":"Demo/Echo","payload":{"id":"${B.result.new_id}"}},
		{"key":"B","path":"Demo/Echo","payload":{"id":"${A.result.new_id}"}},
		{"key":"A","path":"Demo/Echo"}
	]}`, runner.Options{})
	for _, r := range results {
		requireOK(t, r)
	}
	ev := f.Events()
	assert.Greater(t, pos(t, ev, "start B"), pos(t, ev, "end A"), "%q", ev)
	assert.Greater(t, pos(t, ev, "start C"), pos(t, ev, "end B"), "%q", ev)
	assert.Equal(t, 1, f.MaxInFlight())
	m := byKey(results)
	assert.GreaterOrEqual(t, m["B"].Queued, m["A"].Started+m["A"].Duration)
	assert.GreaterOrEqual(t, m["C"].Started, m["C"].Queued)
}

func TestDiamond(t *testing.T) {
	f := &fakeInvoker{}
	results := run(t, f, runner.Config{}, `{"requests":[
		{"key":"A","path":"Demo/Echo"},
		{"key":"B","path":"Demo/Echo","payload":{"a":"${A.result.new_id}"}},
		{"key":"C","path":"Demo/Echo","depends_on":["A"]},
		{"key":"D","path":"Demo/Echo","payload":{"b":"${B.result.new_id}","c":"${C.ok}"}}
	]}`, runner.Options{})
	for _, r := range results {
		requireOK(t, r)
	}
	assert.Len(t, f.Calls("A"), 1)
	assert.Len(t, f.Calls("D"), 1)
	ev := f.Events()
	assert.Greater(t, pos(t, ev, "start B"), pos(t, ev, "end A"))
	assert.Greater(t, pos(t, ev, "start C"), pos(t, ev, "end A"))
	assert.Greater(t, pos(t, ev, "start D"), pos(t, ev, "end B"))
	assert.Greater(t, pos(t, ev, "start D"), pos(t, ev, "end C"))
	assert.JSONEq(t, `{"b":7,"c":true}`, string(f.Calls("D")[0].Body))
}

func independent(n int, stopOnError bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"stop_on_error":%t,"requests":[`, stopOnError)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"key":"S%d","path":"Demo/Echo","payload":{"i":%d}}`, i, i)
	}
	b.WriteString("]}")
	return b.String()
}

func TestMaxParallelNeverExceeded(t *testing.T) {
	const n, limit = 50, 4
	bar := newBarrier(t, limit)
	var mu sync.Mutex
	calls := 0
	f := &fakeInvoker{}
	f.Step = map[string]func(context.Context, runner.Call) (runner.Response, error){}
	h := func(context.Context, runner.Call) (runner.Response, error) {
		mu.Lock()
		calls++
		first := calls <= limit
		mu.Unlock()
		if first { // the first wave fills every slot before anyone leaves: the limit is reached, not just respected
			bar.Arrive()
		}
		runtime.Gosched()
		return runner.Response{Status: 200, Body: []byte(okBody)}, nil
	}
	for i := range n {
		f.Step[fmt.Sprintf("S%d", i)] = h
	}
	results := run(t, f, runner.Config{MaxParallel: limit}, independent(n, false), runner.Options{})
	for _, r := range results {
		requireOK(t, r)
	}
	assert.Equal(t, limit, f.MaxInFlight())
	assert.Len(t, f.Started(), n)
}

func TestGlobalLimitAcrossBatches(t *testing.T) {
	const limit = 2
	bar := newBarrier(t, limit)
	var mu sync.Mutex
	calls := 0
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){}}
	for i := range 6 {
		f.Step[fmt.Sprintf("S%d", i)] = func(context.Context, runner.Call) (runner.Response, error) {
			mu.Lock()
			calls++
			first := calls <= limit
			mu.Unlock()
			if first {
				bar.Arrive()
			}
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		}
	}
	r := runner.New(f, runner.Config{Limit: semaphore.NewWeighted(limit)})
	p := mustPlan(t, independent(6, false))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for _, res := range r.Run(context.Background(), p, runner.Options{}) {
				requireOK(t, res)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, limit, f.MaxInFlight())
}

func TestDependencyFailed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"status 500", 500, `{"ok":false,"result":{"error":1,"description":"boom"}}`},
		{"status 404 plain", 404, `"not found"`},
		{"ok false with 200", 200, `{"ok":false,"result":{"error":1008,"description":"name required"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
				"A": reply(tc.status, tc.body),
			}}
			results := run(t, f, runner.Config{}, `{"requests":[
				{"key":"A","path":"Producer/Add","payload":{"name":""}},
				{"key":"B","path":"Producer/Get","payload":{"ids":["${A.result.new_id}"]}},
				{"key":"C","path":"Demo/Echo","depends_on":["B"]},
				{"key":"D","path":"Demo/Echo"}
			]}`, runner.Options{})
			m := byKey(results)

			a := m["A"]
			assert.Equal(t, tc.status, a.Status)
			assert.Equal(t, tc.body, string(a.Body), "the step's own body is returned as is")
			assert.Equal(t, runner.OutcomeError, a.Outcome)
			assert.True(t, a.Failed)
			assert.True(t, a.Executed)
			assert.Zero(t, a.Code)

			e := requireDecided(t, m["B"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
			assert.Contains(t, e.Result.Description, "A")
			e = requireDecided(t, m["C"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
			assert.Contains(t, e.Result.Description, "B", "a transitive dependent names its direct dependency")
			requireOK(t, m["D"])
			assert.Equal(t, []string{"A", "D"}, f.Started())
		})
	}
}

func TestStopOnErrorWaitingForSlot(t *testing.T) {
	// One slot: the first call fails while every other step waits for the slot; none of them may start.
	const n = 10
	var mu sync.Mutex
	calls := 0
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){}}
	for i := range n {
		f.Step[fmt.Sprintf("S%d", i)] = func(context.Context, runner.Call) (runner.Response, error) {
			mu.Lock()
			calls++
			first := calls == 1
			mu.Unlock()
			if first {
				return runner.Response{Status: 500, Body: []byte(`{"ok":false}`)}, nil
			}
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		}
	}
	results := run(t, f, runner.Config{MaxParallel: 1}, independent(n, true), runner.Options{})
	started := f.Started()
	require.Len(t, started, 1, "only the failing step ran")
	for _, r := range results {
		if r.Key == started[0] {
			assert.Equal(t, 500, r.Status)
			assert.Equal(t, runner.OutcomeError, r.Outcome)
			continue
		}
		requireDecided(t, r, errcode.NotExecuted, runner.OutcomeSkipped, false)
	}
}

func TestStopOnError(t *testing.T) {
	bStarted := make(chan struct{})
	aReported := make(chan struct{})
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": func(context.Context, runner.Call) (runner.Response, error) {
			wait(t, bStarted, "B to start")
			return runner.Response{Status: 200, Body: []byte(`{"ok":false,"result":{"error":1008,"description":"x"}}`)}, nil
		},
		"B": func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			close(bStarted)
			wait(t, aReported, "A's result") // B is running when A fails
			assert.NoError(t, ctx.Err(), "a running step is not cancelled by another's failure")
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
	}}
	opt := runner.Options{OnResult: func(r runner.Result) {
		if r.Key == "A" {
			close(aReported)
		}
	}}
	results := run(t, f, runner.Config{}, `{"stop_on_error":true,"requests":[
		{"key":"A","path":"Demo/Echo"},
		{"key":"B","path":"Demo/Echo"},
		{"key":"C","path":"Demo/Echo","depends_on":["A"]},
		{"key":"D","path":"Demo/Echo","depends_on":["B"]},
		{"key":"E","path":"Demo/Echo","payload":{"x":"${C.result}"}},
		{"key":"F","path":"Demo/Echo","depends_on":["D"]}
	]}`, opt)
	m := byKey(results)
	assert.Equal(t, runner.OutcomeError, m["A"].Outcome)
	requireOK(t, m["B"]) // already running: finishes and is reported
	e := requireDecided(t, m["C"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
	assert.Contains(t, e.Result.Description, "A")
	e = requireDecided(t, m["E"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
	assert.Contains(t, e.Result.Description, "C")
	requireDecided(t, m["D"], errcode.NotExecuted, runner.OutcomeSkipped, false)
	requireDecided(t, m["F"], errcode.NotExecuted, runner.OutcomeSkipped, false)
	assert.Equal(t, []string{"A", "B"}, f.Started())
	ev := f.Events()
	endA := pos(t, ev, "end A")
	for _, e := range ev[endA:] {
		assert.False(t, strings.HasPrefix(e, "start "), "no step starts after the failure: %q", ev)
	}
}

func TestFailureDoesNotCancelUnrelatedBranch(t *testing.T) {
	aReported := make(chan struct{})
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": reply(502, `{"ok":false}`),
		"B": func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			wait(t, aReported, "A's result")
			assert.NoError(t, ctx.Err())
			assert.NoError(t, context.Cause(ctx))
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
		"C": func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			assert.NoError(t, ctx.Err())
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
	}}
	opt := runner.Options{OnResult: func(r runner.Result) {
		if r.Key == "A" {
			close(aReported)
		}
	}}
	results := run(t, f, runner.Config{}, `{"requests":[
		{"key":"A","path":"Demo/Echo"},
		{"key":"B","path":"Demo/Echo"},
		{"key":"C","path":"Demo/Echo","depends_on":["B"]},
		{"key":"A2","path":"Demo/Echo","depends_on":["A"]}
	]}`, opt)
	m := byKey(results)
	assert.Equal(t, runner.OutcomeError, m["A"].Outcome)
	requireOK(t, m["B"])
	requireOK(t, m["C"])
	requireDecided(t, m["A2"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
}

func TestPlaceholderResolution(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": reply(200, `{"ok":true,"result":{"new_id":4,"name":"Coca-Cola","tags":["x"]}}`),
	}}
	results := run(t, f, runner.Config{}, `{"requests":[
		{"key":"B","path":"Producer/Get","payload":{"ids":["${A.result.new_id}"],"label":"copy of ${A.result.name}"}},
		{"key":"A","path":"Producer/Add","payload":{"name":"Coca-Cola"}},
		{"key":"C","path":"Producer/Get","payload":{"ids":["${A.result.missing}"]}},
		{"key":"D","path":"Demo/Echo","payload":{"s":"tags: ${A.result.tags}"}},
		{"key":"E","path":"Demo/Echo","headers":{"X-Parent":"id-${A.result.new_id}"}},
		{"key":"G","path":"Demo/Echo","headers":{"X-Parent":"${A.result.nothing}"}}
	]}`, runner.Options{})
	m := byKey(results)
	requireOK(t, m["A"])
	requireOK(t, m["B"])
	requireOK(t, m["E"])
	require.Len(t, f.Calls("B"), 1)
	assert.JSONEq(t, `{"ids":[4],"label":"copy of Coca-Cola"}`, string(f.Calls("B")[0].Body))
	assert.Equal(t, "Producer/Get", f.Calls("B")[0].Path)
	assert.Equal(t, "POST", f.Calls("B")[0].Method)
	assert.Equal(t, "id-4", f.Calls("E")[0].Header.Get("X-Parent"))

	e := requireDecided(t, m["C"], errcode.Unresolvable, runner.OutcomeSkipped, false)
	assert.Contains(t, e.Result.Description, "${A.result.missing}")
	e = requireDecided(t, m["D"], errcode.NotEmbeddable, runner.OutcomeSkipped, false)
	assert.Contains(t, e.Result.Description, "${A.result.tags}")
	e = requireDecided(t, m["G"], errcode.Unresolvable, runner.OutcomeSkipped, false)
	assert.Contains(t, e.Result.Description, "${A.result.nothing}")
	assert.Equal(t, []string{"A", "B", "E"}, f.Started())
}

func TestResolvedPathRefused(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": reply(200, `{"ok":true,"result":{"id":"..","n":5}}`),
	}}
	results := run(t, f, runner.Config{}, `{"requests":[
		{"key":"A","path":"Demo/Echo"},
		{"key":"B","path":"items/${A.result.n}"},
		{"key":"C","path":"items/${A.result.id}"}
	]}`, runner.Options{})
	m := byKey(results)
	requireOK(t, m["B"])
	assert.Equal(t, "items/5", f.Calls("B")[0].Path)
	// A substituted value is checked again as a path segment: ".." is refused (README "Requests", "Placeholders").
	e := requireDecided(t, m["C"], errcode.ResolvedPathRefused, runner.OutcomeSkipped, false)
	assert.Contains(t, e.Result.Description, "${A.result.id}")
	assert.Equal(t, []string{"A", "B"}, f.Started())
}

func blockUntilDone(ctx context.Context, _ runner.Call) (runner.Response, error) {
	<-ctx.Done()
	return runner.Response{}, ctx.Err()
}

func TestStepTimeout(t *testing.T) {
	var cause error
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": func(ctx context.Context, c runner.Call) (runner.Response, error) {
			_, err := blockUntilDone(ctx, c)
			cause = context.Cause(ctx)
			return runner.Response{}, err
		},
	}}
	rec := &recorder{}
	results := run(t, f, runner.Config{StepTimeout: 50 * time.Millisecond, Recorder: rec}, `{"requests":[
		{"key":"A","path":"Demo/Sleep"},
		{"key":"B","path":"Demo/Echo","depends_on":["A"]},
		{"key":"C","path":"Demo/Echo"}
	]}`, runner.Options{})
	m := byKey(results)
	e := requireDecided(t, m["A"], errcode.StepTimeout, runner.OutcomeTimeout, true)
	assert.Equal(t, "step timed out after 50ms", e.Result.Description)
	var ste *runner.StepTimeoutError
	require.ErrorAs(t, cause, &ste)
	assert.Equal(t, "A", ste.Key)
	assert.Equal(t, 50*time.Millisecond, ste.Timeout)
	assert.ErrorIs(t, cause, context.DeadlineExceeded)
	requireDecided(t, m["B"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
	requireOK(t, m["C"])
	for _, ev := range rec.steps {
		if ev.Name == "Demo/Sleep" {
			assert.Equal(t, runner.OutcomeTimeout, ev.Outcome)
		}
	}
}

func TestStepTimeoutIgnoredByInvoker(t *testing.T) {
	// An invoker that answers after its context ended is still a timeout: the step was cancelled.
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": func(ctx context.Context, _ runner.Call) (runner.Response, error) {
			<-ctx.Done()
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
	}}
	results := run(t, f, runner.Config{StepTimeout: 20 * time.Millisecond}, `{"requests":[{"key":"A","path":"Demo/Echo"}]}`, runner.Options{})
	requireDecided(t, results[0], errcode.StepTimeout, runner.OutcomeTimeout, true)
}

func TestBatchTimeout(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": blockUntilDone,
	}}
	results := run(t, f, runner.Config{BatchTimeout: 50 * time.Millisecond}, `{"requests":[
		{"key":"A","path":"Demo/Sleep"},
		{"key":"B","path":"Demo/Echo","depends_on":["A"]},
		{"key":"C","path":"Demo/Echo"}
	]}`, runner.Options{})
	m := byKey(results)
	e := requireDecided(t, m["A"], errcode.BatchTimeout, runner.OutcomeTimeout, true)
	assert.Equal(t, "batch timed out after 50ms", e.Result.Description)
	requireDecided(t, m["B"], errcode.BatchTimeout, runner.OutcomeSkipped, false)
	requireOK(t, m["C"])
	assert.Equal(t, []string{"A", "C"}, f.Started())
}

func TestParentCancelled(t *testing.T) {
	started := make(chan struct{})
	var once sync.Once
	h := func(ctx context.Context, c runner.Call) (runner.Response, error) {
		once.Do(func() { close(started) })
		return blockUntilDone(ctx, c)
	}
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){"A": h, "C": h}}
	p := mustPlan(t, `{"requests":[
		{"key":"A","path":"Demo/Sleep"},
		{"key":"B","path":"Demo/Echo","depends_on":["A"]},
		{"key":"C","path":"Demo/Sleep"}
	]}`)
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		if wait(t, started, "a step to start") {
			cancel(errors.New("client went away"))
		}
	}()
	// One slot: A or C runs, the other waits for the slot when the client leaves; B waits for A.
	results := runner.New(f, runner.Config{MaxParallel: 1}).Run(ctx, p, runner.Options{})
	m := byKey(results)
	started2 := f.Started()
	require.Len(t, started2, 1)
	requireDecided(t, m[started2[0]], errcode.Cancelled, runner.OutcomeSkipped, true)
	for _, k := range []string{"A", "B", "C"} {
		if k != started2[0] {
			requireDecided(t, m[k], errcode.Cancelled, runner.OutcomeSkipped, false)
		}
	}
}

func TestCancelledBeforeRun(t *testing.T) {
	f := &fakeInvoker{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := mustPlan(t, independent(5, false))
	results := runner.New(f, runner.Config{}).Run(ctx, p, runner.Options{})
	for _, r := range results {
		requireDecided(t, r, errcode.Cancelled, runner.OutcomeSkipped, false)
	}
	assert.Empty(t, f.Events())
}

func TestPanicInInvoker(t *testing.T) {
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": func(context.Context, runner.Call) (runner.Response, error) { panic("secret internal state") },
	}}
	results := run(t, f, runner.Config{Logger: log, MaxParallel: 1}, `{"requests":[
		{"key":"A","path":"Demo/Echo"},
		{"key":"B","path":"Demo/Echo","depends_on":["A"]},
		{"key":"C","path":"Demo/Echo"},
		{"key":"D","path":"Demo/Echo"}
	]}`, runner.Options{})
	m := byKey(results)
	e := requireDecided(t, m["A"], errcode.StepPanic, runner.OutcomeError, true)
	assert.Equal(t, "the step panicked; the stack is in batchd's log", e.Result.Description)
	assert.NotContains(t, string(m["A"].Body), "secret")
	requireDecided(t, m["B"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
	requireOK(t, m["C"]) // the slot was released
	requireOK(t, m["D"])
	assert.Contains(t, logs.String(), "secret internal state")
	assert.Contains(t, logs.String(), "runtime/debug.Stack", "the stack is logged")
}

func TestPanicInCallbacks(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	rec := &panickyRecorder{}
	f := &fakeInvoker{}
	var mu sync.Mutex
	var seen []string
	opt := runner.Options{OnResult: func(r runner.Result) {
		mu.Lock()
		seen = append(seen, r.Key)
		mu.Unlock()
		panic("callback")
	}}
	results := run(t, f, runner.Config{Logger: log, Recorder: rec}, `{"requests":[
		{"key":"A","path":"Demo/Echo"},
		{"key":"B","path":"Demo/Echo","depends_on":["A"]}
	]}`, opt)
	// StepStarted panics: the step fails as a panic but its dependents are released and the batch ends.
	m := byKey(results)
	requireDecided(t, m["A"], errcode.StepPanic, runner.OutcomeError, false)
	requireDecided(t, m["B"], errcode.DependencyFailed, runner.OutcomeSkipped, false)
	assert.ElementsMatch(t, []string{"A", "B"}, seen)
	assert.Empty(t, f.Events())
}

type panickyRecorder struct{}

func (panickyRecorder) StepStarted(string)          { panic("recorder") }
func (panickyRecorder) StepDone(runner.StepEvent)   { panic("recorder") }
func (panickyRecorder) BatchDone(runner.BatchEvent) { panic("recorder") }
func (panickyRecorder) RollbackDone(string, bool)   { panic("recorder") }

func TestInvokeErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code errcode.Code
		kind string
	}{
		{&runner.InvokeError{Kind: "connect", Err: errors.New("dial tcp 10.0.0.1:443: refused")}, errcode.UpstreamUnreachable, "connect"},
		{&runner.InvokeError{Kind: "reset", Err: errors.New("read: connection reset")}, errcode.UpstreamReset, "reset"},
		{&runner.InvokeError{Kind: "protocol", Err: errors.New("malformed HTTP response")}, errcode.UpstreamReset, "protocol"},
		{&runner.InvokeError{Kind: "too_large", Err: errors.New("over 8 MiB")}, errcode.UpstreamTooLarge, "too_large"},
		{fmt.Errorf("wrapped: %w", &runner.InvokeError{Kind: "reset", Err: errors.New("eof")}), errcode.UpstreamReset, "reset"},
		{errors.New("something odd at 10.0.0.1"), errcode.UpstreamUnreachable, "other"},
	} {
		t.Run(tc.kind+"/"+tc.err.Error(), func(t *testing.T) {
			rec := &recorder{}
			f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
				"A": func(context.Context, runner.Call) (runner.Response, error) { return runner.Response{}, tc.err },
			}}
			results := run(t, f, runner.Config{Recorder: rec}, `{"requests":[{"key":"A","path":"Demo/Echo"}]}`, runner.Options{})
			requireDecided(t, results[0], tc.code, runner.OutcomeError, true)
			assert.Equal(t, 502, results[0].Status)
			assert.Equal(t, tc.kind, results[0].UpstreamError)
			assert.NotContains(t, string(results[0].Body), "10.0.0.1", "internals never reach the client")
			require.Len(t, rec.steps, 1)
			assert.Equal(t, tc.kind, rec.steps[0].UpstreamError)
			assert.Equal(t, runner.OutcomeError, rec.steps[0].Outcome)
		})
	}
}

func TestHeaders(t *testing.T) {
	f := &fakeInvoker{}
	base := http.Header{"Authorization": {"Bearer batch"}, "X-Request-Id": {"r1"}}
	results := run(t, f, runner.Config{}, `{"requests":[
		{"key":"A","path":"Demo/Echo","headers":{"Authorization":"Bearer step","X-Extra":"1"}},
		{"key":"B","path":"Demo/Echo"},
		{"key":"C","path":"Demo/Echo","depends_on":["A"]}
	]}`, runner.Options{Header: base})
	for _, r := range results {
		requireOK(t, r)
	}
	a, b, c := f.Calls("A")[0].Header, f.Calls("B")[0].Header, f.Calls("C")[0].Header
	assert.Equal(t, "Bearer step", a.Get("Authorization"))
	assert.Equal(t, []string{"Bearer step"}, a.Values("Authorization"))
	assert.Equal(t, "r1", a.Get("X-Request-Id"))
	assert.Equal(t, "1", a.Get("X-Extra"))
	for _, h := range []http.Header{b, c} {
		assert.Equal(t, "Bearer batch", h.Get("Authorization"), "a step's header never leaks to another")
		assert.Empty(t, h.Get("X-Extra"))
		assert.Equal(t, "r1", h.Get("X-Request-Id"))
	}
	assert.Equal(t, http.Header{"Authorization": {"Bearer batch"}, "X-Request-Id": {"r1"}}, base, "batch header untouched")
}

func TestRecorder(t *testing.T) {
	rec := &recorder{}
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": reply(500, `{"ok":false}`),
	}}
	p := mustPlan(t, `{"requests":[
		{"key":"A","path":"Producer/Add"},
		{"key":"B","path":"Producer/Get","depends_on":["A"]},
		{"key":"C","path":"Demo/Echo"}
	]}`)
	results := runner.New(f, runner.Config{Recorder: rec}).Run(context.Background(), p, runner.Options{})
	require.Len(t, results, 3)
	assert.ElementsMatch(t, []string{"Producer/Add", "Demo/Echo"}, rec.started)
	require.Len(t, rec.steps, 3)
	outcomes := map[string]runner.Outcome{}
	for _, e := range rec.steps {
		outcomes[e.Name] = e.Outcome
		if e.Name == "Producer/Get" {
			assert.Zero(t, e.Duration, "never executed")
		}
	}
	assert.Equal(t, map[string]runner.Outcome{
		"Producer/Add": runner.OutcomeError, "Producer/Get": runner.OutcomeSkipped, "Demo/Echo": runner.OutcomeOK,
	}, outcomes)
	require.Len(t, rec.batches, 1)
	be := rec.batches[0]
	assert.Equal(t, 3, be.Steps)
	assert.Equal(t, p.Depth(), be.Depth)
	assert.Equal(t, 2, be.Depth)
	assert.Equal(t, "partial", be.Outcome)
	assert.Positive(t, be.Duration)
}

func TestBatchOutcome(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want string
	}{
		{okBody, okBody, "ok"},
		{okBody, `{"ok":false}`, "partial"},
		{`{"ok":false}`, `{"ok":false}`, "failed"},
	} {
		rec := &recorder{}
		f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
			"A": reply(200, tc.a), "B": reply(200, tc.b),
		}}
		run(t, f, runner.Config{Recorder: rec}, `{"requests":[{"key":"A","path":"x"},{"key":"B","path":"y"}]}`, runner.Options{})
		require.Len(t, rec.batches, 1)
		assert.Equal(t, tc.want, rec.batches[0].Outcome)
	}
}

func TestOnResultOncePerStepAfterDeps(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"B": reply(500, `{"ok":false}`),
	}}
	var mu sync.Mutex
	var order []string
	got := map[string]runner.Result{}
	opt := runner.Options{OnResult: func(r runner.Result) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, r.Key)
		got[r.Key] = r
	}}
	results := run(t, f, runner.Config{}, `{"requests":[
		{"key":"A","path":"x"},
		{"key":"B","path":"x","depends_on":["A"]},
		{"key":"C","path":"x","depends_on":["B"]},
		{"key":"D","path":"x","depends_on":["A"]},
		{"key":"E","path":"x"}
	]}`, opt)
	require.Len(t, order, 5)
	assert.ElementsMatch(t, []string{"A", "B", "C", "D", "E"}, order)
	for _, r := range results {
		assert.Equal(t, r, got[r.Key], "OnResult saw the final result")
	}
	idx := func(k string) int { return pos(t, order, k) }
	assert.Less(t, idx("A"), idx("B"))
	assert.Less(t, idx("B"), idx("C"))
	assert.Less(t, idx("A"), idx("D"))
}

func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"S1": blockUntilDone, "S2": reply(500, "null"),
		"S3": func(context.Context, runner.Call) (runner.Response, error) { panic("x") },
	}}
	p := mustPlan(t, independent(20, false))
	r := runner.New(f, runner.Config{StepTimeout: 20 * time.Millisecond, MaxParallel: 3, Logger: slog.New(slog.DiscardHandler),
		Limit: semaphore.NewWeighted(2)})
	for range 3 {
		r.Run(context.Background(), p, runner.Options{})
	}
	n := runtime.NumGoroutine()
	for i := 0; i < 200 && n > base; i++ {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	assert.LessOrEqual(t, n, base, "goroutines left behind by Run")
}

func TestEmptyBodyIsNull(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": reply(204, ""),
	}}
	results := run(t, f, runner.Config{}, `{"requests":[{"key":"A","path":"x"}]}`, runner.Options{})
	assert.Equal(t, "null", string(results[0].Body))
	requireOK(t, results[0])
	assert.Equal(t, 204, results[0].Status)
}

func TestCriticalPath(t *testing.T) {
	p := mustPlan(t, `{"requests":[
		{"key":"A","path":"x"},
		{"key":"B","path":"x","depends_on":["A"]},
		{"key":"C","path":"x","depends_on":["A"]},
		{"key":"D","path":"x","depends_on":["B","C"]},
		{"key":"E","path":"x"}
	]}`)
	ms := time.Millisecond
	results := []runner.Result{
		{Executed: true, Duration: 10 * ms},
		{Executed: true, Duration: 5 * ms},
		{Executed: true, Duration: 20 * ms},
		{Executed: true, Duration: 1 * ms},
		{Executed: true, Duration: 25 * ms},
	}
	assert.Equal(t, 31*ms, runner.CriticalPath(p, results))
	results[2].Executed = false
	assert.Equal(t, 25*ms, runner.CriticalPath(p, results))
}

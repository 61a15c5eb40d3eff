package runner_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/errcode"
	"github.com/batchd/batchd/runner"
)

// promptInvoker is a fakeInvoker that is a runner.PromptInvoker: a call is prompt when its path starts with
// "prompt/". It records, per call key, the goroutine the call ran on and its context's deadline, and every
// question Prompt was asked.
type promptInvoker struct {
	fakeInvoker

	mu        sync.Mutex
	goroutine map[string]uint64
	deadline  map[string]time.Time
	asked     []string
}

var _ runner.PromptInvoker = (*promptInvoker)(nil)

func (p *promptInvoker) Prompt(method, path string) bool {
	p.mu.Lock()
	p.asked = append(p.asked, method+" "+path)
	p.mu.Unlock()
	return strings.HasPrefix(path, "prompt/")
}

func (p *promptInvoker) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	d, _ := ctx.Deadline()
	p.mu.Lock()
	if p.goroutine == nil {
		p.goroutine, p.deadline = map[string]uint64{}, map[string]time.Time{}
	}
	p.goroutine[c.Key], p.deadline[c.Key] = goroutineID(), d
	p.mu.Unlock()
	return p.fakeInvoker.Invoke(ctx, c)
}

func (p *promptInvoker) on(key string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.goroutine[key]
}

// goroutineID is the running goroutine's id, from the first line of its stack ("goroutine 7 [running]:").
func goroutineID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := bytes.Fields(buf)
	id, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		panic("goroutineID: " + string(buf))
	}
	return id
}

// A prompt step runs on the goroutine that called Run, in request order, with the batch's deadline; any other
// step on a goroutine of its own with its step deadline. A prompt step after a non-prompt dependency, or whose
// path has a placeholder, is not run on Run's goroutine.
func TestPromptStepsRunOnRunsGoroutine(t *testing.T) {
	inv := &promptInvoker{}
	p := mustPlan(t, `[
		{"key":"p1","path":"prompt/Echo"},
		{"key":"slow","path":"Sleep"},
		{"key":"p2","path":"prompt/Echo","payload":{"id":"${p1.result.new_id}"}},
		{"key":"after_slow","path":"prompt/Echo","payload":{"id":"${slow.result.new_id}"}},
		{"key":"templated","path":"prompt/Get/${p1.result.new_id}"},
		{"key":"p3","path":"prompt/Echo"},
		{"key":"g","method":"GET","path":"prompt/Echo"}
	]`)
	const stepTimeout, batchTimeout = time.Minute, time.Hour
	r := runner.New(inv, runner.Config{StepTimeout: stepTimeout, BatchTimeout: batchTimeout})
	self := goroutineID()
	start := time.Now()
	results := r.Run(context.Background(), p, runner.Options{})

	for _, res := range results {
		require.Equal(t, 200, res.Status, "%s: %s", res.Key, res.Body)
	}
	for _, k := range []string{"p1", "p2", "p3", "g"} {
		assert.Equal(t, self, inv.on(k), "%s runs on Run's goroutine", k)
		// The batch's deadline, not a step's: an hour away rather than a minute.
		assert.Greater(t, inv.deadline[k].Sub(start), batchTimeout-time.Minute, k)
	}
	for _, k := range []string{"slow", "after_slow", "templated"} {
		assert.NotEqual(t, self, inv.on(k), "%s runs on a goroutine of its own", k)
		assert.Less(t, inv.deadline[k].Sub(start), stepTimeout+time.Second, k)
	}
	ev := inv.Events()
	assert.Less(t, pos(t, ev, "end p1"), pos(t, ev, "start p2"))
	assert.Less(t, pos(t, ev, "end p2"), pos(t, ev, "start p3"))
	assert.Less(t, pos(t, ev, "end slow"), pos(t, ev, "start after_slow"))
	// Asked at most once per step, with the checked path; never for a templated path or after a non-prompt
	// dependency, nor again for the call the step before was asked about (p3 after p2; g has another method).
	assert.Equal(t, []string{"POST prompt/Echo", "POST Sleep", "POST prompt/Echo", "GET prompt/Echo"}, inv.asked)
}

// Prompt steps keep every rule of the runner: a failure skips dependents and, with stop_on_error, the steps not
// yet started; a panic fails its own step only.
func TestPromptStepsFailureAndPanic(t *testing.T) {
	inv := &promptInvoker{}
	inv.Step = map[string]func(context.Context, runner.Call) (runner.Response, error){
		"bad":   reply(500, `{"ok":false}`),
		"boom":  func(context.Context, runner.Call) (runner.Response, error) { panic("boom") },
		"fine2": reply(200, `{"ok":true,"result":{"x":2}}`),
	}
	r := runner.New(inv, runner.Config{Logger: slog.New(slog.DiscardHandler)})

	p := mustPlan(t, `[
		{"key":"bad","path":"prompt/A"},
		{"key":"dep","path":"prompt/B","payload":{"v":"${bad.result}"}},
		{"key":"boom","path":"prompt/C"},
		{"key":"fine2","path":"prompt/D"}
	]`)
	got := byKey(r.Run(context.Background(), p, runner.Options{}))
	assert.Equal(t, 500, got["bad"].Status)
	assert.Equal(t, errcode.DependencyFailed, got["dep"].Code)
	assert.Equal(t, errcode.StepPanic, got["boom"].Code)
	assert.Equal(t, 200, got["fine2"].Status)

	inv2 := &promptInvoker{}
	inv2.Step = map[string]func(context.Context, runner.Call) (runner.Response, error){"bad": reply(500, `{}`)}
	p = mustPlan(t, `{"stop_on_error":true,"requests":[
		{"key":"ok1","path":"prompt/A"},{"key":"bad","path":"prompt/B"},{"key":"later","path":"prompt/C"}]}`)
	got = byKey(runner.New(inv2, runner.Config{}).Run(context.Background(), p, runner.Options{}))
	assert.Equal(t, 200, got["ok1"].Status)
	assert.Equal(t, 500, got["bad"].Status)
	assert.Equal(t, errcode.NotExecuted, got["later"].Code)
	assert.Equal(t, []string{"bad", "ok1"}, inv2.Started())
}

// A non-prompt step waiting on a prompt one sees its result, and cancelling the caller's context before Run
// starts nothing, prompt or not.
func TestPromptStepsDependentsAndCancel(t *testing.T) {
	inv := &promptInvoker{}
	p := mustPlan(t, `[
		{"key":"p","path":"prompt/Add"},
		{"key":"n","path":"Get/${p.result.new_id}"}
	]`)
	got := byKey(runner.New(inv, runner.Config{}).Run(context.Background(), p, runner.Options{}))
	require.Equal(t, 200, got["n"].Status)
	require.Len(t, inv.Calls("n"), 1)
	assert.Equal(t, "Get/7", inv.Calls("n")[0].Path)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	inv2 := &promptInvoker{}
	got = byKey(runner.New(inv2, runner.Config{}).Run(ctx, p, runner.Options{}))
	assert.Equal(t, errcode.Cancelled, got["p"].Code)
	assert.Equal(t, errcode.Cancelled, got["n"].Code)
	assert.Empty(t, inv2.Started())
}

package runner_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/runner"
)

// requireNotRun checks a step not run because of a condition: 204, not a failure, never sent.
func requireNotRun(t *testing.T, r runner.Result, why string) {
	t.Helper()
	assert.Equal(t, runner.OutcomeConditionFalse, r.Outcome, "outcome of %s", r.Key)
	assert.Equal(t, 204, r.Status)
	assert.Equal(t, errcode.ConditionFalse, r.Code)
	assert.False(t, r.Failed, "a step not run is not a failure")
	assert.False(t, r.Executed)
	assert.Contains(t, decodeError(t, r.Body).Result.Description, why)
}

func TestWhen(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"Look": reply(404, `{"error":"not found"}`),
	}}
	rec := &recorder{}
	results := run(t, f, runner.Config{Recorder: rec}, `{"requests": [
		{"key": "Look", "path": "users/7", "method": "GET", "ok_status": [404]},
		{"key": "Create", "path": "users", "when": "${Look:status} == 404"},
		{"key": "Update", "path": "users/7", "when": "${Look:status} == 200"},
		{"key": "Reads", "path": "x", "payload": {"id": "${Update.result.id}"}},
		{"key": "After", "path": "y", "depends_on": ["Update"]},
		{"key": "Bad", "path": "z", "when": "${Look.error} > 1"}
	]}`, runner.Options{})
	m := byKey(results)
	assert.Equal(t, 404, m["Look"].Status, "the step reports the status it got")
	assert.False(t, m["Look"].Failed, "404 is in ok_status")
	requireOK(t, m["Create"])
	requireNotRun(t, m["Update"], `not run: "when": ${Look:status} == 200 is false`)
	requireNotRun(t, m["Reads"], "not run: it reads step Update, which did not run")
	requireOK(t, m["After"])
	requireDecided(t, m["Bad"], errcode.Unresolvable, runner.OutcomeSkipped, false)
	assert.Contains(t, string(m["Bad"].Body), "cannot order a string and a number")
	assert.Equal(t, []string{"After", "Create", "Look"}, f.Started())
	var ev runner.StepEvent
	for _, e := range rec.steps {
		if e.Name == "users/7" && e.Outcome == runner.OutcomeConditionFalse {
			ev = e
		}
	}
	assert.False(t, ev.Started, "a step not run had no StepStarted")
	assert.Len(t, rec.started, 3)
}

func TestFanOut(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"List": reply(200, `{"result": [{"id": 1}, {"id": 2}, {"id": 3}]}`),
		"Each": func(_ context.Context, c runner.Call) (runner.Response, error) {
			if c.Path == "users/2" {
				return runner.Response{Status: 409, Body: []byte(`{"error":"conflict"}`)}, nil
			}
			return runner.Response{Status: 200, Body: []byte(`{"n":` + strconv.Itoa(c.Index) + `}`)}, nil
		},
	}}
	results := run(t, f, runner.Config{MaxParallel: 2}, `{"requests": [
		{"key": "List", "path": "users"},
		{"key": "Each", "path": "users/${item.id}", "for_each": "${List.result}", "payload": {"i": "${index}"}},
		{"key": "Ok", "path": "users/${item.id}", "for_each": "${List.result}", "ok_status": [409]},
		{"key": "Sum", "path": "sum", "payload": {"all": "${Ok}", "status": "${Each:status}"}},
		{"key": "Empty", "path": "x/${item}", "for_each": "${List.none}"},
		{"key": "NotList", "path": "x/${item}", "for_each": "${List.result.0}"}
	]}`, runner.Options{})
	m := byKey(results)
	each := m["Each"]
	assert.Equal(t, 409, each.Status, "the first failing call's status")
	assert.True(t, each.Failed)
	assert.Equal(t, runner.OutcomeError, each.Outcome)
	assert.JSONEq(t, `[{"n":0},{"error":"conflict"},{"n":2}]`, string(each.Body), "the calls' bodies in element order")
	require.Len(t, each.Items, 3)
	assert.Equal(t, []int{200, 409, 200}, []int{each.Items[0].Status, each.Items[1].Status, each.Items[2].Status})
	assert.Equal(t, `{"id": 2}`, string(each.Items[1].Element))
	calls := f.Calls("Each")
	require.Len(t, calls, 3)
	var bodies []string
	for _, c := range calls {
		bodies = append(bodies, c.Path+" "+string(c.Body))
	}
	slices.Sort(bodies)
	assert.Equal(t, []string{`users/1 {"i": 0}`, `users/2 {"i": 1}`, `users/3 {"i": 2}`}, bodies)

	ok := m["Ok"]
	requireOK(t, ok)
	assert.Equal(t, 200, ok.Status)
	requireDecided(t, m["Sum"], errcode.DependencyFailed, runner.OutcomeSkipped, false)

	empty := m["Empty"]
	requireDecided(t, empty, errcode.Unresolvable, runner.OutcomeSkipped, false)
	requireDecided(t, m["NotList"], errcode.Unresolvable, runner.OutcomeSkipped, false)
	assert.Contains(t, string(m["NotList"].Body), "is a object, not a list")

	// An empty list is no call and a success.
	results = run(t, &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"L": reply(200, `{"result": []}`),
	}}, runner.Config{}, `[{"key": "L", "path": "l"}, {"key": "F", "path": "f/${item}", "for_each": "${L.result}"},
		{"key": "G", "path": "g", "payload": {"n": "${F:status}", "all": "${F}"}}]`, runner.Options{})
	assert.Equal(t, 200, results[1].Status)
	assert.Equal(t, "[]", string(results[1].Body))
	assert.False(t, results[1].Failed)
	assert.NotNil(t, results[1].Items)
	requireOK(t, results[2])
}

func TestFanOutCountsAgainstMaxCalls(t *testing.T) {
	list, _ := json.Marshal(map[string]any{"result": make([]int, 8)})
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"L": reply(200, string(list)),
	}}
	results := run(t, f, runner.Config{MaxCalls: 9}, `[{"key": "L", "path": "l"},
		{"key": "A", "path": "a/${index}", "for_each": "${L.result}"},
		{"key": "B", "path": "b/${index}", "for_each": "${L.result}", "depends_on": ["A"]}]`, runner.Options{})
	requireOK(t, results[1])
	requireDecided(t, results[2], errcode.TooManyCalls, runner.OutcomeTooLarge, false)
	assert.Contains(t, string(results[2].Body), "has 8 elements; this batch may make 0 more calls (-max-calls)")
	assert.Len(t, f.Calls("B"), 0, "none of its calls was sent")
}

func TestFanOutRollbackPerCall(t *testing.T) {
	// b fails only once a and c were sent: a failure stops the calls of an atomic batch not started yet, and this
	// test is about the rollbacks of calls that succeeded.
	var sent sync.WaitGroup
	sent.Add(2)
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"L": reply(200, `{"result": ["a", "b", "c"]}`),
		"F": func(ctx context.Context, c runner.Call) (runner.Response, error) {
			if c.Path == "make/b" {
				waited := make(chan struct{})
				go func() { sent.Wait(); close(waited) }()
				select {
				case <-waited:
				case <-ctx.Done():
				}
				return runner.Response{Status: 500, Body: []byte(`{}`)}, nil
			}
			if !c.Rollback {
				defer sent.Done()
			}
			return runner.Response{Status: 201, Body: []byte(`null`),
				Header: http.Header{"Location": {"/things/" + c.Path[len("make/"):]}}}, nil
		},
	}}
	results := run(t, f, runner.Config{}, `{"atomic": true, "requests": [
		{"key": "L", "path": "l", "method": "GET"},
		{"key": "F", "path": "make/${item}", "for_each": "${L.result}",
		 "rollback": {"method": "DELETE", "path": "${self:headers.Location}", "payload": {"i": "${index}", "e": "${item}"}}}]}`,
		runner.Options{})
	assert.True(t, results[1].Failed)
	var undone []string
	for _, c := range f.Calls("rollback F") {
		undone = append(undone, c.Path+" "+string(c.Body))
	}
	slices.Sort(undone)
	assert.Equal(t, []string{`things/a {"i": 0, "e": "a"}`, `things/c {"i": 2, "e": "c"}`}, undone,
		"one rollback per call that succeeded, ${self…} bound to that call")
	require.NotNil(t, results[1].Rollback)
	assert.True(t, results[1].Rollback.OK)
	calls := f.Calls("F")
	require.Len(t, calls, 3)
	assert.Equal(t, []string{"Location"}, calls[0].Capture, "the header the rollback reads is kept")
}

func TestStopOnErrorNamesTheFailedStep(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": reply(500, `{}`),
	}}
	results := run(t, f, runner.Config{}, `{"stop_on_error": true, "requests": [
		{"key": "A", "path": "a"}, {"key": "B", "path": "b", "depends_on": ["A"]}, {"key": "C", "path": "c", "depends_on": ["A"]}]}`,
		runner.Options{})
	assert.Equal(t, 500, results[0].Status)
	assert.Contains(t, string(results[1].Body), "dependency A failed")
	// C waits for A too; B's and C's 424 name A. A step that stop_on_error alone stopped says who stopped it.
	results = run(t, f, runner.Config{MaxParallel: 1}, `{"stop_on_error": true, "requests": [
		{"key": "A", "path": "a"}, {"key": "B", "path": "b", "depends_on": ["A"]}, {"key": "Z", "path": "z", "depends_on": ["B"]},
		{"key": "W", "path": "w", "payload": {"x": "${A}"}, "depends_on": ["A"]}, {"key": "V", "path": "v", "depends_on": ["A"]},
		{"key": "U", "path": "u", "depends_on": ["A"]}, {"key": "Late", "path": "late", "depends_on": ["A"]}]}`, runner.Options{})
	for _, r := range results[1:] {
		e := decodeError(t, r.Body)
		if r.Code == errcode.NotExecuted {
			assert.Equal(t, "not executed: the batch stopped after step A failed", e.Result.Description)
		}
	}
}

func TestUpstreamErrorsNameHostAndCause(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": func(context.Context, runner.Call) (runner.Response, error) {
			return runner.Response{}, &runner.InvokeError{Kind: "connect", Err: context.DeadlineExceeded,
				Host: "api.internal:8443", Cause: "connection refused"}
		},
	}}
	results := run(t, f, runner.Config{}, `[{"key": "A", "path": "a"}]`, runner.Options{})
	e := requireDecided(t, results[0], errcode.UpstreamUnreachable, runner.OutcomeError, true)
	assert.Equal(t, "upstream unreachable: api.internal:8443: connection refused", e.Result.Description)
}

func TestCapturedHeaders(t *testing.T) {
	f := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"C": func(_ context.Context, c runner.Call) (runner.Response, error) {
			return runner.Response{Status: 201, Body: []byte(`null`), Header: http.Header{"Location": {"/users/9"}}}, nil
		},
	}}
	results := run(t, f, runner.Config{}, `[{"key": "C", "path": "users", "capture_headers": ["ETag"]},
		{"key": "G", "path": "${C:headers.Location}", "method": "GET", "headers": {"X-Created": "${C:status}"}}]`,
		runner.Options{})
	assert.Equal(t, []string{"Etag", "Location"}, f.Calls("C")[0].Capture)
	assert.Equal(t, http.Header{"Location": {"/users/9"}}, results[0].Header)
	g := f.Calls("G")
	require.Len(t, g, 1)
	assert.Equal(t, "users/9", g[0].Path, "a Location resolved as a reference under the base")
	assert.Equal(t, "201", g[0].Header.Get("X-Created"))
}

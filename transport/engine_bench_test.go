package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batchd/batchd/internal/batchtest"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// Run:    go test -run '^$' -bench 'Engine|JSONFloor|Features' -benchmem -count 6 ./transport/
// Target: BenchmarkEngine/<shape> ≤ 2× BenchmarkJSONFloor/<shape> (stretch 1.5×).

// answeringInvoker answers every call at once with body, except that the step named fail answers ok:false.
type answeringInvoker struct {
	body []byte
	fail string
}

func (a answeringInvoker) Invoke(_ context.Context, c runner.Call) (runner.Response, error) {
	if c.Key == a.fail && !c.Rollback {
		return runner.Response{Status: 200, Body: []byte(`{"ok":false,"result":{"error":1008,"description":"no"}}`)}, nil
	}
	return runner.Response{Status: 200, Body: a.body}, nil
}

var enginePlannerConfig = planner.Config{MaxSteps: 1000}

// BenchmarkEngine is what the service does with a batch besides HTTP: parse, run, write the answer.
func BenchmarkEngine(b *testing.B) {
	for _, s := range batchtest.EngineShapes() {
		b.Run(s.Name, func(b *testing.B) {
			body := []byte(s.Body)
			r := runner.New(answeringInvoker{body: []byte(batchtest.Response)}, runner.Config{})
			ctx := context.Background()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				p, err := planner.Parse(body, enginePlannerConfig)
				if err != nil {
					b.Fatal(err)
				}
				if out := AppendAnswer(nil, p, r.Run(ctx, p, runner.Options{})); len(out) == 0 {
					b.Fatal("empty answer")
				}
			}
		})
	}
}

// BenchmarkJSONFloor is the cost of a generic JSON round trip of the same batch with encoding/json: the request
// body decoded into any, and an equivalent answer ({"responses":[{"key","status","response":{…}}×N]}, built once
// from generic values) encoded. An engine that does anything useful cannot be much cheaper than this.
func BenchmarkJSONFloor(b *testing.B) {
	for _, s := range batchtest.EngineShapes() {
		b.Run(s.Name, func(b *testing.B) {
			body := []byte(s.Body)
			var req map[string]any
			if err := json.Unmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
			var resp any
			if err := json.Unmarshal([]byte(batchtest.Response), &resp); err != nil {
				b.Fatal(err)
			}
			steps := req["requests"].([]any)
			items := make([]any, len(steps))
			for i, st := range steps {
				items[i] = map[string]any{"key": st.(map[string]any)["key"], "status": 200, "response": resp}
			}
			answer := map[string]any{"responses": items}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				var v any
				if err := json.Unmarshal(body, &v); err != nil {
					b.Fatal(err)
				}
				out, err := json.Marshal(answer)
				if err != nil || len(out) == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFeatures is BenchmarkEngine with each opt-in extension of the batch on (timings, atomic, a streamed
// answer), to compare with its "off" row: the cost of asking for it. BenchmarkEngine itself is the default path,
// which these extensions must not slow.
func BenchmarkFeatures(b *testing.B) {
	type variant struct {
		name   string
		body   func(string) string
		fail   string // a step that fails (atomic rollback: chain only, where every other step has succeeded)
		stream bool
	}
	same := func(s string) string { return s }
	timings := func(s string) string { return batchtest.WithField(s, "timings") }
	atomic := func(s string) string { return batchtest.WithField(batchtest.WithRollbacks(s), "atomic") }
	variants := []variant{
		{name: "off", body: same},
		{name: "timings", body: timings},
		{name: "atomic-committed", body: atomic},
		{name: "stream", body: same, stream: true},
		{name: "stream-timings", body: timings, stream: true},
	}
	for _, s := range batchtest.Shapes() {
		vs := variants
		if s.Name == "chain" {
			vs = append(vs[:len(vs):len(vs)], variant{name: "atomic-rollback49", body: atomic, fail: "S49"})
		}
		for _, v := range vs {
			b.Run(s.Name+"/"+v.name, func(b *testing.B) {
				body := []byte(v.body(s.Body))
				r := runner.New(answeringInvoker{body: []byte(batchtest.Response), fail: v.fail}, runner.Config{})
				ctx := context.Background()
				p0, err := planner.Parse(body, enginePlannerConfig)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					t0 := time.Now()
					p, err := planner.Parse(body, enginePlannerConfig)
					if err != nil {
						b.Fatal(err)
					}
					o := wire{}
					if v.stream {
						// What stream does, less the queue: a line per step under a mutex, then the summary.
						var mu sync.Mutex
						opt := runner.Options{OnResult: func(res runner.Result) {
							mu.Lock()
							o.line(p, &res)
							mu.Unlock()
						}}
						o.summary(p, r.Run(ctx, p, opt), time.Since(t0))
					} else {
						o.answer(p, r.Run(ctx, p, runner.Options{}))
					}
					if len(o.buf) == 0 {
						b.Fatal("empty answer")
					}
				}
				if v.fail != "" {
					results := r.Run(ctx, p0, runner.Options{})
					if results[0].Rollback == nil || !results[0].RolledBack() {
						b.Fatalf("the first step was not rolled back: %+v", results[0].Rollback)
					}
				}
			})
		}
	}
}

// BenchmarkFanOut is the cost of one for_each step of 50 calls against the same 50 calls written out as steps, each
// reading its element of the list: parse, run against an invoker that answers at once, answer.
func BenchmarkFanOut(b *testing.B) {
	const n = 50
	list := []byte(`{"ok":true,"result":[`)
	for i := range n {
		if i > 0 {
			list = append(list, ',')
		}
		list = fmt.Appendf(list, `{"id":%d,"name":"producer %d"}`, i, i)
	}
	list = append(list, "]}"...)
	written := `{"requests":[{"key":"L","path":"Producer/Get"}`
	for i := range n {
		written += fmt.Sprintf(`,{"key":"S%d","path":"Producer/Edit","payload":{"id":"${L.result.%d.id}","name":"${L.result.%d.name}!"}}`, i, i, i)
	}
	written += "]}"
	fanOut := `{"requests":[{"key":"L","path":"Producer/Get"},` +
		`{"key":"F","path":"Producer/Edit","for_each":"${L.result}","payload":{"id":"${item.id}","name":"${item.name}!"}}]}`
	inv := listInvoker{list: list, body: []byte(batchtest.Response)}
	for _, s := range []batchtest.Shape{{Name: "written-out-50", Body: written}, {Name: "for_each-50", Body: fanOut}} {
		b.Run(s.Name, func(b *testing.B) {
			body := []byte(s.Body)
			r := runner.New(inv, runner.Config{MaxParallel: 50})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				p, err := planner.Parse(body, enginePlannerConfig)
				if err != nil {
					b.Fatal(err)
				}
				results := r.Run(ctx, p, runner.Options{})
				if results[len(results)-1].Failed {
					b.Fatalf("%s", results[len(results)-1].Body)
				}
				if out := AppendAnswer(nil, p, results); len(out) == 0 {
					b.Fatal("empty answer")
				}
			}
		})
	}
}

// listInvoker answers step L with list and every other call with body, at once.
type listInvoker struct{ list, body []byte }

func (l listInvoker) Invoke(_ context.Context, c runner.Call) (runner.Response, error) {
	if c.Key == "L" {
		return runner.Response{Status: 200, Body: l.list}, nil
	}
	return runner.Response{Status: 200, Body: l.body}, nil
}

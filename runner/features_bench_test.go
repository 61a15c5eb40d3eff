package runner_test

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// Run: go test -run '^$' -bench Features -benchmem -count 6 ./runner/
//
// BenchmarkFeatures is BenchmarkEngine (Parse, Run, answer) with each opt-in extension of CONTRACT.md §9 on, to
// compare with its "off" row: the cost of asking for it. BenchmarkEngine itself is the default path, which these
// extensions must not slow.

// withRollbacks gives every step of a batch body a rollback that uses its own response.
func withRollbacks(body string) string {
	return stepOpen.ReplaceAllString(body, `{"key":"$1","rollback":{"path":"Producer/Delete","payload":{"ids":["$${self.result.new_id}"]}},`)
}

var stepOpen = regexp.MustCompile(`\{"key":"([^"]+)",`)

// withField sets a batch-level field: {"requests":… becomes {"<field>":true,"requests":….
func withField(body, field string) string {
	return strings.Replace(body, `{"requests":`, `{"`+field+`":true,"requests":`, 1)
}

// failingInvoker answers like noopInvoker, except that the step named fail answers ok:false.
type failingInvoker struct {
	body []byte
	fail string
}

func (f failingInvoker) Invoke(_ context.Context, c runner.Call) (runner.Response, error) {
	if c.Key == f.fail && !c.Rollback {
		return runner.Response{Status: 200, Body: []byte(`{"ok":false,"result":{"error":1008,"description":"no"}}`)}, nil
	}
	return runner.Response{Status: 200, Body: f.body}, nil
}

func BenchmarkFeatures(b *testing.B) {
	type variant struct {
		name   string
		body   func(string) string
		fail   string // a step that fails (atomic rollback: chain only, where every other step has succeeded)
		stream bool
	}
	variants := []variant{
		{name: "off", body: func(s string) string { return s }},
		{name: "timings", body: func(s string) string { return withField(s, "timings") }},
		{name: "atomic-committed", body: func(s string) string { return withField(withRollbacks(s), "atomic") }},
		{name: "stream", body: func(s string) string { return s }, stream: true},
		{name: "stream-timings", body: func(s string) string { return withField(s, "timings") }, stream: true},
	}
	for _, s := range shapes {
		vs := variants
		if s.name == "chain" {
			vs = append(vs[:len(vs):len(vs)],
				variant{name: "atomic-rollback49", body: func(s string) string { return withField(withRollbacks(s), "atomic") }, fail: "S49"})
		}
		for _, v := range vs {
			b.Run(s.name+"/"+v.name, func(b *testing.B) {
				body := []byte(v.body(s.body))
				r := runner.New(failingInvoker{body: []byte(benchBody), fail: v.fail}, runner.Config{})
				ctx := context.Background()
				p0, err := planner.Parse(body, benchPlannerConfig)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					t0 := time.Now()
					p, err := planner.Parse(body, benchPlannerConfig)
					if err != nil {
						b.Fatal(err)
					}
					var out []byte
					if v.stream {
						// What transport does for Accept: application/x-ndjson: a line per step under a mutex, then
						// the summary.
						var mu sync.Mutex
						opt := runner.Options{OnResult: func(res runner.Result) {
							mu.Lock()
							out = runner.AppendStreamLine(out, p, &res)
							mu.Unlock()
						}}
						results := r.Run(ctx, p, opt)
						out = runner.AppendSummary(out, p, results, time.Since(t0))
					} else {
						out = runner.AppendAnswer(nil, p, r.Run(ctx, p, runner.Options{}))
					}
					if len(out) == 0 {
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

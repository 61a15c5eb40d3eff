package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// Run:    go test -run '^$' -bench . -benchmem -count 5 ./runner/
// Target: BenchmarkEngine/<shape> ≤ 2× BenchmarkJSONFloor/<shape> (stretch 1.5×); BenchmarkLayered10ms ≤ 1.02
// x-critical-path.

const benchBody = `{"ok":true,"result":{"new_id":1}}`

// noopInvoker answers every call at once.
type noopInvoker struct{ body []byte }

func (n noopInvoker) Invoke(context.Context, runner.Call) (runner.Response, error) {
	return runner.Response{Status: 200, Body: n.body}, nil
}

// sleepInvoker answers every call after d, honouring cancellation.
type sleepInvoker struct{ d time.Duration }

func (s sleepInvoker) Invoke(ctx context.Context, _ runner.Call) (runner.Response, error) {
	t := time.NewTimer(s.d)
	defer t.Stop()
	select {
	case <-t.C:
		return runner.Response{Status: 200, Body: []byte(benchBody)}, nil
	case <-ctx.Done():
		return runner.Response{}, ctx.Err()
	}
}

// independentBody is n steps with no dependencies.
func independentBody(n int) string {
	var b strings.Builder
	b.WriteString(`{"requests":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"key":"S%d","path":"Producer/Add","payload":{"name":"producer %d"}}`, i, i)
	}
	b.WriteString("]}")
	return b.String()
}

// chainBody is n steps, each using the previous step's new_id.
func chainBody(n int) string {
	var b strings.Builder
	b.WriteString(`{"requests":[{"key":"S0","path":"Producer/Add","payload":{"name":"producer 0"}}`)
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, `,{"key":"S%d","path":"Producer/Edit","payload":{"id":"${S%d.result.new_id}","name":"producer %d"}}`, i, i-1, i)
	}
	b.WriteString("]}")
	return b.String()
}

// layeredBody is layers×width steps; each step past the first layer references two steps of the layer before.
func layeredBody(layers, width int) string {
	var b strings.Builder
	b.WriteString(`{"requests":[`)
	for l := range layers {
		for j := range width {
			if l+j > 0 {
				b.WriteByte(',')
			}
			if l == 0 {
				fmt.Fprintf(&b, `{"key":"L%d_%d","path":"Producer/Add","payload":{"name":"producer %d"}}`, l, j, j)
				continue
			}
			fmt.Fprintf(&b, `{"key":"L%d_%d","path":"Producer/Get","payload":{"ids":["${L%d_%d.result.new_id}","${L%d_%d.result.new_id}"]}}`,
				l, j, l-1, j, l-1, (j+1)%width)
		}
	}
	b.WriteString("]}")
	return b.String()
}

type shape struct{ name, body string }

var shapes = []shape{
	{"independent", independentBody(50)},
	{"chain", chainBody(50)},
	{"diamond", layeredBody(5, 10)},
}

// engineShapes are the shapes measured end to end, plus smaller and larger batches of independent steps.
var engineShapes = append(shapes[:len(shapes):len(shapes)],
	shape{"independent-10", independentBody(10)},
	shape{"independent-200", independentBody(200)},
)

var benchPlannerConfig = planner.Config{MaxSteps: 1000}

func BenchmarkRun(b *testing.B) {
	for _, s := range shapes {
		b.Run(s.name, func(b *testing.B) {
			p, err := planner.Parse([]byte(s.body), benchPlannerConfig)
			if err != nil {
				b.Fatal(err)
			}
			r := runner.New(noopInvoker{[]byte(benchBody)}, runner.Config{})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				results := r.Run(ctx, p, runner.Options{})
				if results[len(results)-1].Failed {
					b.Fatalf("step failed: %s", results[len(results)-1].Body)
				}
			}
		})
	}
}

// BenchmarkEngine is what the service does with a batch besides HTTP: Parse, Run, AppendJSON.
func BenchmarkEngine(b *testing.B) {
	for _, s := range engineShapes {
		b.Run(s.name, func(b *testing.B) {
			body := []byte(s.body)
			r := runner.New(noopInvoker{[]byte(benchBody)}, runner.Config{})
			ctx := context.Background()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				p, err := planner.Parse(body, benchPlannerConfig)
				if err != nil {
					b.Fatal(err)
				}
				out := runner.AppendJSON(nil, p.Form, r.Run(ctx, p, runner.Options{}))
				if len(out) == 0 {
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
	for _, s := range engineShapes {
		b.Run(s.name, func(b *testing.B) {
			body := []byte(s.body)
			var req map[string]any
			if err := json.Unmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
			var resp any
			if err := json.Unmarshal([]byte(benchBody), &resp); err != nil {
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

// BenchmarkLayered10ms runs 5 layers of 10 steps, each taking 10ms and waiting for two steps of the layer before:
// the critical path is 50ms, and x-critical-path is the batch's wall time over it (1 = no scheduling overhead).
func BenchmarkLayered10ms(b *testing.B) {
	const layers, step = 5, 10 * time.Millisecond
	p, err := planner.Parse([]byte(layeredBody(layers, 10)), benchPlannerConfig)
	if err != nil {
		b.Fatal(err)
	}
	r := runner.New(sleepInvoker{step}, runner.Config{})
	ctx := context.Background()
	var worst time.Duration
	for b.Loop() {
		t0 := time.Now()
		results := r.Run(ctx, p, runner.Options{})
		worst = max(worst, time.Since(t0))
		if results[len(results)-1].Failed {
			b.Fatalf("step failed: %s", results[len(results)-1].Body)
		}
	}
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(layers*step), "x-critical-path")
	b.ReportMetric(float64(worst)/float64(layers*step), "x-critical-path-worst")
}

// BenchmarkSleepFloor10ms is BenchmarkLayered10ms's floor on this machine without a runner: 5 layers of 10
// concurrent 10ms calls, each layer waiting for the one before. Its x-critical-path is the lateness of the timers and
// of the scheduler alone; the runner's own overhead is the difference between the two.
func BenchmarkSleepFloor10ms(b *testing.B) {
	const layers, width, step = 5, 10, 10 * time.Millisecond
	inv := sleepInvoker{step}
	ctx := context.Background()
	for b.Loop() {
		for range layers {
			var wg sync.WaitGroup
			for range width {
				wg.Go(func() {
					if _, err := inv.Invoke(ctx, runner.Call{}); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
	}
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(layers*step), "x-critical-path")
}

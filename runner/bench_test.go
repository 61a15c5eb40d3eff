package runner_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/batchd/batchd/internal/batchtest"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// Run:    go test -run '^$' -bench . -benchmem -count 5 ./runner/
// Target: BenchmarkLayered10ms ≤ 1.02 x-critical-path. The engine as a whole (parse, run, answer) is measured by
// transport's BenchmarkEngine.

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
		return runner.Response{Status: 200, Body: []byte(batchtest.Response)}, nil
	case <-ctx.Done():
		return runner.Response{}, ctx.Err()
	}
}

var benchPlannerConfig = planner.Config{MaxSteps: 1000}

func BenchmarkRun(b *testing.B) {
	for _, s := range batchtest.Shapes() {
		b.Run(s.Name, func(b *testing.B) {
			p, err := planner.Parse([]byte(s.Body), benchPlannerConfig)
			if err != nil {
				b.Fatal(err)
			}
			r := runner.New(noopInvoker{[]byte(batchtest.Response)}, runner.Config{})
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

// BenchmarkLayered10ms runs 5 layers of 10 steps, each taking 10ms and waiting for two steps of the layer before:
// the critical path is 50ms, and x-critical-path is the batch's wall time over it (1 = no scheduling overhead).
func BenchmarkLayered10ms(b *testing.B) {
	const layers, step = 5, 10 * time.Millisecond
	p, err := planner.Parse([]byte(batchtest.Layered(layers, 10)), benchPlannerConfig)
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

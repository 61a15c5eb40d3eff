package metrics_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/idempotency"
	"github.com/batchd/batchd/metrics"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// The label sets batchd passes in, from the packages that own them.
var (
	rejectReasons      = append(reasonStrings(), transport.RefusalReasons()...)
	idempotencyResults = idempotency.Results()
)

func reasonStrings() []string {
	var out []string
	for _, r := range planner.Reasons() {
		out = append(out, string(r))
	}
	return out
}

func newMetrics(t testing.TB, methods ...string) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Methods: append(demoapi.Methods(), methods...),
		RejectReasons: rejectReasons, IdempotencyResults: idempotencyResults})
	require.NoError(t, err)
	return m, reg
}

func TestLint(t *testing.T) {
	m, reg := newMetrics(t, "Item/*")
	// Put a sample in every family so the linter sees each one.
	m.StepStarted("Item/Get")
	m.StepDone(runner.StepEvent{Started: true, Name: "Item/Get", Outcome: runner.OutcomeTimeout, Duration: time.Second, UpstreamError: "reset"})
	m.BatchDone(runner.BatchEvent{Steps: 1, Depth: 1, Outcome: "failed", Duration: time.Second})
	m.BatchRejected("cycle", time.Millisecond)
	m.BatchStarted()
	m.IdempotencyResult("replayed")
	m.RollbackDone("Producer/Delete", true)

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)

	// The process and Go collectors of NewRegistry, with ours, lint clean as well.
	full := metrics.NewRegistry()
	_, err = metrics.New(full, metrics.Config{})
	require.NoError(t, err)
	problems, err = testutil.GatherAndLint(full)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestNewRegistryHasRuntimeCollectors(t *testing.T) {
	reg := metrics.NewRegistry()
	_, err := metrics.New(reg, metrics.Config{})
	require.NoError(t, err)
	names := familyNames(t, reg)
	for _, n := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "batchd_batch_duration_seconds", "batchd_step_timeouts_total"} {
		assert.Contains(t, names, n)
	}
}

func TestNewTwiceOnOneRegistryFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := metrics.New(reg, metrics.Config{})
	require.NoError(t, err)
	_, err = metrics.New(reg, metrics.Config{})
	require.Error(t, err)
}

func TestInvalidPatterns(t *testing.T) {
	for _, p := range []string{"", "/", "a//b", "Pro*ducer/Add", "*x", "a/b?c=1", "other"} {
		_, err := metrics.New(nil, metrics.Config{Methods: []string{p}})
		assert.Error(t, err, "pattern %q", p)
	}
}

func TestLabel(t *testing.T) {
	// The demo API's methods first, as batchd passes them in demo mode.
	m, err := metrics.New(nil, metrics.Config{Methods: append(demoapi.Methods(),
		"Item/Get",
		"Users/:id/Orders",
		"Accounts/42/Close", // folded to Accounts/:id/Close
		"Producer/*",        // after the exact demo Producer methods: only unknown ones land here
		"Reports/*/Export",
		"Stock/Get*",
		"Files/*", // trailing: one or more segments
	)})
	require.NoError(t, err)
	for _, tc := range []struct{ name, want string }{
		{"Producer/Add", "Producer/Add"},
		{"/Producer/Add", "Producer/Add"},
		{"Producer/Add?x=1", "Producer/Add"},
		{"Demo/Sleep", "Demo/Sleep"},
		{"Producer/Archive", "Producer/*"},
		{"Producer/Archive/Now", "Producer/*"}, // a trailing "*" takes one or more segments
		{"Producer", "other"},
		{"Item/Get", "Item/Get"},
		{"item/get", "other"}, // case-sensitive, as method paths are
		{"Item/Put", "other"},
		{"Users/17/Orders", "Users/:id/Orders"},
		{"Users/123e4567-e89b-12d3-a456-426614174000/Orders", "Users/:id/Orders"},
		{"Users/123E4567-E89B-12D3-A456-426614174000/Orders", "Users/:id/Orders"},
		{"Users/${A.result.id}/Orders", "Users/:id/Orders"},
		{"Users/alice/Orders", "other"},
		{"Users/17", "other"},
		{"Accounts/7/Close", "Accounts/:id/Close"},
		{"Reports/sales/Export", "Reports/*/Export"},
		{"Reports/sales/Import", "other"},
		{"Reports/Export", "other"},
		{"Stock/Get", "Stock/Get*"},
		{"Stock/GetAll", "Stock/Get*"},
		{"Stock/Put", "other"},
		{"Files/a", "Files/*"},
		{"Files/a/b/c", "Files/*"},
		{"Files", "other"},
		{"", "other"},
		{"/", "other"},
		{"12345", "other"},
		{strings.Repeat("a/", 1000), "other"},
	} {
		assert.Equal(t, tc.want, m.Label(tc.name), "Label(%q)", tc.name)
	}
}

func TestFirstWildcardWins(t *testing.T) {
	m, err := metrics.New(nil, metrics.Config{Methods: []string{"A/*", "A/B*", "*"}})
	require.NoError(t, err)
	assert.Equal(t, "A/*", m.Label("A/Bee"))
	assert.Equal(t, "*", m.Label("Z/Anything/at/all"))
}

func TestStepSeries(t *testing.T) {
	m, reg := newMetrics(t)
	m.StepStarted("Demo/Echo")
	assert.Equal(t, 1.0, gaugeValue(t, reg, "batchd_steps_in_flight"))
	m.StepDone(runner.StepEvent{Started: true, Name: "Demo/Echo", Outcome: runner.OutcomeOK, Duration: 3 * time.Millisecond})
	m.StepStarted("Demo/Sleep")
	m.StepDone(runner.StepEvent{Started: true, Name: "Demo/Sleep", Outcome: runner.OutcomeTimeout, Duration: 200 * time.Millisecond})
	m.StepStarted("Nope/Nothing")
	m.StepDone(runner.StepEvent{Started: true, Name: "Nope/Nothing", Outcome: runner.OutcomeError, Duration: time.Millisecond, UpstreamError: "connect"})
	m.StepDone(runner.StepEvent{Name: "Demo/Echo", Outcome: runner.OutcomeSkipped}) // never started
	m.StepStarted("Demo/Sleep")
	m.StepDone(runner.StepEvent{Started: true, Name: "Demo/Sleep", Outcome: runner.OutcomeSkipped, Duration: time.Millisecond}) // client left
	m.StepStarted("Demo/Fail")
	m.StepDone(runner.StepEvent{Started: true, Name: "Demo/Fail", Outcome: "weird", Duration: time.Millisecond, UpstreamError: "martian"})

	assert.Equal(t, 0.0, gaugeValue(t, reg, "batchd_steps_in_flight"), "every started step ended")
	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_step_duration_seconds", "method", "Demo/Echo", "outcome", "ok"))
	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_step_duration_seconds", "method", "Demo/Echo", "outcome", "skipped"))
	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_step_duration_seconds", "method", "Demo/Sleep", "outcome", "timeout"))
	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_step_duration_seconds", "method", "other", "outcome", "error"))
	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_step_duration_seconds", "method", "Demo/Fail", "outcome", "error"),
		"an unknown outcome counts as an error")
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_step_timeouts_total", "method", "Demo/Sleep"))
	assert.Equal(t, 0.0, counterValue(t, reg, "batchd_step_timeouts_total", "method", "Demo/Echo"), "created at zero")
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_upstream_errors_total", "kind", "connect"))
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_upstream_errors_total", "kind", "other"))
	assert.Equal(t, 0.0, counterValue(t, reg, "batchd_upstream_errors_total", "kind", "reset"))
}

func TestBatchSeries(t *testing.T) {
	m, reg := newMetrics(t)
	finished := m.TrackBatch()
	m.BatchStarted()
	assert.Equal(t, 2.0, gaugeValue(t, reg, "batchd_batches_in_flight"))
	m.BatchDone(runner.BatchEvent{Steps: 3, Depth: 2, Outcome: "partial", Duration: 40 * time.Millisecond})
	m.BatchDone(runner.BatchEvent{Steps: 50, Depth: 1, Outcome: "ok", Duration: 2 * time.Millisecond})
	m.BatchDone(runner.BatchEvent{Steps: 1, Depth: 1, Outcome: "bogus", Duration: time.Millisecond})
	finished()
	m.BatchFinished()
	assert.Equal(t, 0.0, gaugeValue(t, reg, "batchd_batches_in_flight"))

	m.BatchRejected("cycle", time.Millisecond)
	m.BatchRejected("draining", time.Millisecond)
	m.BatchRejected("no such reason", time.Millisecond)

	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_batch_duration_seconds", "outcome", "partial"))
	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_batch_duration_seconds", "outcome", "ok"))
	assert.Equal(t, uint64(1), histCount(t, reg, "batchd_batch_duration_seconds", "outcome", "failed"), "unknown outcome → failed")
	assert.Equal(t, uint64(3), histCount(t, reg, "batchd_batch_duration_seconds", "outcome", "rejected"))
	assert.Equal(t, uint64(3), histCount(t, reg, "batchd_batch_steps"))
	assert.Equal(t, 54.0, histSum(t, reg, "batchd_batch_steps"))
	assert.Equal(t, 4.0, histSum(t, reg, "batchd_batch_depth"))
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_batches_rejected_total", "reason", "cycle"))
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_batches_rejected_total", "reason", "draining"))
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_batches_rejected_total", "reason", "invalid"))
	// Every reason is a series from the start, and no new reason appeared.
	assert.Equal(t, len(rejectReasons)+1 /* invalid */, seriesCount(t, reg, "batchd_batches_rejected_total"))
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *metrics.Metrics
	var r runner.Recorder = m
	r.StepStarted("x")
	r.StepDone(runner.StepEvent{Started: true, Name: "x"})
	r.BatchDone(runner.BatchEvent{})
	m.BatchRejected("cycle", 0)
	m.TrackBatch()()
	m.IdempotencyResult("stored")
	m.RollbackDone("x", false)
	assert.Equal(t, "other", m.Label("Producer/Add"))
}

func TestRollbackSeries(t *testing.T) {
	m, reg := newMetrics(t)
	assert.Equal(t, 2, seriesCount(t, reg, "batchd_rollbacks_total"), "both outcomes created at zero")
	var rr runner.Recorder = m
	rr.RollbackDone("Producer/Delete", true)
	rr.RollbackDone("Producer/Delete", true)
	rr.RollbackDone("anything at all", false)
	assert.Equal(t, 2.0, counterValue(t, reg, "batchd_rollbacks_total", "outcome", "ok"))
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_rollbacks_total", "outcome", "failed"))
	assert.Equal(t, 2, seriesCount(t, reg, "batchd_rollbacks_total"), "no label from the name")
}

func TestIdempotencySeries(t *testing.T) {
	m, reg := newMetrics(t)
	m.IdempotencyResult("stored")
	m.IdempotencyResult("replayed")
	m.IdempotencyResult("replayed")
	m.IdempotencyResult("no such result")
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_idempotency_total", "result", "stored"))
	assert.Equal(t, 2.0, counterValue(t, reg, "batchd_idempotency_total", "result", "replayed"))
	assert.Equal(t, 0.0, counterValue(t, reg, "batchd_idempotency_total", "result", "conflict"), "created at zero")
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_idempotency_total", "result", "error"), "unknown result → error")
	assert.Equal(t, len(idempotencyResults), seriesCount(t, reg, "batchd_idempotency_total"))
}

// TestCardinalityBounded sends 1,000 random method names, numeric ids and UUIDs among them, and checks that no
// series appears beyond those New created.
func TestCardinalityBounded(t *testing.T) {
	methods := []string{"Item/Get", "Producer/*", "Users/:id/Orders"}
	m, reg := newMetrics(t, methods...)
	families := []string{"batchd_step_duration_seconds", "batchd_step_timeouts_total"}
	before := map[string]int{}
	for _, f := range families {
		before[f] = seriesCount(t, reg, f)
	}
	labels := len(demoapi.Methods()) + len(methods) + 1 // + other
	assert.Equal(t, labels*len(runner.Outcomes()), before["batchd_step_duration_seconds"], "method × outcome, created at zero")
	assert.Equal(t, labels, before["batchd_step_timeouts_total"])

	rng := rand.New(rand.NewPCG(1, 2))
	outcomes := runner.Outcomes()
	for i := range 1000 {
		var name string
		switch i % 5 {
		case 0:
			name = fmt.Sprintf("Random%d/Method%x", rng.IntN(1e6), rng.Uint64())
		case 1:
			name = fmt.Sprintf("Users/%d/Orders", rng.Uint64())
		case 2:
			name = fmt.Sprintf("Producer/%x/%d", rng.Uint64(), rng.IntN(1e9))
		case 3:
			name = fmt.Sprintf("/items/%08x-%04x-%04x-%04x-%012x?q=%d", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<16),
				rng.IntN(1<<16), rng.Uint64()&(1<<48-1), rng.Int())
		default:
			b := make([]byte, 1+rng.IntN(40))
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
			name = string(b)
		}
		o := outcomes[rng.IntN(len(outcomes))]
		d := time.Duration(1 + rng.IntN(1e9))
		started := o != runner.OutcomeSkipped || i%2 != 0
		if started {
			m.StepStarted(name)
		}
		m.StepDone(runner.StepEvent{Name: name, Outcome: o, Duration: d, UpstreamError: name, Started: started})
		m.BatchRejected(name, time.Millisecond)
	}
	for _, f := range families {
		assert.Equal(t, before[f], seriesCount(t, reg, f), "%s grew", f)
	}
	assert.Equal(t, len(rejectReasons)+1 /* invalid */, seriesCount(t, reg, "batchd_batches_rejected_total"))
	assert.Equal(t, len(runner.UpstreamErrorKinds()), seriesCount(t, reg, "batchd_upstream_errors_total"))
	assert.Equal(t, 0.0, gaugeValue(t, reg, "batchd_steps_in_flight"))
}

// TestCacheBounded checks that many distinct names neither break Label nor keep every name: the cache is emptied
// past its bound. The bound itself is internal; this checks behaviour across several refills.
func TestCacheBounded(t *testing.T) {
	m, _ := newMetrics(t)
	for i := range 20000 {
		require.Equal(t, "other", m.Label(fmt.Sprintf("X%d/Y", i)))
		if i%997 == 0 {
			require.Equal(t, "Demo/Echo", m.Label("Demo/Echo"))
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	m, reg := newMetrics(t, "Producer/*")
	const workers, per = 16, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				name := []string{"Producer/Add", "Demo/Sleep", fmt.Sprintf("Producer/X%d", i), fmt.Sprintf("Z%d/%d", w, i)}[i%4]
				finished := m.TrackBatch()
				m.StepStarted(name)
				m.StepDone(runner.StepEvent{Started: true, Name: name, Outcome: runner.OutcomeTimeout, Duration: time.Millisecond})
				m.BatchDone(runner.BatchEvent{Steps: 1, Depth: 1, Outcome: "failed", Duration: time.Millisecond})
				finished()
				_ = m.Label(name)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 0.0, gaugeValue(t, reg, "batchd_steps_in_flight"))
	assert.Equal(t, 0.0, gaugeValue(t, reg, "batchd_batches_in_flight"))
	total := 0.0
	for _, l := range []string{"Producer/Add", "Demo/Sleep", "Producer/*", "other"} {
		total += counterValue(t, reg, "batchd_step_timeouts_total", "method", l)
	}
	assert.Equal(t, float64(workers*per), total)
	assert.Equal(t, uint64(workers*per), histCount(t, reg, "batchd_batch_steps"))
}

func TestDurationHistogramIsNative(t *testing.T) {
	m, reg := newMetrics(t)
	m.StepStarted("Demo/Echo")
	m.StepDone(runner.StepEvent{Started: true, Name: "Demo/Echo", Outcome: runner.OutcomeOK, Duration: 7 * time.Millisecond})
	h := findMetric(t, reg, "batchd_step_duration_seconds", "method", "Demo/Echo", "outcome", "ok").GetHistogram()
	require.NotNil(t, h)
	assert.Len(t, h.GetBucket(), len(metrics.DurationBuckets), "classic buckets")
	assert.NotZero(t, h.GetSchema(), "native schema set")
	assert.NotEmpty(t, h.GetPositiveSpan(), "native buckets populated")
	assert.Equal(t, 0.001, metrics.DurationBuckets[0])
	assert.Equal(t, 30.0, metrics.DurationBuckets[len(metrics.DurationBuckets)-1])
}

func BenchmarkStepDone(b *testing.B) {
	m, _ := newMetrics(b, "Producer/*", "Users/:id/Orders")
	names := []string{"Producer/Add", "Demo/Echo", "Producer/Archive", "Users/42/Orders", "Unknown/Thing"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			name := names[i%len(names)]
			m.StepStarted(name)
			m.StepDone(runner.StepEvent{Started: true, Name: name, Outcome: runner.OutcomeOK, Duration: time.Millisecond})
			i++
		}
	})
}

func BenchmarkLabelUncached(b *testing.B) {
	m, _ := newMetrics(b, "Producer/*", "Users/:id/Orders")
	names := make([]string, 8192)
	for i := range names {
		names[i] = fmt.Sprintf("Users/%d/Orders", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = m.Label(names[i%len(names)])
	}
}

// helpers over the gathered families

func gather(t testing.TB, reg prometheus.Gatherer) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	return mfs
}

func familyNames(t testing.TB, reg prometheus.Gatherer) []string {
	var names []string
	for _, mf := range gather(t, reg) {
		names = append(names, mf.GetName())
	}
	return names
}

func seriesCount(t testing.TB, reg prometheus.Gatherer, family string) int {
	t.Helper()
	n, err := testutil.GatherAndCount(reg, family)
	require.NoError(t, err)
	return n
}

func findMetric(t testing.TB, reg prometheus.Gatherer, family string, labels ...string) *dto.Metric {
	t.Helper()
	for _, mf := range gather(t, reg) {
		if mf.GetName() != family {
			continue
		}
	next:
		for _, mt := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range mt.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return mt
		}
	}
	t.Fatalf("no series %s%v", family, labels)
	return nil
}

func counterValue(t testing.TB, reg prometheus.Gatherer, family string, labels ...string) float64 {
	return findMetric(t, reg, family, labels...).GetCounter().GetValue()
}

func gaugeValue(t testing.TB, reg prometheus.Gatherer, family string) float64 {
	return findMetric(t, reg, family).GetGauge().GetValue()
}

func histCount(t testing.TB, reg prometheus.Gatherer, family string, labels ...string) uint64 {
	return findMetric(t, reg, family, labels...).GetHistogram().GetSampleCount()
}

func histSum(t testing.TB, reg prometheus.Gatherer, family string, labels ...string) float64 {
	return findMetric(t, reg, family, labels...).GetHistogram().GetSampleSum()
}

func TestStatusClass(t *testing.T) {
	for _, tc := range []struct {
		ev   runner.StepEvent
		want string
	}{
		{runner.StepEvent{Outcome: runner.OutcomeOK, Status: 200}, "2xx"},
		{runner.StepEvent{Outcome: runner.OutcomeOK, Status: 302}, "3xx"},
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 200}, "2xx"}, // "ok": false: a business error
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 404}, "4xx"},
		{runner.StepEvent{Outcome: runner.OutcomeOK, Status: 404}, "4xx"}, // a status the step accepts
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 503}, "5xx"},
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 502, UpstreamError: "connect"}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 502, UpstreamError: "reset"}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 502, UpstreamError: "too_large"}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 502, UpstreamError: "protocol"}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeTimeout, Status: 504}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeSkipped, Status: 424}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeSkipped, Status: 499}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeTooLarge, Status: 413}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeOverBudget, Status: 507}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 0}, "none"},
		{runner.StepEvent{Outcome: runner.OutcomeError, Status: 601}, "none"},
		{runner.StepEvent{Outcome: "weird", Status: 200}, "none"},
	} {
		assert.Equal(t, tc.want, metrics.StatusClass(tc.ev), "%+v", tc.ev)
	}
}

// TestStepsTotal: every step is counted once by method, verb, outcome and status class; a method's series of a
// verb are created together at zero, POST's in New.
func TestStepsTotal(t *testing.T) {
	m, reg := newMetrics(t)
	labels := len(demoapi.Methods()) + 1                                     // + other
	perVerb := (len(runner.Outcomes())-2)*1 + 2*len(metrics.StatusClasses()) // ok and error: every class; the others: none
	require.Equal(t, labels*perVerb, seriesCount(t, reg, "batchd_steps_total"), "method × POST × (outcome, class), at zero")
	assert.Equal(t, 0.0, counterValue(t, reg, "batchd_steps_total",
		"method", "Demo/Echo", "verb", "POST", "outcome", "error", "status_class", "5xx"), "created at zero")

	for _, ev := range []runner.StepEvent{
		{Name: "Demo/Echo", Method: "POST", Outcome: runner.OutcomeOK, Status: 200, Duration: time.Millisecond},
		{Name: "Demo/Echo", Method: "POST", Outcome: runner.OutcomeOK, Status: 200, Duration: time.Millisecond},
		{Name: "Demo/Fail", Method: "POST", Outcome: runner.OutcomeError, Status: 404, Duration: time.Millisecond},
		{Name: "Demo/Fail", Method: "POST", Outcome: runner.OutcomeError, Status: 500, Duration: time.Millisecond},
		{Name: "users/1", Method: "GET", Outcome: runner.OutcomeError, Status: 502, UpstreamError: "connect", Duration: time.Millisecond},
		{Name: "users/1", Method: "DELETE", Outcome: runner.OutcomeTimeout, Status: 504, Duration: time.Second},
		{Name: "users/1", Method: "PROPFIND", Outcome: runner.OutcomeOK, Status: 207, Duration: time.Millisecond},
		{Name: "users/1", Method: "", Outcome: runner.OutcomeSkipped, Status: 424},
	} {
		if ev.Duration > 0 {
			ev.Started = true
			m.StepStarted(ev.Name)
		}
		m.StepDone(ev)
	}
	for _, tc := range []struct {
		method, verb, outcome, class string
		want                         float64
	}{
		{"Demo/Echo", "POST", "ok", "2xx", 2},
		{"Demo/Fail", "POST", "error", "4xx", 1},
		{"Demo/Fail", "POST", "error", "5xx", 1},
		{"other", "GET", "error", "none", 1},
		{"other", "GET", "ok", "2xx", 0}, // GET's series came into being together
		{"other", "DELETE", "timeout", "none", 1},
		{"other", "other", "ok", "2xx", 1},
		{"other", "POST", "skipped", "none", 1},
	} {
		assert.Equal(t, tc.want, counterValue(t, reg, "batchd_steps_total",
			"method", tc.method, "verb", tc.verb, "outcome", tc.outcome, "status_class", tc.class), "%+v", tc)
	}
	assert.Equal(t, (labels+3)*perVerb, seriesCount(t, reg, "batchd_steps_total"), "other × GET, DELETE, other added")
	assert.Equal(t, 0.0, gaugeValue(t, reg, "batchd_steps_in_flight"))
}

// TestStepsTotalStatusClassesBounded: whatever a step event holds, its status class is one the outcome may have,
// so that batchd_steps_total never grows a series beyond those created with its verb.
func TestStepsTotalStatusClassesBounded(t *testing.T) {
	m, reg := newMetrics(t)
	rng := rand.New(rand.NewPCG(3, 4))
	outcomes := append(runner.Outcomes(), "weird")
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND", "get", ""}
	kinds := append(runner.UpstreamErrorKinds(), "", "", "")
	for range 5000 {
		ev := runner.StepEvent{Name: "Demo/Echo", Method: methods[rng.IntN(len(methods))],
			Outcome: outcomes[rng.IntN(len(outcomes))], Status: rng.IntN(700) - 50,
			UpstreamError: kinds[rng.IntN(len(kinds))], Duration: time.Millisecond}
		ev.Started = true
		m.StepStarted(ev.Name)
		m.StepDone(ev)
	}
	perVerb := (len(runner.Outcomes())-2)*1 + 2*len(metrics.StatusClasses())
	labels := len(demoapi.Methods()) + 1
	// Demo/Echo has all 8 verbs now; every other method has POST only.
	assert.Equal(t, (labels-1)*perVerb+8*perVerb, seriesCount(t, reg, "batchd_steps_total"))
	assert.Equal(t, 0.0, gaugeValue(t, reg, "batchd_steps_in_flight"))
}

// TestLearnMethods: in proxy mode with no patterns, a step's first segment becomes its method label once the
// upstream answered a step under it below 400, for at most LearnMethods segments; everything else stays "other".
func TestLearnMethods(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{LearnMethods: 2, Methods: []string{"Item/Get"}})
	require.NoError(t, err)
	step := func(name string, o runner.Outcome, status int, upstreamErr string) {
		m.StepStarted(name)
		m.StepDone(runner.StepEvent{Name: name, Method: "GET", Outcome: o, Status: status, UpstreamError: upstreamErr,
			Duration: time.Millisecond, Started: true})
	}
	assert.Equal(t, "other", m.Label("users/42"))
	step("users/42", runner.OutcomeError, 404, "") // a client's guess is not a route
	step("users/42", runner.OutcomeTimeout, 504, "")
	step("users/42", runner.OutcomeError, 502, "connect")
	assert.Equal(t, "other", m.Label("users/42"), "not learned from failures")
	assert.Equal(t, uint64(2), histCount(t, reg, "batchd_step_duration_seconds", "method", "other", "outcome", "error"))
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_step_timeouts_total", "method", "other"))

	step("users/42", runner.OutcomeOK, 200, "")
	assert.Equal(t, "users/*", m.Label("users/7"))
	assert.Equal(t, "users/*", m.Label("/users?page=2"))
	assert.Equal(t, 1.0, counterValue(t, reg, "batchd_steps_total",
		"method", "users/*", "verb", "GET", "outcome", "ok", "status_class", "2xx"), "the learning step is counted under it")
	assert.Equal(t, 0.0, counterValue(t, reg, "batchd_step_timeouts_total", "method", "users/*"), "created at zero")
	assert.Equal(t, 0.0, counterValue(t, reg, "batchd_steps_total",
		"method", "users/*", "verb", "POST", "outcome", "error", "status_class", "5xx"), "created at zero")

	step("orders/1/lines", runner.OutcomeError, 200, "") // "ok": false on a real route
	assert.Equal(t, "orders/*", m.Label("orders/9"))
	step("items/1", runner.OutcomeOK, 200, "")
	assert.Equal(t, "other", m.Label("items/1"), "no room left")
	step("42/x", runner.OutcomeOK, 200, "")
	assert.Equal(t, "other", m.Label("42/x"), "an identifier is never a label")
	step("Item/Get", runner.OutcomeOK, 200, "")
	assert.Equal(t, "Item/Get", m.Label("Item/Get"), "patterns come first")
	step("Item/Put", runner.OutcomeOK, 200, "")
	assert.Equal(t, "other", m.Label("Item/Put"), "room is still taken by users and orders")

	labels := map[string]bool{}
	for _, mt := range familyMetrics(t, reg, "batchd_step_timeouts_total") {
		for _, lp := range mt.GetLabel() {
			labels[lp.GetValue()] = true
		}
	}
	assert.Equal(t, map[string]bool{"Item/Get": true, "users/*": true, "orders/*": true, "other": true}, labels)

	_, err = metrics.New(nil, metrics.Config{LearnMethods: -1})
	assert.Error(t, err)
}

// TestLearnMethodsBounded: a flood of successful steps under random first segments, from many goroutines, learns
// at most LearnMethods labels.
func TestLearnMethodsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{LearnMethods: 5})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				name := fmt.Sprintf("seg%d_%d/x", w, i%50)
				m.StepStarted(name)
				m.StepDone(runner.StepEvent{Name: name, Method: "GET", Outcome: runner.OutcomeOK, Status: 200, Duration: time.Millisecond, Started: true})
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 5+1, seriesCount(t, reg, "batchd_step_timeouts_total"), "5 learned and other")
	total := 0.0
	for _, mt := range familyMetrics(t, reg, "batchd_steps_total") {
		total += mt.GetCounter().GetValue()
	}
	assert.Equal(t, float64(8*500), total, "every step counted once")
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := metrics.New(reg, metrics.Config{Build: metrics.BuildInfo{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.26.8"}})
	require.NoError(t, err)
	assert.Equal(t, 1.0, findMetric(t, reg, "batchd_build_info", "version", "v1.2.3", "revision", "abc", "goversion", "go1.26.8").GetGauge().GetValue())
	assert.Equal(t, 1, seriesCount(t, reg, "batchd_build_info"))

	reg = prometheus.NewRegistry()
	_, err = metrics.New(reg, metrics.Config{})
	require.NoError(t, err)
	assert.Equal(t, 1.0, findMetric(t, reg, "batchd_build_info", "version", "unknown", "revision", "unknown", "goversion", "unknown").GetGauge().GetValue())
}

func familyMetrics(t testing.TB, reg prometheus.Gatherer, family string) []*dto.Metric {
	t.Helper()
	for _, mf := range gather(t, reg) {
		if mf.GetName() == family {
			return mf.GetMetric()
		}
	}
	return nil
}

// Package metrics is batchd's Prometheus instrumentation: one Metrics value, built by New on a registry the caller
// passes in (never the global one), that implements runner.Recorder and the few calls the HTTP layer makes.
//
// Contract (README "Metrics"):
//   - Every series is prefixed batchd_; durations are in seconds, counters end in _total.
//   - Every label comes from a bounded set, passed in by the package that owns its values (Config): method is a
//     known method pattern (Config.Methods), one of at most Config.LearnMethods labels learned from the upstream's
//     routes, or "other"; verb, status_class, outcome, reason and kind are closed sets, and an unexpected value is
//     mapped into the set rather than becoming a new series. So the number of series does not depend on what
//     clients send.
//   - Every labelled series is created at zero when its label value comes into being (in New, or when a method
//     label is learned), so that rate() and increase() see the first event. batchd_steps_total is the exception
//     that keeps the cross product small: a method's series of one verb are created together, on the first step of
//     that method and verb (POST's in New), so every outcome but the very first step's is seen from zero.
//   - All methods are safe for concurrent use, and are no-ops on a nil *Metrics.
package metrics

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/batchd/batchd/runner"
)

// Namespace prefixes every batchd metric.
const Namespace = "batchd"

// DurationBuckets are the classic buckets of the duration histograms, chosen for API calls: from 1 ms (an
// in-process demo call) to 30 s (past the default -step-timeout of 10 s, short of the -batch-timeout of 60 s).
var DurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// StepsBuckets are the buckets of batchd_batch_steps: a batch holds 1 to -max-steps (default 50) steps.
var StepsBuckets = []float64{1, 2, 5, 10, 20, 30, 40, 50, 100}

// DepthBuckets are the buckets of batchd_batch_depth, the length of a batch's longest dependency chain.
var DepthBuckets = []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 50}

// nativeBucketFactor enables native histograms on the duration histograms alongside the classic buckets: a
// scraper that negotiates protobuf (Prometheus with --enable-feature=native-histograms) gets ~10 % resolution, any
// other gets the classic buckets. The integer histograms (steps, depth) keep classic buckets only: they are exact.
const nativeBucketFactor = 1.1

// Batch outcomes (label outcome of batchd_batch_duration_seconds).
const (
	BatchOK       = "ok"       // every step ok
	BatchPartial  = "partial"  // some steps failed
	BatchFailed   = "failed"   // no step ok
	BatchRejected = "rejected" // refused before anything ran (BatchRejected)
)

var batchOutcomes = []string{BatchOK, BatchPartial, BatchFailed, BatchRejected}

// Fallbacks of the closed label sets: a value outside a set is counted under its fallback rather than become a
// new series.
const (
	reasonFallback      = "invalid" // batchd_batches_rejected_total
	kindFallback        = "other"   // batchd_upstream_errors_total
	idempotencyFallback = "error"   // batchd_idempotency_total
)

// maxCache bounds the name → resolution cache, whose keys are at most maxNameLen bytes: at most about 2 MiB of keys.
// Past it the cache is emptied and refilled: a client sending endless random method names costs a re-fold per
// name, never memory.
const maxCache = 4096

// Config configures Metrics. The label sets come from the packages that own the values.
type Config struct {
	// Methods are known method patterns, e.g. "Item/Get", "Producer/*",
	// "Users/:id/Orders". Segments are separated by "/"; a segment "*" matches any one segment, or one or more when
	// it is the last; a segment ending in "*" matches any segment with that prefix. Numeric and UUID segments are
	// written (or are folded to) ":id". A step whose method matches an exact pattern is labelled with its method;
	// one matching only wildcard patterns is labelled with the first of them as written, so that each pattern is at
	// most one label value; any other step is labelled "other".
	Methods []string
	// RejectReasons is the reason label of batchd_batches_rejected_total: the planner's reasons and the HTTP
	// layer's (planner.Reasons, transport.RefusalReasons); any other reason counts as "invalid".
	RejectReasons []string
	// LearnMethods is how many method labels may be learned, for steps that match no pattern of Methods, from the
	// first segment of their method once the upstream answered one of them below 400 ("Producer/*"); the first
	// come are kept for the process's life. 0: none, such steps are "other".
	LearnMethods int
	// IdempotencyResults is the result label of batchd_idempotency_total (idempotency.Results); any other result
	// counts as "error".
	IdempotencyResults []string
	// MemoryInUse, optional, reads the bytes the batches in flight hold (batchd_budget_bytes_in_use), and
	// MemoryLimit is their budget (batchd_budget_bytes_limit; 0: none).
	MemoryInUse func() int64
	MemoryLimit int64
	// Build identifies the running binary (batchd_build_info); empty fields are exported as "unknown".
	Build BuildInfo
}

// BuildInfo is the version of the running binary.
type BuildInfo struct {
	Version   string // e.g. v1.4.0-3-gdeadbee, from git describe
	Revision  string // the VCS revision
	GoVersion string // runtime.Version()
}

// Metrics holds every batchd metric. Build it with New.
type Metrics struct {
	batchDuration   map[string]prometheus.Observer // by outcome
	batchSteps      prometheus.Histogram
	batchDepth      prometheus.Histogram
	batchesInFlight prometheus.Gauge
	stepsInFlight   prometheus.Gauge
	rejected        map[string]prometheus.Counter // by reason
	abandoned       prometheus.Counter
	upstreamErrors  map[string]prometheus.Counter // by kind
	idempotency     map[string]prometheus.Counter // by result
	rollbacksOK     prometheus.Counter
	rollbacksFailed prometheus.Counter
	jobs            *jobMetrics // jobs.go

	exact    map[string]*methodSeries // by folded name
	wildcard []wildcardSeries         // in configuration order
	other    *methodSeries
	learned  *learned // nil: Config.LearnMethods is 0

	cache     sync.Map // step name → *resolution
	cacheSize atomic.Int64
}

// methodSeries is every series of one method label value, resolved once so that StepDone does no label hashing.
type methodSeries struct {
	label    string
	duration map[runner.Outcome]prometheus.Observer // by outcome (runner.Outcomes)
	timeouts prometheus.Counter
	steps    *verbSeries
}

// resolution is what a step name resolves to, cached: the series of the pattern it matches, or (series nil) the
// segment it may be learned under ("" for none).
type resolution struct {
	series  *methodSeries
	segment string
}

type wildcardSeries struct {
	pattern pattern
	series  *methodSeries
}

var _ runner.Recorder = (*Metrics)(nil)

// New creates batchd's metrics and registers them on reg (nil: not registered, for tests that only need Label).
// It fails on an invalid method pattern or when reg already holds a batchd metric.
func New(reg prometheus.Registerer, cfg Config) (*Metrics, error) {
	m := &Metrics{
		batchDuration:  make(map[string]prometheus.Observer, len(batchOutcomes)),
		rejected:       make(map[string]prometheus.Counter),
		upstreamErrors: make(map[string]prometheus.Counter),
		idempotency:    make(map[string]prometheus.Counter),
		exact:          make(map[string]*methodSeries),
	}

	batchDuration := prometheus.NewHistogramVec(durationOpts("batch_duration_seconds",
		"Time from a batch request's arrival to its answer, by outcome: ok (every step ok), partial (some failed), "+
			"failed (none ok), rejected (refused before anything ran)."), []string{"outcome"})
	m.batchSteps = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "batch_steps", Buckets: StepsBuckets,
		Help: "Number of steps in an accepted batch.",
	})
	m.batchDepth = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "batch_depth", Buckets: DepthBuckets,
		Help: "Critical-path length of an accepted batch: the number of steps on its longest dependency chain.",
	})
	stepDuration := prometheus.NewHistogramVec(durationOpts("step_duration_seconds",
		"Duration of one step's call, by method and outcome (ok, error, timeout, skipped); "+
			"a skipped step was never executed and is observed as 0."), []string{"method", "outcome"})
	steps := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "steps_total",
		Help: "Steps ended, by method, verb (the HTTP method), outcome and status_class: 2xx, 3xx, 4xx or 5xx when the " +
			"upstream answered, none when it did not (unreachable, reset, timed out, never sent).",
	}, []string{"method", "verb", "outcome", "status_class"})
	stepTimeouts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "step_timeouts_total",
		Help: "Steps cancelled at -step-timeout or -batch-timeout, by method.",
	}, []string{"method"})
	m.batchesInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "batches_in_flight",
		Help: "Batch requests being handled now.",
	})
	m.stepsInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "steps_in_flight",
		Help: "Steps whose call is running now, over all batches.",
	})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "batches_rejected_total",
		Help: "Batch requests refused before any step ran, by reason.",
	}, []string{"reason"})
	m.abandoned = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "batches_abandoned_total",
		Help: "Accepted batches whose client went away before the answer: steps not yet started were not started, " +
			"running ones were cancelled, and no answer was written.",
	})
	upstream := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "upstream_errors_total",
		Help: "Step calls that got no usable response from the upstream, by kind (connect, reset, too_large, …).",
	}, []string{"kind"})
	idempotency := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "idempotency_total",
		Help: "Batch requests with an Idempotency-Key, by result: stored, replayed, conflict (409), mismatch (422), " +
			"error (store unavailable).",
	}, []string{"result"})

	rollbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "rollbacks_total",
		Help: "Rollbacks of the steps of atomic batches that did not commit, by outcome: ok (the step was undone), " +
			"failed (the rollback failed, or was not attempted because a rollback it waited for failed).",
	}, []string{"outcome"})
	budgetInUse := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "budget_bytes_in_use",
		Help: "Bytes reserved now by the batches in flight (requests, responses kept, calls built, answers) against " +
			"the memory budget (-memory-budget).",
	}, func() float64 {
		if cfg.MemoryInUse == nil {
			return 0
		}
		return float64(cfg.MemoryInUse())
	})
	budgetLimit := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "budget_bytes_limit",
		Help: "The memory budget of the batches in flight (-memory-budget); 0: none.",
	})
	budgetLimit.Set(float64(cfg.MemoryLimit))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help: "Always 1, labelled with the running binary's version, VCS revision and Go version.",
	}, []string{"version", "revision", "goversion"})
	buildInfo.WithLabelValues(orUnknown(cfg.Build.Version), orUnknown(cfg.Build.Revision),
		orUnknown(cfg.Build.GoVersion)).Set(1)
	m.rollbacksOK = rollbacks.WithLabelValues("ok")
	m.rollbacksFailed = rollbacks.WithLabelValues("failed")

	for _, o := range batchOutcomes {
		m.batchDuration[o] = batchDuration.WithLabelValues(o)
	}
	for _, r := range append(slices.Clone(cfg.RejectReasons), reasonFallback) {
		m.rejected[r] = rejected.WithLabelValues(r)
	}
	for _, k := range runner.UpstreamErrorKinds() { // "other" among them: kindFallback
		m.upstreamErrors[k] = upstream.WithLabelValues(k)
	}
	for _, r := range append(slices.Clone(cfg.IdempotencyResults), idempotencyFallback) {
		m.idempotency[r] = idempotency.WithLabelValues(r)
	}

	newSeries := func(label string) *methodSeries {
		s := &methodSeries{label: label, timeouts: stepTimeouts.WithLabelValues(label),
			duration: make(map[runner.Outcome]prometheus.Observer, len(runner.Outcomes())),
			steps:    &verbSeries{vec: steps, label: label}}
		for _, o := range runner.Outcomes() {
			s.duration[o] = stepDuration.WithLabelValues(label, string(o))
		}
		s.steps.counters(defaultVerb)
		return s
	}
	seen := make(map[string]bool)
	for _, p := range cfg.Methods {
		pt, err := compilePattern(p)
		if err != nil {
			return nil, err
		}
		if seen[pt.text] {
			continue
		}
		seen[pt.text] = true
		if pt.wildcard() {
			m.wildcard = append(m.wildcard, wildcardSeries{pattern: pt, series: newSeries(pt.text)})
		} else {
			m.exact[pt.text] = newSeries(pt.text)
		}
	}
	m.other = newSeries(OtherMethod)
	if cfg.LearnMethods < 0 {
		return nil, errors.New("metrics: LearnMethods must not be negative")
	}
	if cfg.LearnMethods > 0 {
		m.learned = &learned{max: cfg.LearnMethods, newSeries: newSeries}
	}

	jobMetrics, jobCollectors := newJobMetrics()
	m.jobs = jobMetrics
	if reg != nil {
		for _, c := range append([]prometheus.Collector{batchDuration, m.batchSteps, m.batchDepth, stepDuration, steps,
			stepTimeouts, m.batchesInFlight, m.stepsInFlight, rejected, m.abandoned, upstream,
			idempotency, rollbacks, budgetInUse, budgetLimit, buildInfo}, jobCollectors...) {
			if err := reg.Register(c); err != nil {
				return nil, errors.Join(errors.New("metrics: registering batchd metrics"), err)
			}
		}
	}
	return m, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func durationOpts(name, help string) prometheus.HistogramOpts {
	return prometheus.HistogramOpts{
		Namespace: Namespace, Name: name, Help: help,
		Buckets:                         DurationBuckets,
		NativeHistogramBucketFactor:     nativeBucketFactor,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}
}

// NewRegistry returns a registry holding the Go runtime and process collectors, for New and the /metrics handler.
// Tests that only look at batchd's own series pass prometheus.NewRegistry() to New instead.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg in the Prometheus exposition formats (text, OpenMetrics, and protobuf with native
// histograms when the scraper asks for it). Errors while gathering are logged by Prometheus as scrape failures and
// counted in promhttp_metric_handler_errors_total.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	})
}

// Label returns the method label value for a step's method name: the folded name when it matches an exact known
// method, else the first matching wildcard pattern, else the label learned for its first segment (Config.
// LearnMethods), else "other". A leading "/" and any query are ignored, and numeric, UUID and placeholder segments
// are folded to ":id" before matching. Label never learns a label: only a step's end does.
func (m *Metrics) Label(name string) string {
	if m == nil {
		return OtherMethod
	}
	return m.series(name, false).label
}

// series returns the series of a step name; learn: the step proved a route under its first segment (learnable).
func (m *Metrics) series(name string, learn bool) *methodSeries {
	r := m.resolution(name)
	switch {
	case r.series != nil:
		return r.series
	case r.segment == "" || m.learned == nil:
		return m.other
	}
	if s := m.learned.get(r.segment, learn); s != nil {
		return s
	}
	return m.other
}

// resolution resolves a step name against the patterns through a bounded cache: StepDone runs once per step and
// most batches repeat a few names.
func (m *Metrics) resolution(name string) *resolution {
	if len(name) > maxNameLen {
		return &resolution{} // not cached: the cache's bound is in entries, and each key must stay small
	}
	if v, ok := m.cache.Load(name); ok {
		return v.(*resolution)
	}
	s := m.resolve(name)
	if m.cacheSize.Add(1) > maxCache {
		// Emptying rather than evicting one entry keeps this lock-free; concurrent inserts may overshoot maxCache
		// by at most the number of goroutines racing here.
		m.cache.Clear()
		m.cacheSize.Store(1)
	}
	if _, loaded := m.cache.LoadOrStore(name, s); loaded {
		m.cacheSize.Add(-1)
	}
	return s
}

func (m *Metrics) resolve(name string) *resolution {
	segs := foldSegments(name)
	if segs == nil {
		return &resolution{} // not a method: "other"
	}
	if s, ok := m.exact[strings.Join(segs, "/")]; ok {
		return &resolution{series: s}
	}
	for i := range m.wildcard {
		if m.wildcard[i].pattern.match(segs) {
			return &resolution{series: m.wildcard[i].series}
		}
	}
	return &resolution{segment: firstSegment(segs)}
}

// StepStarted records that a step's call begins.
func (m *Metrics) StepStarted(string) {
	if m == nil {
		return
	}
	m.stepsInFlight.Inc()
}

// StepDone records a step's end, executed or not. batchd_steps_in_flight falls for a step that had its
// StepStarted (ev.Started).
func (m *Metrics) StepDone(ev runner.StepEvent) {
	if m == nil {
		return
	}
	s := m.series(ev.Name, m.learned != nil && learnable(ev))
	o := ev.Outcome
	d, ok := s.duration[o]
	if !ok {
		o = runner.OutcomeError // an outcome the runner should never report: seen rather than dropped
		d = s.duration[o]
	}
	d.Observe(ev.Duration.Seconds())
	s.steps.inc(ev, o)
	if ev.Outcome == runner.OutcomeTimeout {
		s.timeouts.Inc()
	}
	if ev.Started {
		m.stepsInFlight.Dec()
	}
	if ev.UpstreamError != "" {
		c, ok := m.upstreamErrors[ev.UpstreamError]
		if !ok {
			c = m.upstreamErrors[kindFallback]
		}
		c.Inc()
	}
}

// BatchDone records an accepted batch's end: its duration by outcome, its size and its depth.
func (m *Metrics) BatchDone(ev runner.BatchEvent) {
	if m == nil {
		return
	}
	o, ok := m.batchDuration[ev.Outcome]
	if !ok || ev.Outcome == BatchRejected {
		o = m.batchDuration[BatchFailed] // not a runner outcome: seen as a failure rather than dropped
	}
	o.Observe(ev.Duration.Seconds())
	m.batchSteps.Observe(float64(ev.Steps))
	m.batchDepth.Observe(float64(ev.Depth))
}

// BatchStarted records that a batch request is being handled; pair it with BatchFinished.
func (m *Metrics) BatchStarted() {
	if m == nil {
		return
	}
	m.batchesInFlight.Inc()
}

// BatchFinished records that a batch request has been answered, accepted or not.
func (m *Metrics) BatchFinished() {
	if m == nil {
		return
	}
	m.batchesInFlight.Dec()
}

// TrackBatch calls BatchStarted and returns BatchFinished: defer m.TrackBatch()().
func (m *Metrics) TrackBatch() (finished func()) {
	m.BatchStarted()
	return m.BatchFinished
}

// BatchRejected records a batch refused before any step ran, after d: it counts
// batchd_batches_rejected_total{reason} and observes batchd_batch_duration_seconds{outcome="rejected"}. reason is
// one of Config.RejectReasons; any other counts as "invalid". A batch with
// several problems is counted once, under the reason of its first problem.
func (m *Metrics) BatchRejected(reason string, d time.Duration) {
	if m == nil {
		return
	}
	c, ok := m.rejected[reason]
	if !ok {
		c = m.rejected[reasonFallback]
	}
	c.Inc()
	m.batchDuration[BatchRejected].Observe(d.Seconds())
}

// BatchAbandoned records an accepted batch whose client went away before its answer was written
// (batchd_batches_abandoned_total). The batch's steps are still recorded by StepDone and BatchDone as they ended.
func (m *Metrics) BatchAbandoned() {
	if m == nil {
		return
	}
	m.abandoned.Inc()
}

// IdempotencyResult counts one outcome of the Idempotency-Key guard (batchd_idempotency_total{result}); result is
// one of Config.IdempotencyResults, any other counts as "error". It implements idempotency.Recorder.
func (m *Metrics) IdempotencyResult(result string) {
	if m == nil {
		return
	}
	c, ok := m.idempotency[result]
	if !ok {
		c = m.idempotency[idempotencyFallback]
	}
	c.Inc()
}

// RollbackDone counts one rollback of an atomic batch (batchd_rollbacks_total{outcome="ok"|"failed"}), for
// runner.Recorder. name is not a label: rollbacks are few, and their step's method is in the
// batch's log and trace.
func (m *Metrics) RollbackDone(_ string, ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.rollbacksOK.Inc()
		return
	}
	m.rollbacksFailed.Inc()
}

package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batchd/batchd/internal/jobs"
)

// jobMetrics are the metrics of jobs (docs/jobs.md). Their label sets are the jobs package's own (jobs.Statuses,
// jobs.Outcomes); each series exists from the start at zero.
type jobMetrics struct {
	status       map[string]prometheus.Counter // by status
	batches      map[string]prometheus.Counter // by outcome
	reclaimed    prometheus.Counter
	queueJobs    prometheus.Gauge
	queueBatches prometheus.Gauge
	queueOldest  prometheus.Gauge
}

// Fallbacks of the jobs' label sets: a value outside a set is counted under it rather than become a new series.
const (
	jobStatusFallback  = "queued"
	jobOutcomeFallback = "failed"
)

func newJobMetrics() (*jobMetrics, []prometheus.Collector) {
	status := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "jobs_total",
		Help: "Jobs that entered a status on this replica: queued (accepted), running (its first batch started " +
			"here), done (its last batch ended here), cancelled (cancelled here).",
	}, []string{"status"})
	batches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "job_batches_total",
		Help: "Batches of jobs that ended on this replica, by outcome: ok (every step ok), partial (some failed), " +
			"failed (none ok, refused, or given up after being taken over too often), skipped (the job was " +
			"cancelled before it started).",
	}, []string{"outcome"})
	m := &jobMetrics{
		status:  map[string]prometheus.Counter{},
		batches: map[string]prometheus.Counter{},
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "job_batches_reclaimed_total",
			Help: "Batches of jobs this replica took over from a replica that stopped before finishing them " +
				"(-job-claim-after), and ran again.",
		}),
		queueJobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "job_queue_jobs",
			Help: "Jobs queued or running, as this replica's job store sees them (with -jobs-redis every replica " +
				"reports the same store: aggregate with max).",
		}),
		queueBatches: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "job_queue_batches",
			Help: "Batches of those jobs not run yet (queued or running).",
		}),
		queueOldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "job_queue_oldest_seconds",
			Help: "Age of the oldest job queued or running; 0 when none.",
		}),
	}
	for _, s := range jobs.Statuses() {
		m.status[s] = status.WithLabelValues(s)
	}
	for _, o := range jobs.Outcomes() {
		m.batches[o] = batches.WithLabelValues(o)
	}
	return m, []prometheus.Collector{status, batches, m.reclaimed, m.queueJobs, m.queueBatches, m.queueOldest}
}

var _ jobs.Recorder = (*Metrics)(nil)

// JobStatus counts a job that entered status (batchd_jobs_total{status}).
func (m *Metrics) JobStatus(status string) {
	if m == nil {
		return
	}
	c, ok := m.jobs.status[status]
	if !ok {
		c = m.jobs.status[jobStatusFallback]
	}
	c.Inc()
}

// JobBatch counts n batches of jobs that ended with outcome (batchd_job_batches_total{outcome}).
func (m *Metrics) JobBatch(outcome string, n int) {
	if m == nil {
		return
	}
	c, ok := m.jobs.batches[outcome]
	if !ok {
		c = m.jobs.batches[jobOutcomeFallback]
	}
	c.Add(float64(n))
}

// JobBatchReclaimed counts a batch taken over from a replica that stopped (batchd_job_batches_reclaimed_total).
func (m *Metrics) JobBatchReclaimed() {
	if m == nil {
		return
	}
	m.jobs.reclaimed.Inc()
}

// JobQueue sets the state of the job queue: jobs queued or running, their batches not run yet, the oldest's age.
func (m *Metrics) JobQueue(jobCount, batchCount int64, oldest time.Duration) {
	if m == nil {
		return
	}
	m.jobs.queueJobs.Set(float64(jobCount))
	m.jobs.queueBatches.Set(float64(batchCount))
	m.jobs.queueOldest.Set(oldest.Seconds())
}

package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batchd/batchd/runner"
)

// Verbs are the values of the verb label of batchd_steps_total: the HTTP methods a step may use, and "other" for
// any other token a client sends (the planner refuses CONNECT and TRACE).
var verbs = [...]string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", OtherVerb}

// OtherVerb is the verb label of a step whose HTTP method is none of the common ones.
const OtherVerb = "other"

// defaultVerb is the verb of a step that names none, whose series New creates at zero.
const defaultVerb = 1 // POST

// verbIndex is the index in verbs of an HTTP method as the planner stores it (upper case).
func verbIndex(method string) int {
	switch method {
	case "GET":
		return 0
	case "POST", "":
		return 1
	case "PUT":
		return 2
	case "PATCH":
		return 3
	case "DELETE":
		return 4
	case "HEAD":
		return 5
	case "OPTIONS":
		return 6
	}
	return len(verbs) - 1
}

// Status classes (label status_class of batchd_steps_total): what the upstream answered, so that an alert can tell a
// client's mistake (4xx) from an upstream failure (5xx, or no answer at all).
const (
	Class2xx  = "2xx"
	Class3xx  = "3xx"
	Class4xx  = "4xx"
	Class5xx  = "5xx"
	ClassNone = "none" // no response: unreachable, reset, protocol error, too large, timed out, never sent
)

// StatusClasses lists every status_class value.
func StatusClasses() []string { return []string{Class2xx, Class3xx, Class4xx, Class5xx, ClassNone} }

// StatusClass is the status_class of a step's end. A step has a status class only when the upstream (or the
// in-process handler) answered: its outcome is ok or error and batchd did not decide it (ev.Decided: a panic, an
// upstream error, a step not sent). Every other step is "none", whatever status batchd reported for it (500, 502,
// 504, 424, …), since that status is batchd's, not the upstream's.
func StatusClass(ev runner.StepEvent) string {
	if ev.Decided || ev.UpstreamError != "" || (ev.Outcome != runner.OutcomeOK && ev.Outcome != runner.OutcomeError) {
		return ClassNone
	}
	switch {
	case ev.Status >= 200 && ev.Status < 300:
		return Class2xx
	case ev.Status >= 300 && ev.Status < 400:
		return Class3xx
	case ev.Status >= 400 && ev.Status < 500:
		return Class4xx
	case ev.Status >= 500 && ev.Status < 600:
		return Class5xx
	}
	return ClassNone
}

// classesOf lists the status classes a step of outcome o can have (StatusClass): every class for a step that got
// an answer, "none" for the others. Only these series are created.
func classesOf(o runner.Outcome) []string {
	if o == runner.OutcomeOK || o == runner.OutcomeError {
		return StatusClasses()
	}
	return []string{ClassNone}
}

// stepKey names one series of batchd_steps_total within a method and verb.
type stepKey struct {
	outcome runner.Outcome
	class   string
}

// stepCounters are the batchd_steps_total series of one method label and one verb, by outcome and status class;
// read-only once built.
type stepCounters map[stepKey]prometheus.Counter

// verbSeries holds a method label's stepCounters per verb, built on a verb's first step (POST's in New): every
// outcome and status class of that method and verb then exists at zero, so that rate() sees the first failure.
type verbSeries struct {
	vec    *prometheus.CounterVec
	label  string
	byVerb [len(verbs)]atomic.Pointer[stepCounters]
}

// counters returns the series of verb index v, creating them on first use. Two goroutines racing here build the
// same children (WithLabelValues returns the existing one), so either result is right.
func (s *verbSeries) counters(v int) stepCounters {
	if c := s.byVerb[v].Load(); c != nil {
		return *c
	}
	c := make(stepCounters)
	for _, o := range runner.Outcomes() {
		for _, class := range classesOf(o) {
			c[stepKey{o, class}] = s.vec.WithLabelValues(s.label, verbs[v], string(o), class)
		}
	}
	s.byVerb[v].CompareAndSwap(nil, &c)
	return *s.byVerb[v].Load()
}

// inc counts one step of ev's verb and status class, under outcome o (ev.Outcome, or error for an outcome the
// runner should never report, whose status class StatusClass makes "none").
func (s *verbSeries) inc(ev runner.StepEvent, o runner.Outcome) {
	s.counters(verbIndex(ev.Method))[stepKey{o, StatusClass(ev)}].Inc()
}

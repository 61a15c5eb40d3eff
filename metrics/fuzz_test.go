package metrics_test

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/metrics"
	"github.com/batchd/batchd/runner"
)

// FuzzStepDone feeds step ends whose method name, verb, status and upstream error a client or an upstream chose,
// with method labels learned from them: recording never panics (a label value must be valid UTF-8), every started
// step ends, and the label sets stay within their bounds, so the series cannot grow with what clients send.
func FuzzStepDone(f *testing.F) {
	f.Add("Producer/Add", "POST", uint8(0), 200, "")
	f.Add("users/42/orders", "GET", uint8(1), 404, "")
	f.Add("\xff\xfe/x", "PATCH", uint8(0), 200, "")
	f.Add("caf\u00e9/menu", "DELETE", uint8(1), 503, "")
	f.Add("a\u0000b/c", "PROPFIND", uint8(0), 302, "")
	f.Add("/9f1c8f6e-8d2b-4b1a-9c3e-2f4b5a6c7d8e/x?y=1", "put", uint8(2), 504, "reset")
	f.Add("${A.result.id}/x", "", uint8(3), 424, "martian")
	f.Fuzz(func(t *testing.T, name, verb string, outcome uint8, status int, upstreamErr string) {
		const learn = 3
		reg := prometheus.NewRegistry()
		m, err := metrics.New(reg, metrics.Config{Methods: []string{"Producer/*"}, LearnMethods: learn})
		require.NoError(t, err)
		outcomes := append(runner.Outcomes(), "weird")
		o := outcomes[int(outcome)%len(outcomes)]
		// The same name under several segments, so that learning is exercised past its bound.
		for i, n := range []string{name, "a/" + name, name + "/b", "b" + name, "c" + name, "d" + name} {
			ev := runner.StepEvent{Name: n, Method: verb, Outcome: o, Status: status, UpstreamError: upstreamErr,
				Duration: time.Duration(i+1) * time.Millisecond, Started: true}
			m.StepStarted(n)
			m.StepDone(ev)
			ok := runner.StepEvent{Name: n, Method: verb, Outcome: runner.OutcomeOK, Status: 200, Duration: time.Millisecond, Started: true}
			m.StepStarted(n)
			m.StepDone(ok)
			require.True(t, utf8.ValidString(m.Label(n)))
		}
		mfs, err := reg.Gather()
		require.NoError(t, err)
		labels := map[string]bool{}
		for _, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				for _, lp := range mt.GetLabel() {
					switch lp.GetName() {
					case "method":
						labels[lp.GetValue()] = true
					case "verb":
						require.Contains(t, []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"}, lp.GetValue())
					case "status_class":
						require.Contains(t, metrics.StatusClasses(), lp.GetValue())
					}
				}
			}
			if mf.GetName() == "batchd_steps_in_flight" {
				require.Zero(t, mf.GetMetric()[0].GetGauge().GetValue(), "every started step ended")
			}
		}
		require.LessOrEqual(t, len(labels), 1+learn+1, "Producer/*, the learned labels and other: %v", labels)
	})
}

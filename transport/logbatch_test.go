package transport

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/ratelimit"
	"github.com/batchd/batchd/internal/syncbuf"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// TestUnreadyKeepsServing: Unready fails readiness while batches still run; Drain then refuses them.
func TestUnreadyKeepsServing(t *testing.T) {
	srv, ts := newTestServer(t, nil, &recordingObserver{}, io.Discard)
	ready := func() int {
		r, err := http.Get(ts.URL + "/readyz")
		require.NoError(t, err)
		r.Body.Close()
		return r.StatusCode
	}
	batch := `{"requests":[{"key":"a","path":"Demo/Echo"}]}`
	require.Equal(t, 200, ready())
	srv.Unready()
	assert.Equal(t, 503, ready())
	resp, b := post(t, ts.URL+"/v1/batch", "application/json", batch)
	assert.Equal(t, 200, resp.StatusCode, "a load balancer that has not yet seen the 503 still gets answers: %s", b)
	srv.Drain()
	assert.Equal(t, 503, ready())
	resp, _ = post(t, ts.URL+"/v1/batch", "application/json", batch)
	assert.Equal(t, 503, resp.StatusCode)
}

// faultyUpstream answers by path: ok/… 200, missing/… 404, broken/… 500, slow/… after the step timeout, and reset/…
// by closing the connection without an answer.
func faultyUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/ok/"):
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"ok":true}`)
		case strings.HasPrefix(r.URL.Path, "/api/missing/"):
			http.Error(w, "no such thing", http.StatusNotFound)
		case strings.HasPrefix(r.URL.Path, "/api/broken/"):
			http.Error(w, "upstream bug", http.StatusInternalServerError)
		case strings.HasPrefix(r.URL.Path, "/api/slow/"):
			select {
			case <-r.Context().Done():
			case <-time.After(20 * time.Second):
			}
		default: // reset
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}
	}))
	t.Cleanup(up.Close)
	return up
}

// logRecord is one JSON log line.
type logRecord map[string]any

func logRecords(t *testing.T, logs string) []logRecord {
	t.Helper()
	var out []logRecord
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r logRecord
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), "%s", sc.Text())
		out = append(out, r)
	}
	return out
}

// TestBatchLogLines drives a batch through the real server and HTTP invoker against a loopback upstream that fails
// in every way, and reads the log: the access line names the caller by fingerprint (never its Authorization),
// lists the first failed steps with their statuses and counts the rest, and warnings name the upstream host for
// the first timeouts and upstream errors, the rest counted.
func TestBatchLogLines(t *testing.T) {
	up := faultyUpstream(t)
	base, err := url.Parse(up.URL + "/api/")
	require.NoError(t, err)
	inv, err := NewHTTPInvoker(HTTPConfig{Base: base})
	require.NoError(t, err)
	logs := &syncbuf.Buffer{}
	srv := New(Config{
		Planner:      planner.Config{MaxSteps: 50},
		Runner:       runner.New(inv, runner.Config{MaxParallel: 16, StepTimeout: 300 * time.Millisecond}),
		Logger:       slog.New(slog.NewJSONHandler(logs, nil)),
		RateLimitKey: "authorization",
		UpstreamHost: base.Host,
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	// Request order: ok, 4 × 404, 1 × 500, 1 × timeout, 7 × reset: 13 failed steps, 8 warnings.
	var steps []string
	add := func(n int, prefix string) {
		for i := range n {
			steps = append(steps, fmt.Sprintf(`{"key":"%s%d","method":"GET","path":"%s/%d"}`, prefix, i, prefix, i))
		}
	}
	add(1, "ok")
	add(4, "missing")
	add(1, "broken")
	add(1, "slow")
	add(7, "reset")
	const secret = "Bearer s3cret-token"
	resp, b := post(t, ts.URL+"/v1/batch", "application/json", `{"requests":[`+strings.Join(steps, ",")+`]}`,
		"Authorization", secret, "X-Request-Id", "req-1")
	require.Equal(t, 200, resp.StatusCode, "%s", b)

	out := logs.String()
	assert.NotContains(t, out, "s3cret", "the credential never reaches the log")
	var access logRecord
	var warnings []logRecord
	for _, r := range logRecords(t, out) {
		switch {
		case r["msg"] == "batch":
			access = r
		case r["level"] == "WARN":
			warnings = append(warnings, r)
		}
	}
	require.NotNil(t, access, out)
	wantCaller := callerFingerprint(ratelimit.Identity(secret, "127.0.0.1"))
	assert.Equal(t, wantCaller, access["caller"])
	assert.Len(t, wantCaller, 12)
	assert.Equal(t, "req-1", access["request_id"])
	assert.Equal(t, 14.0, access["steps"])
	assert.Equal(t, 13.0, access["failed"])
	assert.Equal(t, []any{"missing0:404", "missing1:404", "missing2:404", "missing3:404", "broken0:500", "slow0:504",
		"reset0:502", "reset1:502", "reset2:502", "reset3:502"}, access["failed_steps"])
	assert.Equal(t, 3.0, access["failed_steps_not_listed"])
	assert.Equal(t, 3.0, access["step_warnings_not_logged"])

	require.Len(t, warnings, maxStepWarnings, out)
	timeouts := 0
	for _, w := range warnings {
		assert.Equal(t, base.Host, w["upstream"], "%v", w)
		assert.Equal(t, "req-1", w["request_id"])
		switch w["msg"] {
		case "step timed out":
			timeouts++
			assert.Equal(t, "slow0", w["key"])
			assert.Equal(t, "slow/0", w["method"])
			assert.Equal(t, 504.0, w["status"])
			assert.Equal(t, 5040.0, w["code"])
		case "upstream error":
			assert.Contains(t, []string{"reset", "protocol"}, w["kind"], "%v", w)
			assert.Equal(t, 502.0, w["status"])
		default:
			t.Errorf("unexpected warning %v", w)
		}
	}
	assert.Equal(t, 1, timeouts)
}

// TestStreamedBatchLogLine: a streamed batch's access line says so and lists its failures like any other.
func TestStreamedBatchLogLine(t *testing.T) {
	logs := &syncbuf.Buffer{}
	_, ts := newTestServer(t, nil, &recordingObserver{}, logs)
	resp, b := post(t, ts.URL+"/v1/batch", "application/json",
		`{"requests":[{"key":"a","path":"Demo/Echo"},{"key":"f","path":"Demo/Fail","payload":{"status":409}}]}`,
		"Accept", "application/x-ndjson")
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	var access logRecord
	for _, r := range logRecords(t, logs.String()) {
		if r["msg"] == "batch" {
			access = r
		}
	}
	require.NotNil(t, access, logs.String())
	assert.Equal(t, true, access["stream"])
	assert.Equal(t, []any{"f:409"}, access["failed_steps"])
	assert.Equal(t, callerFingerprint(ratelimit.Identity("", "127.0.0.1")), access["caller"])
	assert.NotContains(t, access, "failed_steps_not_listed")
}

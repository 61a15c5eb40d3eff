package transport

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/ratelimit"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport/demoapi"
)

// countingInvoker counts the calls that reached it.
type countingInvoker struct{ calls chan string }

func (c countingInvoker) Invoke(_ context.Context, call runner.Call) (runner.Response, error) {
	c.calls <- call.Key
	return runner.Response{Status: 200, Body: []byte(`{"ok":true}`)}, nil
}

// TestRateLimitChargesStepsBeforeRunning keys callers by Authorization (opted into: a gateway in front would verify
// it), and checks what a batch is charged and when.
func TestRateLimitChargesStepsBeforeRunning(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lim, err := ratelimit.New(ratelimit.Config{Rate: 0.5, Burst: 4, Now: func() time.Time { return now }})
	require.NoError(t, err)
	obs := &lockedObserver{}
	inv := countingInvoker{calls: make(chan string, 100)}
	srv := New(Config{
		Planner: planner.Config{MaxSteps: 10}, Runner: runner.New(inv, runner.Config{}),
		Observer: obs, RateLimiter: lim, RateLimitKey: "authorization", Demo: demoapi.New(demoapi.Config{}),
	})
	ts := newHTTPTestServer(t, srv)

	batch := func(n int) string {
		b := `{"requests":[`
		for i := range n {
			if i > 0 {
				b += ","
			}
			b += `{"key":"s` + strconv.Itoa(i) + `","path":"Demo/Echo"}`
		}
		return b + "]}"
	}
	type errorResult struct {
		OK     bool
		Result struct {
			Error       int
			Description string
			Details     []struct{ Reason, Problem string }
		}
	}
	refused := func(resp *http.Response, b []byte) errorResult {
		t.Helper()
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", b)
		var er errorResult
		require.NoError(t, json.Unmarshal(b, &er), "%s", b)
		assert.Equal(t, 4290, er.Result.Error)
		require.NotEmpty(t, er.Result.Details)
		assert.Equal(t, "rate_limited", er.Result.Details[0].Reason)
		return er
	}

	resp, b := post(t, ts+"/v1/batch", "application/json", batch(3), "X-Forwarded-For", "192.0.2.1")
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	assert.Len(t, inv.calls, 3)

	// Two more steps from the same address: 1 token left, 1 missing at 0.5/s → Retry-After 2. Headers naming
	// another client address do not make it another caller.
	resp, b = post(t, ts+"/v1/batch", "application/json", batch(2), "X-Forwarded-For", "192.0.2.2", "X-Real-Ip", "192.0.2.3")
	er := refused(resp, b)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"))
	assert.Contains(t, er.Result.Description, "costs 2 steps")
	assert.Len(t, inv.calls, 3, "nothing of a refused batch ran")

	// More steps than the burst: refused whatever the bucket holds, and says so.
	resp, b = post(t, ts+"/v1/batch", "application/json", batch(5), "Authorization", "Bearer fresh")
	er = refused(resp, b)
	assert.Empty(t, resp.Header.Get("Retry-After"), "no wait helps")
	assert.Contains(t, er.Result.Description, "burst of 4 steps")

	// Another credential is another caller with a bucket of its own, and the over-burst batch took nothing from it.
	resp, b = post(t, ts+"/v1/batch", "application/json", batch(4), "Authorization", "Bearer fresh")
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	assert.Len(t, inv.calls, 7)

	// A step count cannot dodge the limit: four one-step batches after a refill of 2 s (one token) — one passes.
	now = now.Add(2 * time.Second)
	passed := 0
	for range 4 {
		if resp, _ := post(t, ts+"/v1/batch", "application/json", batch(1)); resp.StatusCode == 200 {
			passed++
		}
	}
	assert.Equal(t, 2, passed, "the 1 token left plus the 1 refilled")
	assert.Equal(t, []string{"rate_limited", "rate_limited", "rate_limited", "rate_limited"}, obs.Rejected())

	// Invalid batches are refused before they are charged: they cost nothing.
	resp, _ = post(t, ts+"/v1/batch", "application/json", `{"requests":[{"key":"a","path":"//evil"}]}`, "Authorization", "Bearer fresh2")
	assert.Equal(t, 400, resp.StatusCode)
}

// TestRateLimitKeysByAddress: by default a caller is its address, which a client cannot mint: a fresh
// Authorization per batch, or X-Forwarded-For from an untrusted peer, is the same caller. Behind a trusted proxy,
// the caller is the last untrusted X-Forwarded-For hop.
func TestRateLimitKeysByAddress(t *testing.T) {
	newServer := func(trusted ...string) string {
		lim, err := ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: 2})
		require.NoError(t, err)
		var nets []*net.IPNet
		for _, c := range trusted {
			_, n, err := net.ParseCIDR(c)
			require.NoError(t, err)
			nets = append(nets, n)
		}
		inv := countingInvoker{calls: make(chan string, 100)}
		return newHTTPTestServer(t, New(Config{Runner: runner.New(inv, runner.Config{}), RateLimiter: lim,
			TrustedProxies: nets}))
	}
	one := `{"requests":[{"key":"a","path":"x"}]}`
	status := func(ts string, hdr ...string) int {
		resp, b := post(t, ts+"/v1/batch", "application/json", one, hdr...)
		if resp.StatusCode != 200 {
			assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", b)
		}
		return resp.StatusCode
	}

	ts := newServer()
	for i := range 2 {
		assert.Equal(t, 200, status(ts, "Authorization", "Bearer t"+strconv.Itoa(i), "X-Forwarded-For", "192.0.2."+strconv.Itoa(i)))
	}
	assert.Equal(t, 429, status(ts, "Authorization", "Bearer t9", "X-Forwarded-For", "192.0.2.9"),
		"a new credential and a claimed address are still the same caller")

	// Behind a trusted proxy (the test client is 127.0.0.1), each forwarded client is a caller of its own; a hop
	// the client wrote itself, left of the proxy's, is not believed.
	ts = newServer("127.0.0.0/8")
	for range 2 {
		assert.Equal(t, 200, status(ts, "X-Forwarded-For", "198.51.100.7"))
	}
	assert.Equal(t, 429, status(ts, "X-Forwarded-For", "198.51.100.7"))
	assert.Equal(t, 429, status(ts, "X-Forwarded-For", "203.0.113.1, 198.51.100.7"), "only the last untrusted hop counts")
	assert.Equal(t, 200, status(ts, "X-Forwarded-For", "198.51.100.8"))
}

func newHTTPTestServer(t *testing.T, srv *Server) string {
	t.Helper()
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

// lockedObserver records batch-level events from the server's goroutines.
type lockedObserver struct {
	mu                           sync.Mutex
	started, finished, abandoned int
	rejected                     []string
}

func (o *lockedObserver) BatchStarted()  { o.mu.Lock(); o.started++; o.mu.Unlock() }
func (o *lockedObserver) BatchFinished() { o.mu.Lock(); o.finished++; o.mu.Unlock() }
func (o *lockedObserver) BatchAbandoned() {
	o.mu.Lock()
	o.abandoned++
	o.mu.Unlock()
}
func (o *lockedObserver) BatchRejected(r string, _ time.Duration) {
	o.mu.Lock()
	o.rejected = append(o.rejected, r)
	o.mu.Unlock()
}
func (o *lockedObserver) Rejected() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.rejected...)
}
func (o *lockedObserver) Abandoned() int { o.mu.Lock(); defer o.mu.Unlock(); return o.abandoned }

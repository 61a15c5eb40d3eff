package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/syncbuf"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport/demoapi"
)

// recordingObserver keeps the batch-level events the server reports.
type recordingObserver struct {
	started, finished int
	rejected          []string
}

func (o *recordingObserver) BatchStarted()   { o.started++ }
func (o *recordingObserver) BatchFinished()  { o.finished++ }
func (o *recordingObserver) BatchAbandoned() {}
func (o *recordingObserver) BatchRejected(r string, _ time.Duration) {
	o.rejected = append(o.rejected, r)
}

// newTestServer serves the real server, runner and demo API on loopback.
func newTestServer(t *testing.T, inv runner.Invoker, obs Observer, logs io.Writer) (*Server, *httptest.Server) {
	t.Helper()
	api := demoapi.New(demoapi.Config{})
	if inv == nil {
		inv = NewInProcessInvoker(api, 1<<20)
	}
	srv := New(Config{
		Planner:  planner.Config{MaxSteps: 5},
		Runner:   runner.New(inv, runner.Config{MaxParallel: 4, StepTimeout: 5 * time.Second}),
		MaxBody:  4096,
		Observer: obs,
		Demo:     api,
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return srv, ts
}

func post(t *testing.T, url, ct, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func TestDrainRefusesNewBatches(t *testing.T) {
	obs := &recordingObserver{}
	srv, ts := newTestServer(t, nil, obs, io.Discard)
	resp, _ := post(t, ts.URL+"/v1/batch", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo"}]}`)
	require.Equal(t, 200, resp.StatusCode)

	srv.Drain()
	r, err := http.Get(ts.URL + "/readyz")
	require.NoError(t, err)
	r.Body.Close()
	assert.Equal(t, 503, r.StatusCode)
	r, err = http.Get(ts.URL + "/healthz")
	require.NoError(t, err)
	r.Body.Close()
	assert.Equal(t, 200, r.StatusCode, "alive while draining")

	resp, b := post(t, ts.URL+"/v1/batch", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo"}]}`)
	assert.Equal(t, 503, resp.StatusCode)
	assert.Contains(t, string(b), `"error":5030`)
	assert.Equal(t, 1, obs.started)
	assert.Equal(t, 1, obs.finished)
	assert.Equal(t, []string{"draining"}, obs.rejected)
}

func TestContentTypes(t *testing.T) {
	for ct, ok := range map[string]bool{
		"": true, "application/json": true, "application/json; charset=utf-8": true, "application/vnd.api+json": true,
		"text/plain": false, "application/x-www-form-urlencoded": false, "multipart/form-data; boundary=x": false, ";;": false,
	} {
		assert.Equal(t, ok, planner.JSONMediaType(ct), ct)
	}
}

func TestRefusalsAreErrorResults(t *testing.T) {
	obs := &recordingObserver{}
	_, ts := newTestServer(t, nil, obs, io.Discard)
	cases := []struct {
		name, ct, body string
		status, code   int
		reason         string
	}{
		{"not json", "text/plain", `{}`, 415, 4150, "unsupported_media_type"},
		{"too large", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","payload":"` + strings.Repeat("x", 5000) + `"}]}`, 413, 4130, "body_too_large"},
		{"planner", "application/json", `{"requests":[{"key":"a","path":"//evil.test/x"},{"key":"a","path":"Demo/Echo"}]}`, 400, 4000, "invalid_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := post(t, ts.URL+"/v1/batch", tc.ct, tc.body)
			require.Equal(t, tc.status, resp.StatusCode, "%s", b)
			assert.Equal(t, "application/json", strings.Split(resp.Header.Get("Content-Type"), ";")[0])
			var er struct {
				OK     bool
				Result struct {
					Error   int
					Details []struct{ Key, Reason, Problem string }
				}
			}
			require.NoError(t, json.Unmarshal(b, &er), "%s", b)
			assert.Equal(t, tc.code, er.Result.Error)
			require.NotEmpty(t, er.Result.Details)
			assert.Equal(t, tc.reason, obs.rejected[len(obs.rejected)-1])
		})
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	_, ts := newTestServer(t, nil, nil, io.Discard)
	r, err := http.Get(ts.URL + "/nope")
	require.NoError(t, err)
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	assert.Equal(t, 404, r.StatusCode)
	assert.JSONEq(t, `{"ok":false,"result":{"error":4040,"description":"no such route: /nope"}}`, string(b))

	resp, b := post(t, ts.URL+"/v1/Nope/Nope", "application/json", `{}`)
	assert.Equal(t, 404, resp.StatusCode, "%s", b)
}

// panicky is an http.Handler behind the demo route that panics, to prove echo's recovery answers a bare 500.
type panicky struct{}

func (panicky) ServeHTTP(http.ResponseWriter, *http.Request) { panic("secret internal detail") }

func TestPanicInHandlerIsABare500(t *testing.T) {
	var logs bytes.Buffer
	srv := New(Config{Runner: runner.New(NewInProcessInvoker(panicky{}, 1<<20), runner.Config{}), Demo: panicky{},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	resp, b := post(t, ts.URL+"/v1/Demo/Echo", "application/json", `{}`)
	assert.Equal(t, 500, resp.StatusCode)
	assert.NotContains(t, string(b), "secret")
	assert.Contains(t, logs.String(), "secret internal detail", "the cause is logged")

	// The same panic inside a step fails that step alone.
	resp, b = post(t, ts.URL+"/v1/batch", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo"}]}`)
	require.Equal(t, 200, resp.StatusCode)
	assert.Contains(t, string(b), `"status":500`)
	assert.NotContains(t, string(b), "secret")
}

// headerEcho answers with the headers a step arrived with.
type headerEcho struct{}

func (headerEcho) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"auth": r.Header.Get("Authorization"), "rid": r.Header.Get("X-Request-Id"), "custom": r.Header.Get("X-Tenant"),
	})
}

func TestBatchHeadersForwardedStepHeadersIsolated(t *testing.T) {
	srv := New(Config{Runner: runner.New(NewInProcessInvoker(headerEcho{}, 1<<20), runner.Config{}),
		ForwardHeaders: []string{"x-tenant"}})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	resp, b := post(t, ts.URL+"/v1/batch", "application/json",
		`{"requests":[{"key":"a","path":"x"},{"key":"b","path":"x","headers":{"Authorization":"Bearer step-b"}},{"key":"c","path":"x"}]}`,
		"Authorization", "Bearer batch", "X-Request-Id", "rid-1", "X-Tenant", "t1", "Cookie", "c=1")
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	assert.Equal(t, "rid-1", resp.Header.Get("X-Request-Id"))
	var out struct {
		Responses []struct{ Response map[string]string }
	}
	require.NoError(t, json.Unmarshal(b, &out))
	assert.Equal(t, map[string]string{"auth": "Bearer batch", "rid": "rid-1", "custom": "t1"}, out.Responses[0].Response)
	assert.Equal(t, "Bearer step-b", out.Responses[1].Response["auth"])
	assert.Equal(t, "Bearer batch", out.Responses[2].Response["auth"], "a step's own header never leaks to another step")
}

func TestClientGoneStopsTheBatch(t *testing.T) {
	logs := &syncbuf.Buffer{}
	_, ts := newTestServer(t, nil, nil, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/batch", strings.NewReader(
		`{"requests":[{"key":"s","path":"Demo/Sleep","payload":{"ms":30000}},{"key":"n","path":"Producer/Add","payload":{"name":"x"},"depends_on":["s"]}]}`))
	require.NoError(t, err)
	_, err = http.DefaultClient.Do(req)
	require.Error(t, err)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "client closed") }, 10*time.Second, 10*time.Millisecond)
	// The dependent step never ran: the store is empty.
	_, b := post(t, ts.URL+"/v1/Producer/Get", "application/json", `{}`)
	assert.Contains(t, string(b), `"total":0`)
}

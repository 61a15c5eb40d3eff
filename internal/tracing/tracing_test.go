package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchd/batchd/internal/tracing"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
)

// The client's trace context, as a W3C traceparent and tracestate.
const (
	clientTraceID    = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID     = "00f067aa0ba902b7"
	clientTraceparen = "00-" + clientTraceID + "-" + clientSpanID + "-01"
	clientTracestate = "vendor=abc"
)

// upstream is an httptest API that records the trace headers each step path arrived with.
type upstream struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]http.Header // path under /api/ → trace headers received
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{got: map[string]http.Header{}}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		name := strings.TrimPrefix(r.URL.Path, "/api/")
		u.mu.Lock()
		u.got[name] = http.Header{"Traceparent": r.Header.Values("Traceparent"), "Tracestate": r.Header.Values("Tracestate")}
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch name {
		case "Items/Fail":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"ok":false,"result":{"error":5000,"description":"boom"}}`)
		case "Items/Refuse":
			_, _ = io.WriteString(w, `{"ok":false,"result":{"error":1008,"description":"no"}}`)
		case "Items/Slow":
			<-r.Context().Done()
		default:
			_, _ = io.WriteString(w, `{"ok":true,"result":{"id":7}}`)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) header(name string) http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[name]
}

// newBatchd serves the real transport server and runner over an HTTPInvoker to up; with tp non-nil, traced.
func newBatchd(t *testing.T, up *upstream, tp trace.TracerProvider, stepTimeout time.Duration) *httptest.Server {
	t.Helper()
	base, err := url.Parse(up.srv.URL + "/api/")
	require.NoError(t, err)
	hi, err := transport.NewHTTPInvoker(transport.HTTPConfig{Base: base, Transport: transport.NewUpstreamTransport(8)})
	require.NoError(t, err)
	var (
		inv runner.Invoker = hi
		mw  []echo.MiddlewareFunc
	)
	if tp != nil {
		inv = tracing.Invoker(inv, tp)
		mw = append(mw, tracing.Middleware(tp))
	}
	srv := transport.New(transport.Config{
		Planner:         planner.Config{MaxSteps: 50},
		Runner:          runner.New(inv, runner.Config{StepTimeout: stepTimeout}),
		BatchMiddleware: mw,
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

// postBatch sends body with the client's trace context and a request id, and returns the status and answer.
func postBatch(t *testing.T, ts *httptest.Server, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/v1/batch", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", clientTraceparen)
	req.Header.Set("Tracestate", clientTracestate)
	req.Header.Set("X-Request-Id", "req-42")
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func newProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// waitSpans waits until n spans ended: the batch span ends after its answer was written, so the client may see
// the answer first.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	require.Eventually(t, func() bool { return len(exp.GetSpans()) >= n }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(20 * time.Millisecond) // a span more than expected would show up here
	spans := exp.GetSpans()
	require.Len(t, spans, n, "%v", names(spans))
	return spans
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i := range spans {
		out[i] = spans[i].Name
	}
	return out
}

func byName(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	require.Failf(t, "no span", "%q among %v", name, names(spans))
	return tracetest.SpanStub{}
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(s.Attributes))
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

const threeSteps = `{"requests": [
  {"key": "A", "path": "Items/A", "payload": {}},
  {"key": "B", "path": "Items/B", "method": "PUT", "payload": {}},
  {"key": "C", "path": "Items/C", "payload": {"id": "${A.result.id}"}}
]}`

func TestBatchAndStepSpans(t *testing.T) {
	tp, exp := newProvider(t)
	up := newUpstream(t)
	ts := newBatchd(t, up, tp, 0)

	status, body := postBatch(t, ts, threeSteps)
	require.Equal(t, http.StatusOK, status, body)

	spans := waitSpans(t, exp, 4)
	batch := byName(t, spans, "POST /v1/batch")
	assert.Equal(t, trace.SpanKindServer, batch.SpanKind)
	assert.Equal(t, clientTraceID, batch.Parent.TraceID().String(), "the batch span continues the client's trace")
	assert.Equal(t, clientSpanID, batch.Parent.SpanID().String(), "the batch span's parent is the client's span")
	assert.True(t, batch.Parent.IsRemote())
	assert.Equal(t, clientTraceID, batch.SpanContext.TraceID().String())
	assert.Equal(t, clientTracestate, batch.SpanContext.TraceState().String())
	ba := attrs(batch)
	assert.Equal(t, "POST", ba["http.request.method"].AsString())
	assert.Equal(t, "/v1/batch", ba["url.path"].AsString())
	assert.Equal(t, int64(200), ba["http.response.status_code"].AsInt64())
	assert.Equal(t, "req-42", ba["batchd.request_id"].AsString())
	assert.Equal(t, codes.Unset, batch.Status.Code)
	assert.Equal(t, tracing.ScopeName, batch.InstrumentationScope.Name)

	for _, step := range []struct{ key, method string }{{"A", "POST"}, {"B", "PUT"}, {"C", "POST"}} {
		t.Run(step.key, func(t *testing.T) {
			s := byName(t, spans, "step Items/"+step.key)
			assert.Equal(t, trace.SpanKindClient, s.SpanKind)
			assert.Equal(t, batch.SpanContext.SpanID(), s.Parent.SpanID(), "a step span is a child of the batch span")
			assert.Equal(t, clientTraceID, s.SpanContext.TraceID().String())
			a := attrs(s)
			assert.Equal(t, step.key, a["batchd.step.key"].AsString())
			assert.Equal(t, "Items/"+step.key, a["batchd.step.method"].AsString())
			assert.Equal(t, step.method, a["http.request.method"].AsString())
			assert.Equal(t, int64(200), a["http.response.status_code"].AsInt64())
			assert.Equal(t, "ok", a["batchd.step.outcome"].AsString())
			assert.Equal(t, codes.Unset, s.Status.Code)

			// The upstream's parent is the step span, in the client's trace, with the client's tracestate.
			got := up.header("Items/" + step.key)
			require.Len(t, got.Values("Traceparent"), 1)
			want := "00-" + clientTraceID + "-" + s.SpanContext.SpanID().String() + "-01"
			assert.Equal(t, want, got.Get("Traceparent"))
			assert.Equal(t, []string{clientTracestate}, got.Values("Tracestate"))
		})
	}
	a, c := byName(t, spans, "step Items/A"), byName(t, spans, "step Items/C")
	assert.False(t, c.StartTime.Before(a.EndTime), "C waits for A")
}

func TestTracingOffForwardsClientContext(t *testing.T) {
	up := newUpstream(t)
	ts := newBatchd(t, up, nil, 0)

	status, body := postBatch(t, ts, threeSteps)
	require.Equal(t, http.StatusOK, status, body)
	for _, k := range []string{"A", "B", "C"} {
		got := up.header("Items/" + k)
		assert.Equal(t, []string{clientTraceparen}, got.Values("Traceparent"), k)
		assert.Equal(t, []string{clientTracestate}, got.Values("Tracestate"), k)
	}
}

func TestStepFailuresAndSkippedSteps(t *testing.T) {
	tp, exp := newProvider(t)
	up := newUpstream(t)
	ts := newBatchd(t, up, tp, 300*time.Millisecond)

	status, body := postBatch(t, ts, `{"requests": [
	  {"key": "Fail", "path": "Items/Fail"},
	  {"key": "Refuse", "path": "Items/Refuse"},
	  {"key": "Slow", "path": "Items/Slow"},
	  {"key": "Dep", "path": "Items/Dep", "payload": {"x": "${Fail.result}"}}
	]}`)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, `"key":"Dep","status":424`)

	// Dep is never invoked (424): it has no span.
	spans := waitSpans(t, exp, 4)
	for _, tc := range []struct {
		name    string
		status  int64 // 0: no response
		outcome string
	}{
		{"step Items/Fail", 500, "error"},
		{"step Items/Refuse", 200, "error"}, // ok:false is a failure, as for the runner and the metrics
		{"step Items/Slow", 0, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := byName(t, spans, tc.name)
			a := attrs(s)
			assert.Equal(t, tc.outcome, a["batchd.step.outcome"].AsString())
			code, ok := a["http.response.status_code"]
			assert.Equal(t, tc.status != 0, ok)
			assert.Equal(t, tc.status, code.AsInt64())
			assert.Equal(t, codes.Error, s.Status.Code)
		})
	}
	slow := byName(t, spans, "step Items/Slow")
	require.NotEmpty(t, slow.Events, "the timeout's error is recorded")
	assert.Equal(t, "exception", slow.Events[0].Name)
	assert.Equal(t, codes.Unset, byName(t, spans, "POST /v1/batch").Status.Code, "a batch with failed steps is a 200")
}

func TestRefusedBatchSpan(t *testing.T) {
	tp, exp := newProvider(t)
	ts := newBatchd(t, newUpstream(t), tp, 0)

	status, body := postBatch(t, ts, `{"requests": []}`)
	require.Equal(t, http.StatusBadRequest, status, body)
	spans := waitSpans(t, exp, 1)
	a := attrs(spans[0])
	assert.Equal(t, "POST /v1/batch", spans[0].Name)
	assert.Equal(t, int64(400), a["http.response.status_code"].AsInt64())
	assert.Equal(t, "req-42", a["batchd.request_id"].AsString())
	assert.Equal(t, codes.Unset, spans[0].Status.Code, "a refused batch is the client's error")
}

func TestMiddlewareRecordsHandlerErrorsAndPanics(t *testing.T) {
	tp, exp := newProvider(t)
	e := echo.New()
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc { // stands in for echo's Recover
		return func(c echo.Context) (err error) {
			defer func() {
				if recover() != nil {
					err = echo.NewHTTPError(http.StatusInternalServerError)
				}
			}()
			return next(c)
		}
	})
	mw := tracing.Middleware(tp)
	e.POST("/err", func(echo.Context) error { return echo.NewHTTPError(http.StatusBadGateway) }, mw)
	e.POST("/panic", func(echo.Context) error { panic("boom") }, mw)

	for _, tc := range []struct {
		path   string
		status int64 // 0: not recorded
	}{{"/err", 502}, {"/panic", 0}} {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, tc.path, nil))
		s := byName(t, exp.GetSpans(), "POST "+tc.path)
		assert.Equal(t, codes.Error, s.Status.Code, tc.path)
		assert.Equal(t, tc.status, attrs(s)["http.response.status_code"].AsInt64(), tc.path)
		assert.False(t, s.Parent.IsValid(), "no incoming context: a root span")
	}
}

func TestNilProviderIsANoOp(t *testing.T) {
	var inv runner.Invoker = fakeInvoker{}
	assert.Equal(t, inv, tracing.Invoker(inv, nil))
	called := false
	h := tracing.Middleware(nil)(func(echo.Context) error { called = true; return nil })
	require.NoError(t, h(echo.New().NewContext(httptest.NewRequest(http.MethodPost, "/", nil), httptest.NewRecorder())))
	assert.True(t, called)
}

type fakeInvoker struct{}

func (fakeInvoker) Invoke(context.Context, runner.Call) (runner.Response, error) {
	return runner.Response{}, nil
}

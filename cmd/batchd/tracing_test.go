package main

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/batchd/batchd/internal/syncbuf"
)

// otlpCollector accepts OTLP/HTTP protobuf exports on /v1/traces and keeps what it got.
type otlpCollector struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []*coltrace.ExportTraceServiceRequest
}

func newOTLPCollector(t *testing.T) *otlpCollector {
	t.Helper()
	c := &otlpCollector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		req := &coltrace.ExportTraceServiceRequest{}
		if err == nil {
			err = proto.Unmarshal(b, req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.got = append(c.got, req)
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// spans returns service.name → span names of everything exported so far.
func (c *otlpCollector) spans() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for _, req := range c.got {
		for _, rs := range req.GetResourceSpans() {
			svc := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					svc = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out[svc] = append(out[svc], s.GetName())
				}
			}
		}
	}
	return out
}

// startEnv is start with an environment: run() reads env through getenv, never from the process.
func startEnv(t *testing.T, env map[string]string, args ...string) *instance {
	t.Helper()
	return launch(t, &syncbuf.Buffer{}, env, args...)
}

func TestTracingExportsOverOTLP(t *testing.T) {
	col := newOTLPCollector(t)
	in := startEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.srv.URL})
	require.Contains(t, in.logs.String(), `"msg":"tracing"`)

	res := in.batch(t, `{"requests": [
	  {"key": "A", "path": "Demo/Echo", "payload": {"x": 1}},
	  {"key": "B", "path": "Demo/Echo", "payload": {"y": "${A.result.x}"}}
	]}`)
	require.Len(t, res, 2)
	assert.Equal(t, 200, res[1].Status)

	// Stop: the drain ends, then the provider's Shutdown flushes the batch span processor.
	in.stop()
	select {
	case err := <-in.done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return")
	}
	require.Eventually(t, func() bool { return len(col.spans()["batchd"]) >= 3 }, 10*time.Second, 10*time.Millisecond,
		"exported: %v", col.spans())
	assert.ElementsMatch(t, []string{"POST /v1/batch", "step Demo/Echo", "step Demo/Echo"}, col.spans()["batchd"])
}

func TestTracingConfigErrorIsUsageError(t *testing.T) {
	err := run(context.Background(), []string{"-addr", "127.0.0.1:0"},
		func(k string) string { return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}[k] },
		io.Discard, io.Discard)
	var ue *usageError
	require.ErrorAs(t, err, &ue)
	assert.Contains(t, err.Error(), "OTEL_EXPORTER_OTLP_ENDPOINT")
}

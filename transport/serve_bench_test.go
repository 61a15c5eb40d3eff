package transport_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/batchd/batchd/metrics"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// batch10 is the body batchload sends: 10 independent steps on path, each with a small payload of its own.
func batch10(path string) []byte {
	var b strings.Builder
	b.WriteString(`{"stop_on_error":false,"requests":[`)
	for i := range 10 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"key":"s%d","path":%q,"payload":{"n":%d}}`, i, path, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// benchServer is the server as cmd/batchd wires it (metrics included), around inv.
func benchServer(b *testing.B, inv runner.Invoker, demo http.Handler, known []string) http.Handler {
	m, err := metrics.New(metrics.NewRegistry(), metrics.Config{Methods: known})
	if err != nil {
		b.Fatal(err)
	}
	rn := runner.New(inv, runner.Config{MaxParallel: 50, Recorder: m})
	return transport.New(transport.Config{Planner: planner.Config{}, Runner: rn, Observer: m, Demo: demo}).Handler()
}

// serveBatches posts body to h from parallel goroutines and checks every answer is a 200.
func serveBatches(b *testing.B, h http.Handler, body []byte) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/v1/batch", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Errorf("status %d: %s", w.Code, w.Body)
				return
			}
		}
	})
}

// BenchmarkServeBatchDemo10 is demo10's batch, through the handler (no sockets): planner, runner, in-process
// invoker, demo API and the answer.
func BenchmarkServeBatchDemo10(b *testing.B) {
	api := demoapi.New(demoapi.Config{})
	h := benchServer(b, transport.NewInProcessInvoker(api, 0), api, demoapi.Methods())
	serveBatches(b, h, batch10("Demo/Echo"))
}

// BenchmarkServeBatchProxy10 is d10's batch, through the handler, to a loopback upstream.
func BenchmarkServeBatchProxy10(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"result":{"new_id":1}}`)
	}))
	defer up.Close()
	base, _ := url.Parse(up.URL + "/")
	inv, err := transport.NewHTTPInvoker(transport.HTTPConfig{Base: base})
	if err != nil {
		b.Fatal(err)
	}
	h := benchServer(b, inv, nil, []string{"fast/Item/Add"})
	serveBatches(b, h, batch10("fast/Item/Add"))
}

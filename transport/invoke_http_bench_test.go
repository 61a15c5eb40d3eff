package transport

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/batchd/batchd/runner"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkHTTPInvokeOverhead is HTTPInvoker's own cost per call: its Transport answers at once, with no
// connection, so what remains is building the request and reading the response.
func BenchmarkHTTPInvokeOverhead(b *testing.B) {
	const answer = `{"ok":true,"result":{"new_id":1}}`
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, r.Body)
			_ = r.Body.Close()
		}
		return &http.Response{StatusCode: 200, ContentLength: int64(len(answer)),
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(answer)),
			Request: r}, nil
	})
	base, _ := url.Parse("http://127.0.0.1:1/")
	h, err := NewHTTPInvoker(HTTPConfig{Base: base, Transport: rt})
	if err != nil {
		b.Fatal(err)
	}
	call := runner.Call{Key: "s0", Method: http.MethodPost, Path: "fast/Item/Add",
		Header: http.Header{"X-Request-Id": {"r1"}}, Body: []byte(`{"name":"item 1"}`)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Invoke(ctx, call); err != nil {
			b.Fatal(err)
		}
	}
}

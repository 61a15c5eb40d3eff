package transport

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/batchd/batchd/runner"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkHTTPInvokeOverhead is HTTPInvoker's own cost per call: the client's Transport answers at once, with no
// connection, so what remains is building the request, the client's bookkeeping and reading the response.
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
	client := NewUpstreamClient(0) // its settings, around rt
	client.Transport = rt
	h, err := NewHTTPInvoker(HTTPConfig{Base: base, Client: client})
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

func TestRoundTripperOnlyForPlainClients(t *testing.T) {
	own := NewUpstreamClient(0)
	if roundTripper(own) != own.Transport {
		t.Fatal("NewUpstreamClient's client: Do is not skipped")
	}
	jar, _ := cookiejar.New(nil)
	for name, c := range map[string]*http.Client{
		"jar":              {Transport: own.Transport, CheckRedirect: returnRedirect, Jar: jar},
		"timeout":          {Transport: own.Transport, CheckRedirect: returnRedirect, Timeout: time.Second},
		"other redirect":   {Transport: own.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return nil }},
		"follows redirect": {Transport: own.Transport},
		"default":          {CheckRedirect: returnRedirect},
	} {
		if roundTripper(c) != nil {
			t.Errorf("%s: Client.Do skipped", name)
		}
	}
}

// TestHTTPInvokerSameThroughDo sends the same calls through the Transport directly and through Client.Do: the
// answers and the error kinds must not differ.
func TestHTTPInvokerSameThroughDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/hijack":
			conn, _, _ := w.(http.Hijacker).Hijack()
			_ = conn.Close()
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"path":"`+r.URL.Path+`"}`)
		}
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	direct, _ := NewHTTPInvoker(HTTPConfig{Base: base})
	viaDo, _ := NewHTTPInvoker(HTTPConfig{Base: base, Client: &http.Client{Transport: NewUpstreamClient(0).Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}})
	if roundTripper(direct.client) == nil || roundTripper(viaDo.client) != nil {
		t.Fatal("the two invokers do not take the two paths")
	}
	for _, p := range []string{"x", "redirect", "hijack"} {
		a, aerr := direct.Invoke(context.Background(), runner.Call{Key: "k", Path: p, Body: []byte(`{}`)})
		b, berr := viaDo.Invoke(context.Background(), runner.Call{Key: "k", Path: p, Body: []byte(`{}`)})
		var ae, be *runner.InvokeError
		errors.As(aerr, &ae)
		errors.As(berr, &be)
		if a.Status != b.Status || string(a.Body) != string(b.Body) || (ae == nil) != (be == nil) ||
			(ae != nil && ae.Kind != be.Kind) {
			t.Errorf("%s: direct %d %s %v; via Do %d %s %v", p, a.Status, a.Body, aerr, b.Status, b.Body, berr)
		}
	}
}

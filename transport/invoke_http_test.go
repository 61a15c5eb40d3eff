package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchd/batchd/runner"
)

// upstream is a recorded request as the test server saw it.
type upstream struct {
	Method     string
	RequestURI string
	Path       string
	Query      url.Values
	Header     http.Header
	Body       string
}

// recordingServer answers every request with reply and records what it saw.
func recordingServer(t *testing.T, reply http.HandlerFunc) (*httptest.Server, func() []upstream) {
	t.Helper()
	var mu sync.Mutex
	var seen []upstream
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, upstream{r.Method, r.RequestURI, r.URL.Path, r.URL.Query(), r.Header.Clone(), string(b)})
		mu.Unlock()
		if reply != nil {
			reply(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"result":{"new_id":1}}`)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []upstream {
		mu.Lock()
		defer mu.Unlock()
		return append([]upstream(nil), seen...)
	}
}

func mustParse(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newInvoker(t testing.TB, base string, cfg HTTPConfig) *HTTPInvoker {
	t.Helper()
	cfg.Base = mustParse(t, base)
	h, err := NewHTTPInvoker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tr, ok := h.rt.(*http.Transport); ok && cfg.Transport == nil {
		t.Cleanup(tr.CloseIdleConnections)
	}
	return h
}

func wantInvokeError(t *testing.T, err error, kind string) {
	t.Helper()
	var ie *runner.InvokeError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T), want *runner.InvokeError of kind %q", err, err, kind)
	}
	if ie.Kind != kind {
		t.Fatalf("InvokeError kind %q (%v), want %q", ie.Kind, ie.Err, kind)
	}
}

func TestHTTPInvokerForwards(t *testing.T) {
	srv, seen := recordingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Set-Cookie", "session=upstream")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	h := newInvoker(t, srv.URL+"/api/", HTTPConfig{})
	hdr := http.Header{
		"Authorization":       {"Bearer step"},
		"X-Multi":             {"a", "b"},
		"Cookie":              {"mine=1"},
		"Connection":          {"close"},
		"Keep-Alive":          {"timeout=1"},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Authorization": {"Basic eDp5"},
		"Te":                  {"trailers"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"websocket"},
		"Host":                {"evil.example"},
		"Content-Length":      {"999"},
	}
	resp, err := h.Invoke(context.Background(), runner.Call{
		Key: "A", Method: http.MethodPut, Path: "Producer/Add?x=1&y=a%26b", Header: hdr, Body: []byte(`{"name":"Coca-Cola"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusCreated || string(resp.Body) != `{"ok":true}` {
		t.Fatalf("got %d %s", resp.Status, resp.Body)
	}
	got := seen()
	if len(got) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(got))
	}
	r := got[0]
	checks := []struct{ what, got, want string }{
		{"method", r.Method, http.MethodPut},
		{"request URI", r.RequestURI, "/api/Producer/Add?x=1&y=a%26b"},
		{"query y", r.Query.Get("y"), "a&b"},
		{"body", r.Body, `{"name":"Coca-Cola"}`},
		{"Content-Type", r.Header.Get("Content-Type"), "application/json"},
		{"Accept", r.Header.Get("Accept"), "application/json"},
		{"Authorization", r.Header.Get("Authorization"), "Bearer step"},
		{"X-Multi", strings.Join(r.Header.Values("X-Multi"), ","), "a,b"},
		{"Cookie", r.Header.Get("Cookie"), "mine=1"},
		{"Connection", r.Header.Get("Connection"), ""},
		{"Keep-Alive", r.Header.Get("Keep-Alive"), ""},
		{"Proxy-Connection", r.Header.Get("Proxy-Connection"), ""},
		{"Proxy-Authorization", r.Header.Get("Proxy-Authorization"), ""},
		{"Te", r.Header.Get("Te"), ""},
		{"Upgrade", r.Header.Get("Upgrade"), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: upstream saw %q, want %q", c.what, c.got, c.want)
		}
	}
	if hdr.Get("Content-Type") != "" || len(hdr) != 12 {
		t.Errorf("the call's header map was modified: %v", hdr)
	}
}

func TestHTTPInvokerStepContentTypeWins(t *testing.T) {
	srv, seen := recordingServer(t, nil)
	h := newInvoker(t, srv.URL, HTTPConfig{})
	_, err := h.Invoke(context.Background(), runner.Call{Path: "x", Body: []byte(`{}`),
		Header: http.Header{"Content-Type": {"application/vnd.api+json"}, "Accept": {"*/*"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := seen()[0]
	if r.Header.Get("Content-Type") != "application/vnd.api+json" || r.Header.Get("Accept") != "*/*" {
		t.Fatalf("upstream saw Content-Type %q, Accept %q", r.Header.Get("Content-Type"), r.Header.Get("Accept"))
	}
	if r.Method != http.MethodPost {
		t.Fatalf("default method %q, want POST", r.Method)
	}
}

func TestHTTPInvokerNoBody(t *testing.T) {
	srv, seen := recordingServer(t, nil)
	h := newInvoker(t, srv.URL, HTTPConfig{})
	if _, err := h.Invoke(context.Background(), runner.Call{Method: http.MethodGet, Path: "users"}); err != nil {
		t.Fatal(err)
	}
	r := seen()[0]
	if r.Body != "" || r.Header.Get("Content-Type") != "" {
		t.Fatalf("a call without body sent %q with Content-Type %q", r.Body, r.Header.Get("Content-Type"))
	}
}

func TestHTTPInvokerJoinsBasePath(t *testing.T) {
	tests := []struct{ base, step, want string }{
		{"/api/", "Producer/Add", "/api/Producer/Add"},
		{"/api", "Producer/Add", "/api/Producer/Add"},
		{"/api", "/Producer/Add", "/api/Producer/Add"},
		{"", "Producer/Add", "/Producer/Add"},
		{"/", "Producer/Add", "/Producer/Add"},
		{"/a/b/", "users?active=1", "/a/b/users?active=1"},
		{"/api/", "users/a%2Fb", "/api/users/a%2Fb"},
		{"/api/", "users/a%2fb/x%20y", "/api/users/a%2fb/x%20y"},
		{"/api/", "users/a b", "/api/users/a%20b"},
		{"/api/", "users/ü", "/api/users/%C3%BC"},
		{"/api/", "users/100%", "/api/users/100%25"},
		{"/api/", "users/%zz", "/api/users/%25zz"},
		{"/api/", "q?a=b c&d=%2F#frag", "/api/q?a=b%20c&d=%2F%23frag"},
		{"/api%2Fv1/", "x", "/api%2Fv1/x"},
		{"/api/", "", "/api/"},
	}
	srv, seen := recordingServer(t, nil)
	for i, tt := range tests {
		t.Run(tt.base+"+"+tt.step, func(t *testing.T) {
			h := newInvoker(t, srv.URL+tt.base, HTTPConfig{})
			if _, err := h.Invoke(context.Background(), runner.Call{Path: tt.step}); err != nil {
				t.Fatal(err)
			}
			if got := seen()[i].RequestURI; got != tt.want {
				t.Fatalf("upstream saw %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHTTPInvokerRefusesDotSegments(t *testing.T) {
	srv, seen := recordingServer(t, nil)
	h := newInvoker(t, srv.URL+"/api/", HTTPConfig{})
	for _, p := range []string{"..", "../admin", "a/./b", "a/%2e%2E/b", "a%2F..%2Fb", "x/.."} {
		if _, err := h.Invoke(context.Background(), runner.Call{Path: p}); err == nil {
			t.Errorf("path %q was sent", p)
		}
	}
	if n := len(seen()); n != 0 {
		t.Fatalf("upstream saw %d requests", n)
	}
}

func TestHTTPInvokerHeadersDoNotLeak(t *testing.T) {
	srv, seen := recordingServer(t, nil)
	h := newInvoker(t, srv.URL, HTTPConfig{})
	calls := []http.Header{
		{"Authorization": {"Bearer one"}, "X-Step": {"1"}},
		{"Authorization": {"Bearer two"}},
		nil,
	}
	for _, hdr := range calls {
		if _, err := h.Invoke(context.Background(), runner.Call{Path: "x", Header: hdr}); err != nil {
			t.Fatal(err)
		}
	}
	got := seen()
	for i, want := range []string{"Bearer one", "Bearer two", ""} {
		if a := got[i].Header.Get("Authorization"); a != want {
			t.Errorf("call %d: Authorization %q, want %q", i, a, want)
		}
	}
	if got[1].Header.Get("X-Step") != "" || got[2].Header.Get("X-Step") != "" {
		t.Errorf("X-Step leaked to a later call")
	}
}

func TestHTTPInvokerReturnsRedirects(t *testing.T) {
	var targetHits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) { targetHits.Add(1) })
	mux.HandleFunc("/from", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/target", http.StatusFound)
	})
	mux.HandleFunc("/see-other", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://elsewhere.invalid/")
		w.WriteHeader(http.StatusSeeOther)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	h := newInvoker(t, srv.URL, HTTPConfig{})
	for _, tt := range []struct {
		path   string
		status int
	}{{"from", http.StatusFound}, {"see-other", http.StatusSeeOther}} {
		resp, err := h.Invoke(context.Background(), runner.Call{Method: http.MethodGet, Path: tt.path})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != tt.status {
			t.Errorf("%s: status %d, want %d", tt.path, resp.Status, tt.status)
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Fatalf("redirect target hit %d times", n)
	}
}

func TestHTTPInvokerBodies(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		ct         string
		body       string
		wantStatus int
		want       string
	}{
		{"5xx passed through", 503, "application/json", `{"ok":false}`, 503, `{"ok":false}`},
		{"404 html", 404, "text/html", "<h1>Not Found</h1>", 404, `"<h1>Not Found</h1>"`},
		{"text", 200, "text/plain; charset=utf-8", "hello", 200, `"hello"`},
		{"empty", 204, "", "", 204, `null`},
		{"empty json", 200, "application/json", "", 200, `null`},
		{"invalid json", 200, "application/json", `{"ok":`, 200, `"{\"ok\":"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := recordingServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = []string{tt.ct} // set even when empty: no sniffing
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			h := newInvoker(t, srv.URL, HTTPConfig{})
			resp, err := h.Invoke(context.Background(), runner.Call{Path: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tt.wantStatus || string(resp.Body) != tt.want {
				t.Fatalf("got %d %s, want %d %s", resp.Status, resp.Body, tt.wantStatus, tt.want)
			}
		})
	}
}

// countingTransport counts the response body bytes the invoker reads.
type countingTransport struct {
	base http.RoundTripper
	read atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{resp.Body, &c.read}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func TestHTTPInvokerTooLarge(t *testing.T) {
	const limit = 1000
	const total = 64 << 20 // far more than socket buffers hold: the server cannot finish unless we read it all
	for _, declared := range []bool{false, true} {
		name := map[bool]string{false: "chunked", true: "content-length"}[declared]
		t.Run(name, func(t *testing.T) {
			var written atomic.Int64
			done := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(done)
				w.Header().Set("Content-Type", "application/json")
				if declared {
					w.Header().Set("Content-Length", "67108864")
				}
				chunk := []byte(strings.Repeat("x", 32<<10))
				for written.Load() < total {
					n, err := w.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
			}))
			defer srv.Close()
			ct := &countingTransport{base: NewUpstreamTransport(0)}
			h := newInvoker(t, srv.URL, HTTPConfig{Transport: ct, MaxResponseBytes: limit})
			_, err := h.Invoke(context.Background(), runner.Call{Path: "big"})
			wantInvokeError(t, err, "too_large")
			if n := ct.read.Load(); n > limit+1 {
				t.Errorf("read %d body bytes, want at most %d", n, limit+1)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("server handler still writing: the connection was not closed")
			}
			if n := written.Load(); n >= total {
				t.Errorf("server wrote the whole %d-byte body: the invoker consumed it", n)
			}
		})
	}
}

func TestHTTPInvokerAtTheCap(t *testing.T) {
	body := `"` + strings.Repeat("x", 998) + `"` // exactly 1000 bytes
	srv, _ := recordingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	})
	h := newInvoker(t, srv.URL, HTTPConfig{MaxResponseBytes: 1000})
	resp, err := h.Invoke(context.Background(), runner.Call{Path: "x"})
	if err != nil || string(resp.Body) != body {
		t.Fatalf("a body of exactly the cap: %v, %d bytes", err, len(resp.Body))
	}
}

func TestHTTPInvokerConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := newInvoker(t, "http://"+addr+"/api/", HTTPConfig{})
	_, err = h.Invoke(context.Background(), runner.Call{Path: "x", Body: []byte(`{}`)})
	wantInvokeError(t, err, "connect")
}

// hijackServer hands the raw connection to serve after reading the request head.
func hijackServer(t *testing.T, serve func(net.Conn, *bufio.ReadWriter)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		serve(conn, rw)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPInvokerBrokenConnections(t *testing.T) {
	tests := []struct {
		name  string
		serve func(net.Conn, *bufio.ReadWriter)
		kind  string
	}{
		{"closed before answering", func(c net.Conn, rw *bufio.ReadWriter) {}, "reset"},
		{"closed mid-body", func(c net.Conn, rw *bufio.ReadWriter) {
			_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ok\":")
			_ = rw.Flush()
		}, "reset"},
		{"reset mid-body", func(c net.Conn, rw *bufio.ReadWriter) {
			_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\":")
			_ = rw.Flush()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // close sends RST
			}
		}, "reset"},
		{"malformed status line", func(c net.Conn, rw *bufio.ReadWriter) {
			_, _ = rw.WriteString("SPDY/9 banana\r\n\r\n")
			_ = rw.Flush()
		}, "protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := hijackServer(t, tt.serve)
			h := newInvoker(t, srv.URL, HTTPConfig{})
			_, err := h.Invoke(context.Background(), runner.Call{Path: "x", Body: []byte(`{}`)})
			wantInvokeError(t, err, tt.kind)
		})
	}
}

func TestHTTPInvokerHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow-body" {
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, `{"ok":`)
			http.NewResponseController(w).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	h := newInvoker(t, srv.URL, HTTPConfig{})
	for _, p := range []string{"slow-head", "slow-body"} {
		t.Run(p, func(t *testing.T) {
			cause := errors.New("step timeout")
			ctx, cancel := context.WithTimeoutCause(context.Background(), 50*time.Millisecond, cause)
			defer cancel()
			start := time.Now()
			_, err := h.Invoke(ctx, runner.Call{Path: p})
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("returned after %v", d)
			}
			var ie *runner.InvokeError
			if errors.As(err, &ie) {
				t.Fatalf("a context timeout became %v", err)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v, want one wrapping context.DeadlineExceeded", err)
			}
			if context.Cause(ctx) != cause {
				t.Fatalf("cause %v", context.Cause(ctx))
			}
		})
	}
}

func TestHTTPInvokerReusesConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	h := newInvoker(t, srv.URL, HTTPConfig{})
	const parallel, rounds = 32, 10
	for range rounds {
		var wg sync.WaitGroup
		for range parallel {
			wg.Go(func() {
				if _, err := h.Invoke(context.Background(), runner.Call{Path: "x", Body: []byte(`{}`)}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	if n := conns.Load(); n > parallel*2 {
		t.Fatalf("%d connections for %d calls at most %d at a time: the idle pool is too small", n, parallel*rounds, parallel)
	}
}

func TestNewHTTPInvokerValidatesBase(t *testing.T) {
	tests := []struct {
		base string
		ok   bool
	}{
		{"http://127.0.0.1:9000/api/", true},
		{"https://api.example.com", true},
		{"http://[::1]:80/x", true},
		{"ftp://example.com/", false},
		{"/relative/path", false},
		{"http:///nohost", false},
		{"mailto:x@example.com", false},
		{"http://user:pass@example.com/", false},
		{"http://example.com/?q=1", false},
		{"http://example.com/?", false},
		{"http://example.com/#frag", false},
	}
	for _, tt := range tests {
		_, err := NewHTTPInvoker(HTTPConfig{Base: mustParse(t, tt.base)})
		if (err == nil) != tt.ok {
			t.Errorf("NewHTTPInvoker(%q): error %v, want ok=%v", tt.base, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "pass") {
			t.Errorf("error %q shows the password", err)
		}
	}
	if _, err := NewHTTPInvoker(HTTPConfig{}); err == nil {
		t.Error("nil Base accepted")
	}
}

func TestNewHTTPInvokerDoesNotAliasBase(t *testing.T) {
	base := mustParse(t, "http://127.0.0.1:1/api/")
	h, err := NewHTTPInvoker(HTTPConfig{Base: base})
	if err != nil {
		t.Fatal(err)
	}
	base.Host = "evil.example"
	u, err := h.url("x")
	if err != nil || u.Host != "127.0.0.1:1" {
		t.Fatalf("url after the caller changed its Base: %v, %v", u, err)
	}
}

func TestNewUpstreamTransport(t *testing.T) {
	tr := NewUpstreamTransport(0)
	if tr.Proxy != nil {
		t.Error("proxy taken from the environment")
	}
	if tr.MaxIdleConnsPerHost < 64 || tr.IdleConnTimeout != 90*time.Second {
		t.Errorf("MaxIdleConnsPerHost %d, IdleConnTimeout %v", tr.MaxIdleConnsPerHost, tr.IdleConnTimeout)
	}
	if tr == http.DefaultTransport {
		t.Error("shares the global transport")
	}
	if n := NewUpstreamTransport(500).MaxIdleConnsPerHost; n != 500 {
		t.Errorf("MaxIdleConnsPerHost %d, want 500", n)
	}
}

// FuzzURLHost: whatever the step path, a URL the invoker builds stays on the base host, under the base path.
func FuzzURLHost(f *testing.F) {
	for _, s := range []string{
		"Producer/Add", "users?active=1", "//evil.com/x", "/\\evil.com", "http://evil.com/", "@evil.com",
		"..%2F..%2Fadmin", "a%2Fb", "%", "%zz", "a?b#c", "?x", "#x", ":80/x", "users/ü/ %00", "./a", "a/../../b",
		"%2e%2e/x", "\x00\r\n", "a//b",
	} {
		f.Add(s)
	}
	bases := []*HTTPInvoker{}
	for _, b := range []string{"http://127.0.0.1:9000/api/", "https://example.com", "http://h:1/a%2Fb/c"} {
		bases = append(bases, newInvoker(f, b, HTTPConfig{}))
	}
	f.Fuzz(func(t *testing.T, step string) {
		for _, h := range bases {
			u, err := h.url(step)
			if err != nil {
				continue
			}
			// The URL as it goes on the wire, parsed back as the client does.
			s := u.String()
			back, err := url.Parse(s)
			if err != nil {
				t.Fatalf("url(%q) = %q does not parse: %v", step, s, err)
			}
			if back.Scheme != h.base.Scheme || back.Host != h.base.Host || back.User != nil || back.Fragment != "" {
				t.Fatalf("url(%q) = %q leaves %s://%s", step, s, h.base.Scheme, h.base.Host)
			}
			if !strings.HasPrefix(back.EscapedPath(), h.rawBase) {
				t.Fatalf("url(%q) = %q: path %q not under %q", step, s, back.EscapedPath(), h.rawBase)
			}
			if back.EscapedPath() != u.EscapedPath() {
				t.Fatalf("url(%q) = %q: escaped path changed from %q to %q", step, s, u.EscapedPath(), back.EscapedPath())
			}
			if hasDotSegment(back.Path) {
				t.Fatalf("url(%q) = %q: dot segment in %q", step, s, back.Path)
			}
			if _, err := http.NewRequest(http.MethodPost, s, nil); err != nil {
				t.Fatalf("url(%q) = %q: NewRequest: %v", step, s, err)
			}
		}
	})
}

func BenchmarkHTTPInvoke(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"result":{"new_id":1}}`)
	}))
	defer srv.Close()
	h := newInvoker(b, srv.URL+"/api/", HTTPConfig{})
	call := runner.Call{Key: "A", Method: http.MethodPost, Path: "Producer/Add",
		Header: http.Header{"Authorization": {"Bearer x"}}, Body: []byte(`{"name":"Coca-Cola"}`)}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Invoke(ctx, call); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestHTTPInvokerHead(t *testing.T) {
	srv, _ := recordingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "67108864") // what a GET would carry: not over the cap for a HEAD
		w.WriteHeader(http.StatusOK)
	})
	h := newInvoker(t, srv.URL, HTTPConfig{MaxResponseBytes: 1000})
	resp, err := h.Invoke(context.Background(), runner.Call{Method: http.MethodHead, Path: "x"})
	if err != nil || resp.Status != 200 || string(resp.Body) != "null" {
		t.Fatalf("HEAD: %d %s %v", resp.Status, resp.Body, err)
	}
}

func TestHTTPInvokerTLSFailureIsConnect(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshake is expected
	srv.StartTLS()
	defer srv.Close()
	h := newInvoker(t, srv.URL, HTTPConfig{}) // the default client does not trust the test certificate
	_, err := h.Invoke(context.Background(), runner.Call{Path: "x", Body: []byte(`{}`)})
	wantInvokeError(t, err, "connect")
	if hits.Load() != 0 {
		t.Fatal("the request reached the handler")
	}
}

package transport_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// The demo API takes the direct path in demo mode.
var _ transport.DirectHandler = (*demoapi.API)(nil)

// directFunc is a DirectHandler (and, to be given to NewInProcessInvoker, an http.Handler that must not be used).
type directFunc func(ctx context.Context, method, path, rawQuery string, header http.Header, body []byte) (int, []byte)

func (f directFunc) ServeCall(ctx context.Context, method, path, rawQuery string, header http.Header, body []byte) (int, []byte) {
	return f(ctx, method, path, rawQuery, header, body)
}

func (directFunc) ServeHTTP(http.ResponseWriter, *http.Request) {
	panic("ServeHTTP called on a DirectHandler")
}

// TestInProcessInvokerDirectAgrees sends the same calls to the demo API through ServeCall and, with ServeCall
// hidden, through ServeHTTP: every answer must be the same.
func TestInProcessInvokerDirectAgrees(t *testing.T) {
	now := func() time.Time { return time.Unix(1758289402, 0) }
	direct := transport.NewInProcessInvoker(demoapi.New(demoapi.Config{Now: now}), 0)
	viaHTTP := transport.NewInProcessInvoker(http.HandlerFunc(demoapi.New(demoapi.Config{Now: now}).ServeHTTP), 0)
	hdr := http.Header{"Authorization": {"Bearer x"}, "Connection": {"close"}}
	calls := []runner.Call{
		{Key: "a", Path: "Producer/Add", Body: []byte(`{"name":"Coca-Cola"}`), Header: hdr},
		{Key: "b", Path: "Producer/Add", Body: []byte(`{"name":"x"}`), Method: http.MethodPost},
		{Key: "c", Path: "Producer/Get?limit=1", Body: []byte(`{"ids":[1,2]}`)},
		{Key: "d", Path: "Producer/Edit", Body: []byte(`{"id":2,"name":"y"}`)},
		{Key: "e", Path: "Producer/Delete", Body: []byte(`{"ids":[1]}`)},
		{Key: "f", Path: "Demo/Echo", Body: []byte(`{"n":1}`)},
		{Key: "g", Path: "/Demo/Echo", Body: []byte(`1`)},
		{Key: "h", Path: "Demo%2FEcho", Body: []byte(`"escaped slash"`)},
		{Key: "i", Path: "Demo/Echo"},
		{Key: "j", Path: "Demo/Echo", Body: []byte(`{"a"`)},
		{Key: "k", Path: "Demo/Echo", Method: http.MethodGet},
		{Key: "l", Path: "Demo/Fail", Body: []byte(`{"status":502}`)},
		{Key: "m", Path: "Nope/Nope"},
		{Key: "n", Path: "Demo/Echo", Body: []byte(`"` + strings.Repeat("x", demoapi.MaxPayloadBytes) + `"`)},
		{Key: "o", Path: "Demo/Echo", Body: []byte("\"\xff\"")},
	}
	for _, c := range calls {
		d, derr := direct.Invoke(context.Background(), c)
		h, herr := viaHTTP.Invoke(context.Background(), c)
		if (derr == nil) != (herr == nil) || d.Status != h.Status || string(d.Body) != string(h.Body) {
			t.Errorf("%s %s: direct %d %.100s %v; via HTTP %d %.100s %v", c.Key, c.Path, d.Status, d.Body, derr,
				h.Status, h.Body, herr)
		}
	}
	for _, path := range []string{"Demo/./Echo", "Demo/../x"} {
		_, derr := direct.Invoke(context.Background(), runner.Call{Path: path})
		_, herr := viaHTTP.Invoke(context.Background(), runner.Call{Path: path})
		if derr == nil || herr == nil {
			t.Errorf("%s: direct %v, via HTTP %v: want both refused", path, derr, herr)
		}
	}
}

func TestInProcessInvokerDirectCall(t *testing.T) {
	type seen struct {
		method, path, query string
		header              http.Header
		body                string
	}
	var got seen
	h := directFunc(func(_ context.Context, method, path, rawQuery string, header http.Header, body []byte) (int, []byte) {
		got = seen{method, path, rawQuery, header, string(body)}
		return 0, []byte(`{"ok":true}`)
	})
	inv := transport.NewInProcessInvoker(h, 0)

	clean := http.Header{"Authorization": {"Bearer x"}}
	resp, err := inv.Invoke(context.Background(), runner.Call{Path: "a%20b/c?q=1 2", Header: clean, Body: []byte(`{}`)})
	if err != nil || resp.Status != 200 || string(resp.Body) != `{"ok":true}` {
		t.Fatalf("got %d %s %v", resp.Status, resp.Body, err)
	}
	want := seen{http.MethodPost, "/a b/c", "q=1%202", clean, `{}`}
	if got.method != want.method || got.path != want.path || got.query != want.query || got.body != want.body {
		t.Fatalf("handler saw %+v, want %+v", got, want)
	}
	if len(got.header) != 1 || got.header.Get("Authorization") != "Bearer x" {
		t.Fatalf("header %v", got.header)
	}

	dirty := http.Header{"Authorization": {"Bearer x"}, "Connection": {"close"}, "x-lower": {"v"}, "Empty": {}}
	if _, err := inv.Invoke(context.Background(), runner.Call{Method: http.MethodPut, Path: "x", Header: dirty}); err != nil {
		t.Fatal(err)
	}
	if got.method != http.MethodPut || got.body != "" || len(got.header) != 2 || got.header.Get("X-Lower") != "v" ||
		got.header.Get("Authorization") != "Bearer x" {
		t.Fatalf("handler saw %s %q header %v", got.method, got.body, got.header)
	}
	got.header.Set("Authorization", "changed")
	if dirty.Get("Authorization") != "Bearer x" || len(dirty) != 4 {
		t.Fatalf("the call's header changed: %v", dirty)
	}
}

func TestInProcessInvokerDirectTooLargeAndText(t *testing.T) {
	answer := []byte(`"0123456789"`)
	h := directFunc(func(context.Context, string, string, string, http.Header, []byte) (int, []byte) { return 201, answer })
	_, err := transport.NewInProcessInvoker(h, int64(len(answer)-1)).Invoke(context.Background(), runner.Call{Path: "x"})
	var ie *runner.InvokeError
	if !errors.As(err, &ie) || ie.Kind != "too_large" {
		t.Fatalf("error %v, want InvokeError too_large", err)
	}
	resp, err := transport.NewInProcessInvoker(h, int64(len(answer))).Invoke(context.Background(), runner.Call{Path: "x"})
	if err != nil || resp.Status != 201 || string(resp.Body) != string(answer) {
		t.Fatalf("at the cap: %d %s %v", resp.Status, resp.Body, err)
	}
	answer = []byte("not json")
	resp, _ = transport.NewInProcessInvoker(h, 0).Invoke(context.Background(), runner.Call{Path: "x"})
	if string(resp.Body) != `"not json"` {
		t.Fatalf("non-JSON answer: %s", resp.Body)
	}
}

func TestInProcessInvokerDirectCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := directFunc(func(context.Context, string, string, string, http.Header, []byte) (int, []byte) {
		cancel()
		return 200, []byte(`{}`)
	})
	_, err := transport.NewInProcessInvoker(h, 0).Invoke(ctx, runner.Call{Path: "x"})
	var ie *runner.InvokeError
	if !errors.Is(err, context.Canceled) || errors.As(err, &ie) {
		t.Fatalf("error %v, want context.Canceled, not an InvokeError", err)
	}
}

func TestInProcessInvokerDirectPanicPropagates(t *testing.T) {
	h := directFunc(func(context.Context, string, string, string, http.Header, []byte) (int, []byte) { panic("boom") })
	defer func() {
		if recover() != "boom" {
			t.Fatal("panic not propagated")
		}
	}()
	_, _ = transport.NewInProcessInvoker(h, 0).Invoke(context.Background(), runner.Call{Path: "x"})
}

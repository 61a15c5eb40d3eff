package transport_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

func TestInProcessInvokerDemoAPI(t *testing.T) {
	inv := transport.NewInProcessInvoker(demoapi.New(demoapi.Config{Now: func() time.Time { return time.Unix(1758289402, 0) }}), 0)
	ctx := context.Background()

	add, err := inv.Invoke(ctx, runner.Call{Key: "ProducerAdd", Path: "Producer/Add", Body: []byte(`{"name":"Coca-Cola"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if add.Status != 200 || string(add.Body) != `{"ok":true,"result":{"new_id":1}}` {
		t.Fatalf("Producer/Add: %d %s", add.Status, add.Body)
	}
	get, err := inv.Invoke(ctx, runner.Call{Key: "ProducerGet", Path: "Producer/Get", Body: []byte(`{"ids":[1]}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ok":true,"result":[{"id":1,"name":"Coca-Cola","last_update":1758289402}],"next_offset":0,"total":1}`
	if get.Status != 200 || string(get.Body) != want {
		t.Fatalf("Producer/Get: %d %s, want %s", get.Status, get.Body, want)
	}

	tests := []struct {
		name   string
		call   runner.Call
		status int
		want   string
	}{
		{"validation error", runner.Call{Path: "Producer/Add", Body: []byte(`{}`)}, 200,
			`{"ok":false,"result":{"error":1008,"description":"name: required, a non-empty string"}}`},
		{"unknown method", runner.Call{Path: "Producer/Nope"}, 404,
			`{"ok":false,"result":{"error":4040,"description":"unknown method \"Producer/Nope\""}}`},
		{"leading slash", runner.Call{Path: "/Demo/Echo", Body: []byte(`1`)}, 200, `{"ok":true,"result":1}`},
		{"no body", runner.Call{Path: "Demo/Echo"}, 200, `{"ok":true,"result":null}`},
		{"GET", runner.Call{Method: http.MethodGet, Path: "Demo/Echo"}, 405,
			`{"ok":false,"result":{"error":4050,"description":"Demo/Echo accepts POST only"}}`},
		{"fail with status", runner.Call{Path: "Demo/Fail", Body: []byte(`{"status":503}`)}, 503,
			`{"ok":false,"result":{"error":1000,"description":"Demo/Fail: failure on request"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := inv.Invoke(ctx, tt.call)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tt.status || string(resp.Body) != tt.want {
				t.Fatalf("got %d %s, want %d %s", resp.Status, resp.Body, tt.status, tt.want)
			}
		})
	}
}

func TestInProcessInvokerRequest(t *testing.T) {
	var got *http.Request
	var gotBody string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.Header().Set("Set-Cookie", "a=b")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "plain text")
	})
	hdr := http.Header{"Authorization": {"Bearer x"}, "X-Request-Id": {"r1"}, "Connection": {"close"}}
	resp, err := transport.NewInProcessInvoker(h, 0).Invoke(context.Background(), runner.Call{
		Method: http.MethodPut, Path: "users/a%2Fb?active=1&q=x y", Header: hdr, Body: []byte(`{"a":1}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusAccepted || string(resp.Body) != `"plain text"` {
		t.Fatalf("got %d %s", resp.Status, resp.Body)
	}
	checks := []struct{ what, got, want string }{
		{"method", got.Method, http.MethodPut},
		{"path", got.URL.Path, "/users/a/b"},
		{"escaped path", got.URL.EscapedPath(), "/users/a%2Fb"},
		{"RequestURI", got.RequestURI, "/users/a%2Fb?active=1&q=x%20y"},
		{"query", got.URL.Query().Get("q"), "x y"},
		{"body", gotBody, `{"a":1}`},
		{"Authorization", got.Header.Get("Authorization"), "Bearer x"},
		{"X-Request-Id", got.Header.Get("X-Request-Id"), "r1"},
		{"Connection", got.Header.Get("Connection"), ""},
		{"Content-Type", got.Header.Get("Content-Type"), "application/json"},
		{"Accept", got.Header.Get("Accept"), "application/json"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: handler saw %q, want %q", c.what, c.got, c.want)
		}
	}
	if got.ContentLength != 7 {
		t.Errorf("ContentLength %d, want 7", got.ContentLength)
	}
	if len(hdr) != 3 || hdr.Get("Content-Type") != "" {
		t.Errorf("the call's header map was modified: %v", hdr)
	}
}

func TestInProcessInvokerDefaults(t *testing.T) {
	tests := []struct {
		name   string
		h      http.HandlerFunc
		status int
		body   string
	}{
		{"writes nothing", func(w http.ResponseWriter, r *http.Request) {}, 200, `null`},
		{"writes without status", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`[1]`)) }, 200, `[1]`},
		{"status written twice", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusTeapot)
		}, 201, `null`},
		{"informational first", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusConflict)
		}, 409, `null`},
		{"flushes", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"a"`)
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			_, _ = io.WriteString(w, `:1}`)
		}, 200, `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := transport.NewInProcessInvoker(tt.h, 0).Invoke(context.Background(), runner.Call{Path: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tt.status || string(resp.Body) != tt.body {
				t.Fatalf("got %d %s, want %d %s", resp.Status, resp.Body, tt.status, tt.body)
			}
		})
	}
}

func TestInProcessInvokerCancellation(t *testing.T) {
	inv := transport.NewInProcessInvoker(demoapi.New(demoapi.Config{}), 0)
	cause := errors.New("step timeout")
	ctx, cancel := context.WithTimeoutCause(context.Background(), 20*time.Millisecond, cause)
	defer cancel()
	start := time.Now()
	_, err := inv.Invoke(ctx, runner.Call{Path: "Demo/Sleep", Body: []byte(`{"ms":60000}`)})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Demo/Sleep returned after %v: the context did not reach the handler", d)
	}
	var ie *runner.InvokeError
	if errors.As(err, &ie) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if context.Cause(ctx) != cause {
		t.Fatalf("cause %v", context.Cause(ctx))
	}
}

func TestInProcessInvokerTooLarge(t *testing.T) {
	var writeErr error
	var written int
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 300))
		for range 100 {
			n, err := w.Write(chunk)
			written += n
			if err != nil {
				writeErr = err
				return
			}
		}
	})
	_, err := transport.NewInProcessInvoker(h, 1000).Invoke(context.Background(), runner.Call{Path: "x"})
	var ie *runner.InvokeError
	if !errors.As(err, &ie) || ie.Kind != "too_large" {
		t.Fatalf("error %v, want InvokeError too_large", err)
	}
	if writeErr == nil || written != 1000 {
		t.Fatalf("handler wrote %d bytes, last error %v: want Write to refuse past 1000", written, writeErr)
	}

	// Exactly at the cap is fine.
	exact := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `"`+strings.Repeat("x", 998)+`"`)
	})
	resp, err := transport.NewInProcessInvoker(exact, 1000).Invoke(context.Background(), runner.Call{Path: "x"})
	if err != nil || len(resp.Body) != 1000 {
		t.Fatalf("a body of exactly the cap: %v, %d bytes", err, len(resp.Body))
	}
}

func TestInProcessInvokerPanicPropagates(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want the handler's panic", r)
		}
	}()
	_, _ = transport.NewInProcessInvoker(h, 0).Invoke(context.Background(), runner.Call{Path: "x"})
	t.Fatal("Invoke returned")
}

func TestInProcessInvokerRefusesDotSegments(t *testing.T) {
	called := false
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true })
	for _, p := range []string{"../x", "a/%2e%2e/b", "./a"} {
		if _, err := transport.NewInProcessInvoker(h, 0).Invoke(context.Background(), runner.Call{Path: p}); err == nil {
			t.Errorf("path %q was served", p)
		}
	}
	if called {
		t.Fatal("handler called")
	}
}

func TestInProcessInvokerDoubleSlashIsAPath(t *testing.T) {
	var host, path string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { host, path = r.URL.Host, r.URL.Path })
	if _, err := transport.NewInProcessInvoker(h, 0).Invoke(context.Background(), runner.Call{Path: "//evil.example/x"}); err != nil {
		t.Fatal(err)
	}
	if host != "" || path != "/evil.example/x" {
		t.Fatalf("handler saw host %q path %q", host, path)
	}
}

func BenchmarkInProcessInvoke(b *testing.B) {
	inv := transport.NewInProcessInvoker(demoapi.New(demoapi.Config{}), 0)
	call := runner.Call{Key: "echo", Method: http.MethodPost, Name: "Demo/Echo", Path: "Demo/Echo",
		Header: http.Header{"Authorization": {"Bearer x"}}, Body: []byte(`{"name":"Coca-Cola","ids":[1,2,3]}`)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inv.Invoke(ctx, call); err != nil {
			b.Fatal(err)
		}
	}
}

// ExampleInProcessInvoker dispatches a step to the caller's own handler, in process.
func ExampleInProcessInvoker() {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Greeting/Say", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "bad payload", http.StatusBadRequest) // text/plain: becomes a JSON string
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": "hello, " + in.Name})
	})

	inv := transport.NewInProcessInvoker(mux, 1<<20)
	for _, body := range []string{`{"name":"Ada"}`, `not json`} {
		resp, err := inv.Invoke(context.Background(), runner.Call{
			Key: "greet", Method: http.MethodPost, Path: "Greeting/Say", Body: []byte(body),
		})
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("%d %s\n", resp.Status, strings.TrimSpace(string(resp.Body)))
	}
	// Output:
	// 200 {"ok":true,"result":"hello, Ada"}
	// 400 "bad payload\n"
}

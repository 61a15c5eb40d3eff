package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/batchd/batchd/runner"
)

// InProcessInvoker dispatches calls to an http.Handler in the same process, with no network hop: demo mode sends
// every step to the embedded demo API this way, and a library user can point it at their own handler.
//
// The handler sees a server-like request: the call's method (default POST) on "/"+path with the call's query and
// body, its headers (minus those no call may carry, planner.RefusedHeader), Content-Type and Accept
// application/json unless the call sets its own, Host "batchd.internal", and the call's context. A panic in the
// handler is not recovered: it propagates to the caller (the runner recovers each step). When the call's context
// ends before the handler returns, the context's error is returned, as a network invoker would. Safe for
// concurrent use when the handler is.
type InProcessInvoker struct {
	h        http.Handler
	maxBytes int64
}

var _ runner.Invoker = (*InProcessInvoker)(nil)

// NewInProcessInvoker returns an invoker calling h. maxResponseBytes caps what the handler may write (default
// DefaultMaxResponseBytes when not positive); past it the call fails with an *runner.InvokeError of kind
// "too_large".
func NewInProcessInvoker(h http.Handler, maxResponseBytes int64) *InProcessInvoker {
	if maxResponseBytes <= 0 {
		maxResponseBytes = DefaultMaxResponseBytes
	}
	return &InProcessInvoker{h: h, maxBytes: maxResponseBytes}
}

// Invoke serves c with the handler and returns its status and normalised body.
func (l *InProcessInvoker) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	method, body := methodAndBody(c)
	// splitStepPath trims leading slashes: "//host/x" must stay a path, never parse as an authority.
	rawPath, _, rawQuery, err := splitStepPath(c.Path)
	if err != nil {
		return runner.Response{}, err
	}
	target := "/" + rawPath
	if rawQuery != "" {
		target += "?" + rawQuery
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return runner.Response{}, fmt.Errorf("transport: step %s: %w", c.Key, err)
	}
	// What a server would set for a request it read off the wire; a server request's Body is never nil.
	if req.Body == nil {
		req.Body = http.NoBody
	}
	req.RequestURI = target
	req.Host = "batchd.internal"
	req.RemoteAddr = "127.0.0.1:0"
	copyHeader(req.Header, c.Header)
	if c.Body != nil && req.Header.Get("Content-Type") == "" {
		req.Header["Content-Type"] = []string{"application/json"}
	}
	if req.Header.Get("Accept") == "" {
		req.Header["Accept"] = []string{"application/json"}
	}

	buf, err := newCappedBuffer(-1, l.maxBytes, c.Budget)
	if err != nil {
		return runner.Response{}, err
	}
	w := &responseBuffer{header: make(http.Header, 1), body: buf}
	l.h.ServeHTTP(w, req)

	switch {
	case ctx.Err() != nil:
		buf.discard()
		return runner.Response{}, fmt.Errorf("transport: step %s: %w", c.Key, ctx.Err())
	case errors.Is(w.err, errOverCap):
		buf.discard()
		return runner.Response{}, &runner.InvokeError{Kind: "too_large",
			Err: fmt.Errorf("handler wrote over the %d-byte cap", l.maxBytes)}
	case w.err != nil:
		buf.discard()
		return runner.Response{}, w.err // a budget's refusal
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	if err := finalStatus(status); err != nil {
		buf.discard()
		return runner.Response{}, err
	}
	out, err := buf.body(w.header.Get("Content-Type"))
	if err != nil {
		return runner.Response{}, err
	}
	kept, err := captured(w.header, c)
	if err != nil {
		return runner.Response{}, err
	}
	return runner.Response{Status: status, Body: out, Header: kept}, nil
}

// responseBuffer is a minimal http.ResponseWriter that keeps the status, the headers and at most the cap of body
// bytes, each reserved from the call's budget. err is the first write error (past the cap, or a budget's refusal).
type responseBuffer struct {
	header http.Header
	status int
	body   *cappedBuffer
	err    error
}

func (w *responseBuffer) Header() http.Header { return w.header }

func (w *responseBuffer) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		return // informational: a final status is still to come
	}
	w.status = code
}

func (w *responseBuffer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.body.Write(p)
	w.err = err
	return n, err
}

// Flush is a no-op: everything is delivered when the handler returns. It exists so that handlers that flush work.
func (w *responseBuffer) Flush() {}

package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// InProcessInvoker dispatches calls to an http.Handler in the same process, with no network hop: demo mode sends
// every step to the embedded demo API this way, and a library user can point it at their own handler.
//
// When the handler is also a DirectHandler (the demo API is), calls go through ServeCall instead, with no request
// or response writer built. Otherwise the handler sees a server-like request: the call's method (default POST) on "/"+path with the call's query and
// body, its headers (minus hop-by-hop ones), Content-Type and Accept application/json unless the call sets its own,
// Host "batchd.internal", and the call's context. A panic in the handler
// is not recovered: it propagates to the caller (the runner recovers each step). When the call's context ends
// before the handler returns, the context's error is returned, as a network invoker would. Safe for concurrent use
// when the handler is.
type InProcessInvoker struct {
	h        http.Handler
	direct   DirectHandler // h, when it offers ServeCall
	prompt   PromptHandler // h, when it tells which calls are prompt
	maxBytes int64
}

// DirectHandler is an in-process handler that can answer a call without an http.Request and a ResponseWriter,
// which for small calls cost more than the call itself. ServeCall must answer as ServeHTTP would answer the request
// InProcessInvoker builds for the same call:
//
//   - method is the call's method (default POST);
//   - path is the URL path as ServeHTTP would see it in r.URL.Path (decoded, one leading "/"), rawQuery the
//     escaped query without "?";
//   - header is the call's headers, minus hop-by-hop ones, read-only and possibly shared with other calls; the
//     request ServeHTTP sees would also carry Content-Type and Accept application/json when the call sets none;
//   - body is the payload, nil for none, read-only;
//   - the answer's body is taken as Content-Type application/json (anything else still becomes a JSON string,
//     as NormalizeBody does); response headers are not returned, as an invoker drops them anyway.
//
// Like ServeHTTP it runs on the goroutine running the step, must honour ctx, and may panic (the runner recovers each step).
type DirectHandler interface {
	ServeCall(ctx context.Context, method, path, rawQuery string, header http.Header, body []byte) (status int, answer []byte)
}

// PromptHandler is a DirectHandler that can tell which calls it answers promptly: with no I/O and no waiting
// beyond short locks. InProcessInvoker then lets the runner run those steps without a goroutine and a step
// deadline of their own (runner.PromptInvoker), which for calls of a few microseconds cost more than the call.
// method and path are as ServeCall would get them; a handler that answers false for a call is always right.
type PromptHandler interface {
	DirectHandler
	Prompt(method, path string) bool
}

var _ runner.PromptInvoker = (*InProcessInvoker)(nil)

// NewInProcessInvoker returns an invoker calling h. maxResponseBytes caps what the handler may write (default
// DefaultMaxResponseBytes when not positive); past it the call fails with an *runner.InvokeError of kind
// "too_large".
func NewInProcessInvoker(h http.Handler, maxResponseBytes int64) *InProcessInvoker {
	if maxResponseBytes <= 0 {
		maxResponseBytes = DefaultMaxResponseBytes
	}
	direct, _ := h.(DirectHandler)
	prompt, _ := h.(PromptHandler)
	return &InProcessInvoker{h: h, direct: direct, prompt: prompt, maxBytes: maxResponseBytes}
}

// Prompt implements runner.PromptInvoker: a call is prompt when the handler is a PromptHandler that says so for
// the path ServeCall would get.
func (l *InProcessInvoker) Prompt(method, path string) bool {
	if l.prompt == nil {
		return false
	}
	_, decoded, _, err := splitStepPath(path)
	return err == nil && l.prompt.Prompt(method, "/"+decoded)
}

// errTooLarge is what Write returns past the cap, so that a handler that checks stops writing.
var errTooLarge = errors.New("transport: response over the size cap")

// Invoke serves c with the handler and returns its status and normalised body.
func (l *InProcessInvoker) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	method := c.Method
	if method == "" {
		method = http.MethodPost
	}
	if l.direct != nil {
		return l.invokeDirect(ctx, method, c)
	}
	var body io.Reader
	if c.Body != nil {
		body = bytes.NewReader(c.Body)
	}
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
	return runner.Response{Status: status, Body: out}, nil
}

// invokeDirect serves c through DirectHandler.ServeCall.
func (l *InProcessInvoker) invokeDirect(ctx context.Context, method string, c runner.Call) (runner.Response, error) {
	_, decoded, rawQuery, err := splitStepPath(c.Path)
	if err != nil {
		return runner.Response{}, err
	}
	status, body := l.direct.ServeCall(ctx, method, "/"+decoded, rawQuery, callHeader(c.Header), c.Body)
	if err := ctx.Err(); err != nil {
		return runner.Response{}, fmt.Errorf("transport: step %s: %w", c.Key, err)
	}
	if int64(len(body)) > l.maxBytes {
		return runner.Response{}, &runner.InvokeError{Kind: "too_large",
			Err: fmt.Errorf("handler answered over the %d-byte cap", l.maxBytes)}
	}
	if status == 0 {
		status = http.StatusOK
	}
	if err := finalStatus(status); err != nil {
		return runner.Response{}, err
	}
	// The handler allocated the answer itself: it is reserved once it exists, before it is kept.
	if err := reserve(c.Budget, int64(cap(body))); err != nil {
		return runner.Response{}, err
	}
	buf := &cappedBuffer{buf: body, max: l.maxBytes, bud: c.Budget}
	out, err := buf.body("application/json")
	if err != nil {
		return runner.Response{}, err
	}
	return runner.Response{Status: status, Body: out}, nil
}

// callHeader is h as copyHeader would copy it: h itself, shared, when copying would change nothing (canonical
// names, none skipped: the usual case, checked without allocating), else a filtered copy.
func callHeader(h http.Header) http.Header {
	clean := true
	for k, vs := range h {
		if ck := http.CanonicalHeaderKey(k); len(vs) == 0 || ck != k || planner.RefusedHeader(ck) {
			clean = false
			break
		}
	}
	if clean {
		return h
	}
	out := make(http.Header, len(h))
	copyHeader(out, h)
	return out
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

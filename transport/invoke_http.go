package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// DefaultMaxResponseBytes is the largest step response an invoker reads by default (README "What runs when").
const DefaultMaxResponseBytes = 8 << 20

// DefaultMaxIdlePerHost is the idle connection pool NewUpstreamTransport keeps to the upstream when not told: enough
// for several batches fanning out at -max-parallel at once, so that steady load reuses connections.
const DefaultMaxIdlePerHost = 256

// HTTPConfig configures an HTTPInvoker.
type HTTPConfig struct {
	// Base is the upstream base URL, e.g. http://127.0.0.1:9000/api/; step paths are joined under its path.
	// It must be absolute http or https with a host, and have no user info, query or fragment.
	Base *url.URL
	// Transport sends the calls, one round trip each; default NewUpstreamTransport(DefaultMaxIdlePerHost).
	Transport http.RoundTripper
	// MaxResponseBytes caps a response body; default DefaultMaxResponseBytes. A larger body fails the call with
	// an *runner.InvokeError of kind "too_large" after reading at most MaxResponseBytes+1 bytes.
	MaxResponseBytes int64
}

// HTTPInvoker sends steps to an upstream HTTP API (proxy mode). It is safe for concurrent use.
//
// A call never leaves the base URL's scheme and host, and its path always lies under the base path. Request headers
// are the call's own (minus hop-by-hop ones); response headers are dropped: only the status and the body, normalised
// by NormalizeBody, come back. Redirects are returned, never followed. A context error is returned as is (wrapped),
// never as an *runner.InvokeError, so that the runner can tell a timeout from a broken upstream.
type HTTPInvoker struct {
	base     url.URL // validated; Path and rawBase end in "/"
	host     string  // base.Host as a request's Host: without an empty port, as http.NewRequest sets it
	rawBase  string  // base.EscapedPath() with a trailing "/"
	rt       http.RoundTripper
	maxBytes int64
}

var _ runner.Invoker = (*HTTPInvoker)(nil)

// NewHTTPInvoker validates cfg and returns an invoker.
func NewHTTPInvoker(cfg HTTPConfig) (*HTTPInvoker, error) {
	b := cfg.Base
	switch {
	case b == nil:
		return nil, errors.New("transport: upstream base URL is required")
	case b.Scheme != "http" && b.Scheme != "https":
		return nil, fmt.Errorf("transport: upstream base URL %q: scheme must be http or https", b.Redacted())
	case b.Opaque != "" || b.Host == "":
		return nil, fmt.Errorf("transport: upstream base URL %q: must have a host", b.Redacted())
	case b.User != nil:
		return nil, fmt.Errorf("transport: upstream base URL %q: must not hold user info", b.Redacted())
	case b.RawQuery != "" || b.ForceQuery:
		return nil, fmt.Errorf("transport: upstream base URL %q: must not have a query", b.Redacted())
	case b.Fragment != "" || b.RawFragment != "":
		return nil, fmt.Errorf("transport: upstream base URL %q: must not have a fragment", b.Redacted())
	}
	h := &HTTPInvoker{base: *b, rt: cfg.Transport, maxBytes: cfg.MaxResponseBytes}
	h.rawBase = h.base.EscapedPath()
	if !strings.HasSuffix(h.rawBase, "/") {
		h.rawBase += "/"
	}
	if !strings.HasPrefix(h.rawBase, "/") {
		h.rawBase = "/" + h.rawBase
	}
	var err error
	if h.base.Path, err = url.PathUnescape(h.rawBase); err != nil {
		return nil, fmt.Errorf("transport: upstream base URL %q: %w", b.Redacted(), err)
	}
	h.base.RawPath = h.rawBase
	h.base.Host = strings.TrimSuffix(h.base.Host, ":") // NewRequest drops an empty port ("host:") the same way
	h.host = h.base.Host
	if h.rt == nil {
		h.rt = NewUpstreamTransport(DefaultMaxIdlePerHost)
	}
	if h.maxBytes <= 0 {
		h.maxBytes = DefaultMaxResponseBytes
	}
	return h, nil
}

// NewUpstreamTransport returns the transport for one upstream: an idle pool of maxIdlePerHost connections (default
// DefaultMaxIdlePerHost when not positive) so that a batch's fan-out reuses them, bounded dial and TLS handshake
// times, and no proxy taken from the environment. It has no overall timeout: each call's context bounds it.
func NewUpstreamTransport(maxIdlePerHost int) *http.Transport {
	if maxIdlePerHost <= 0 {
		maxIdlePerHost = DefaultMaxIdlePerHost
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  nil, // an upstream is called directly, whatever HTTP_PROXY says
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           4 * maxIdlePerHost,
		MaxIdleConnsPerHost:    maxIdlePerHost,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
}

// Invoke sends c to the upstream and returns its status and normalised body.
func (h *HTTPInvoker) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	u, err := h.url(c.Path)
	if err != nil {
		return runner.Response{}, err
	}
	method, body := methodAndBody(c)
	// One allocation for the per-call state: the trace, its flag, and the default header values.
	st := &callState{vals: [2]string{"application/json", "application/json"}}
	// Whether a connection was obtained tells "could not be sent" (connect) from a failure on an open connection.
	st.trace.GotConn = func(httptrace.GotConnInfo) { st.gotConn.Store(true) }
	ctx = httptrace.WithClientTrace(ctx, &st.trace)
	// The URL is built, never printed and parsed again: NewRequestWithContext gets an empty one to replace.
	req, err := http.NewRequestWithContext(ctx, method, "", body)
	if err != nil {
		return runner.Response{}, fmt.Errorf("transport: step %s: %w", c.Key, err)
	}
	req.URL, req.Host = u, h.host
	if u.Host != h.base.Host || u.Scheme != h.base.Scheme {
		// url() makes this impossible; the check is cheap and keeps the promise even if url() regresses.
		return runner.Response{}, fmt.Errorf("transport: step %s: URL leaves the upstream host", c.Key)
	}
	hdr := make(http.Header, len(c.Header)+2)
	shareHeader(hdr, c.Header)
	if c.Body != nil && hdr.Get("Content-Type") == "" {
		hdr["Content-Type"] = st.vals[0:1:1]
	}
	if hdr.Get("Accept") == "" {
		hdr["Accept"] = st.vals[1:2:2]
	}
	req.Header = hdr

	// One round trip, not an http.Client: a redirect is the step's answer and there is no cookie jar, so there is
	// nothing for a client to add.
	resp, err := h.rt.RoundTrip(req)
	if err != nil {
		return runner.Response{}, h.classify(ctx, c, err, st.gotConn.Load())
	}
	// Closing a body that was not read to its end makes the Transport close the connection instead of reusing
	// it: every early return below leaves a connection that misbehaved (or whose rest is unknown) unused.
	defer resp.Body.Close()

	if err := finalStatus(resp.StatusCode); err != nil {
		return runner.Response{}, err
	}
	length := resp.ContentLength // -1 when unknown
	if method == http.MethodHead {
		length = 0 // the length of the body a GET would have had; none comes
	}
	if length > h.maxBytes {
		return runner.Response{}, &runner.InvokeError{Kind: "too_large",
			Err: fmt.Errorf("response of %d bytes is over the %d-byte cap", length, h.maxBytes)}
	}
	buf, err := newCappedBuffer(length, h.maxBytes, c.Budget)
	if err != nil {
		return runner.Response{}, err
	}
	if err := buf.readFrom(resp.Body); err != nil {
		buf.discard()
		var ctxErr error
		switch ctxErr = ctx.Err(); {
		case ctxErr != nil:
			return runner.Response{}, fmt.Errorf("transport: step %s: %w", c.Key, ctxErr)
		case errors.Is(err, errOverCap):
			return runner.Response{}, &runner.InvokeError{Kind: "too_large",
				Err: fmt.Errorf("response is over the %d-byte cap", h.maxBytes)}
		case isBudget(err):
			return runner.Response{}, err
		}
		return runner.Response{}, &runner.InvokeError{Kind: "reset", Err: fmt.Errorf("reading response: %w", err)}
	}
	out, err := buf.body(resp.Header.Get("Content-Type"))
	if err != nil {
		return runner.Response{}, err
	}
	kept, err := captured(resp.Header, c)
	if err != nil {
		return runner.Response{}, err
	}
	return runner.Response{Status: resp.StatusCode, Body: out, Header: kept}, nil
}

// captured returns the first value of each response header the call asks to keep (Call.Capture) that the
// response has, its bytes reserved from the call's budget; nil for none. Set-Cookie is never kept: a cookie must
// reach neither the answer nor another step.
func captured(h http.Header, c runner.Call) (http.Header, error) {
	var out http.Header
	size := 0
	for _, name := range c.Capture {
		v := h.Values(name)
		if len(v) == 0 || name == "Set-Cookie" || name == "Set-Cookie2" {
			continue
		}
		if out == nil {
			out = make(http.Header, len(c.Capture))
		}
		out[name] = v[:1:1]
		size += len(name) + len(v[0])
	}
	if err := reserve(c.Budget, int64(size)); err != nil {
		return nil, err
	}
	return out, nil
}

// methodAndBody are a call's HTTP method (POST when it names none) and its body as a request reads it (nil for
// none), as both invokers send them.
func methodAndBody(c runner.Call) (string, io.Reader) {
	method := c.Method
	if method == "" {
		method = http.MethodPost
	}
	if c.Body == nil {
		return method, nil
	}
	return method, bytes.NewReader(c.Body)
}

// finalStatus refuses a status that is not a final answer (README "Limits and guarantees"): outside 200–599, that is 0,
// 101 or another 1xx the Transport passed on, or a number no server should send.
func finalStatus(s int) error {
	if s >= 200 && s <= 599 {
		return nil
	}
	return &runner.InvokeError{Kind: "protocol", Err: fmt.Errorf("status %d is not a final HTTP status", s)}
}

// isBudget reports whether err is a budget's refusal (README "Limits and guarantees"), which the runner turns into 507.
func isBudget(err error) bool {
	var be *budget.Error
	return errors.As(err, &be)
}

// callState is what one Invoke allocates besides the request.
type callState struct {
	trace   httptrace.ClientTrace
	gotConn atomic.Bool
	vals    [2]string // the default Content-Type and Accept values, each a slice of its own
}

// classify maps a round trip's error: the context's own error as is, otherwise an *runner.InvokeError.
func (h *HTTPInvoker) classify(ctx context.Context, c runner.Call, err error, gotConn bool) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("transport: step %s: %w", c.Key, ctxErr)
	}
	// *url.Error prints the whole URL, query included, which may hold a caller's secrets: keep only the cause.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	ie := &runner.InvokeError{Kind: "protocol", Err: err, Host: h.host, Cause: "malformed HTTP response"}
	switch {
	case !gotConn:
		ie.Kind, ie.Cause = "connect", cause(err)
	case isReset(err):
		ie.Kind, ie.Cause = "reset", cause(err)
	}
	return ie
}

// cause names why a call failed in a word or two a client may read (runner.InvokeError.Cause): from a fixed
// vocabulary, never the error's text, which may hold addresses.
func cause(err error) string {
	var dns *net.DNSError
	var ne net.Error
	var tlsErr tls.RecordHeaderError
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &dns):
		return "no such host"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &certErr):
		return "TLS certificate not trusted"
	case errors.As(err, &tlsErr):
		return "TLS handshake failed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	return "connection failed"
}

// isReset reports whether err is the connection breaking, as opposed to the upstream speaking broken HTTP.
func isReset(err error) bool {
	var opErr *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &opErr)
}

// shareHeader is copyHeader without copying the value slices: dst shares them, capped so that an append (by a
// RoundTripper that breaks the rule not to modify the request) reallocates instead of writing into the call's.
// net/http only reads a request's header values.
func shareHeader(dst, src http.Header) {
	for k, vs := range src {
		ck := http.CanonicalHeaderKey(k)
		if len(vs) == 0 || planner.RefusedHeader(ck) {
			continue
		}
		dst[ck] = vs[:len(vs):len(vs)]
	}
}

// copyHeader copies the call's headers but those no call may carry (planner.RefusedHeader: the planner refuses
// them in a step already; an invoker must not rely on it, and a batch's forwarded headers are not steps').
func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		if len(vs) == 0 || planner.RefusedHeader(http.CanonicalHeaderKey(k)) {
			continue
		}
		dst[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...) // the call's slices are not ours
	}
}

// url builds the upstream URL of a step path (no leading "/", query kept). The result always has the base's scheme
// and host, and an escaped path that starts with the base's: the step path only ever sets Path, RawPath and
// RawQuery of a copy of the base.
func (h *HTTPInvoker) url(stepPath string) (*url.URL, error) {
	rawPath, decoded, rawQuery, err := splitStepPath(stepPath)
	if err != nil {
		return nil, err
	}
	u := h.base // copy
	u.Path = h.base.Path + decoded
	if rawPath == decoded && h.rawBase == h.base.Path {
		u.RawPath = u.Path // nothing escaped: the same string, built once
	} else {
		u.RawPath = h.rawBase + rawPath
	}
	u.RawQuery = rawQuery
	return &u, nil
}

// splitStepPath splits a step path into its escaped path (leading "/" removed), that path decoded, and its escaped
// query. Percent-escapes are kept as written ("users/a%2Fb" stays one segment); bytes that may not appear in a path
// or query are escaped. A "." or ".." segment, before or after decoding, is refused: an upstream that cleans paths
// would otherwise resolve it above the base path. planner.CheckPath refuses all of these already; invokers do not
// rely on it.
func splitStepPath(stepPath string) (rawPath, decoded, rawQuery string, err error) {
	p, q, _ := strings.Cut(stepPath, "?")
	rawPath = escapeKeeping(strings.TrimLeft(p, "/"), false)
	if decoded, err = url.PathUnescape(rawPath); err != nil { // unreachable: escapeKeeping leaves only well-formed escapes
		return "", "", "", fmt.Errorf("transport: step path %q: %w", stepPath, err)
	}
	if hasDotSegment(decoded) {
		return "", "", "", fmt.Errorf("transport: step path %q: dot segment", stepPath)
	}
	return rawPath, decoded, escapeKeeping(q, true), nil
}

// hasDotSegment reports a "." or ".." segment, also with path parameters (".."+";x"), which servers that drop
// parameters before routing resolve as "..".
func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// escapeKeeping percent-escapes every byte of s that may not appear as is in a URL path (or, when query is true,
// a query), keeping well-formed %XX escapes. A "%" that starts no escape becomes "%25".
func escapeKeeping(s string, query bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !keep(s, i, query) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if keep(s, i, query) {
			b = append(b, s[i])
		} else {
			b = append(b, '%', hex[s[i]>>4], hex[s[i]&0xf])
		}
	}
	return string(b)
}

// keep reports whether s[i] may stay as is: RFC 3986 pchar (unreserved, sub-delims, ":", "@"), "/", a well-formed
// escape, and in a query also "?".
func keep(s string, i int, query bool) bool {
	c := s[i]
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '/':
		return true
	case '?':
		return query
	case '%':
		return i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2])
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

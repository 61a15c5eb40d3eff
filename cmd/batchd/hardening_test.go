package main

// End-to-end tests of the hardening guarantees (README "Limits and guarantees"): the real service, started through
// run() in proxy mode, against a loopback upstream that records every request it receives. Assertions read recorded
// requests and counters, never wall-clock bounds.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/syncbuf"
)

// seenRequest is one request as the upstream received it.
type seenRequest struct {
	Method  string
	Path    string // escaped, as on the wire
	Host    string
	Header  http.Header
	Body    string
	Aborted bool // the request's context ended before the handler answered
}

// recordingUpstream is an httptest upstream under /api/ that records every request and answers by path:
//
//	hang/…       blocks until batchd gives up on the call (step timeout or cancellation)
//	reset/…      closes the connection with a TCP reset, no answer
//	redirect/…   302 to /api/elsewhere
//	big/…        a JSON string of 4 KiB (over a 1 KiB -max-response)
//	slowbody/…   headers and part of the body at once, the rest never
//	text/…       an HTML page
//	fail/…       HTTP 500 with a JSON error
//	login/…      Set-Cookie and a JSON token
//	gate/…       waits until two gate calls are in at once (proves parallelism), then answers
//	anything else: {"ok":true,"result":{"id":7,"path":<escaped path>,"cookie":<Cookie header>}}
//
// It tracks the calls in flight and their maximum.
type recordingUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	seen     []seenRequest
	inFlight int
	maxIn    int
	gate     chan struct{}
	gateN    int
	values   map[string]string // the result of path "values"
	release  chan struct{}     // closed at cleanup: nothing blocks past the test
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{gate: make(chan struct{}), release: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(func() {
		close(u.release)
		u.Server.Close()
	})
	return u
}

func (u *recordingUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	idx := len(u.seen)
	u.seen = append(u.seen, seenRequest{Method: r.Method, Path: r.URL.EscapedPath(), Host: r.Host,
		Header: r.Header.Clone(), Body: string(body)})
	u.inFlight++
	u.maxIn = max(u.maxIn, u.inFlight)
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.inFlight--
		if r.Context().Err() != nil {
			u.seen[idx].Aborted = true
		}
		u.mu.Unlock()
	}()

	rest := strings.TrimPrefix(r.URL.Path, "/api/")
	kind, _, _ := strings.Cut(rest, "/")
	switch kind {
	case "hang":
		select {
		case <-r.Context().Done():
		case <-u.release:
		}
		return
	case "reset":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		conn.Close()
		return
	case "redirect":
		w.Header().Set("Location", "/api/elsewhere")
		w.WriteHeader(http.StatusFound)
		return
	case "big":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `"`+strings.Repeat("x", 4096)+`"`)
		return
	case "slowbody":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, `{"ok":`)
		_ = http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-u.release:
		}
		return
	case "text":
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html>oops</html>")
		return
	case "fail":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"ok":false,"result":{"error":1,"description":"upstream failed"}}`)
		return
	case "login":
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "upstream-secret", Path: "/"})
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"result":{"token":"t-1"}}`)
		return
	case "values":
		u.mu.Lock()
		out, _ := json.Marshal(map[string]any{"ok": true, "result": u.values})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
		return
	case "gate":
		u.mu.Lock()
		if u.gateN++; u.gateN == 2 {
			close(u.gate)
		}
		u.mu.Unlock()
		select {
		case <-u.gate:
		case <-u.release:
		case <-time.After(20 * time.Second):
		}
	}
	w.Header().Set("Content-Type", "application/json")
	out, _ := json.Marshal(map[string]any{"ok": true, "result": map[string]any{
		"id": 7, "path": r.URL.EscapedPath(), "cookie": r.Header.Get("Cookie")}})
	_, _ = w.Write(out)
}

func (u *recordingUpstream) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

func (u *recordingUpstream) maxInFlight() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.maxIn
}

// count returns how many requests had the escaped path p.
func (u *recordingUpstream) count(p string) int {
	n := 0
	for _, r := range u.requests() {
		if r.Path == p {
			n++
		}
	}
	return n
}

// send posts a batch with extra headers (name, value, …) and returns the status, headers and body.
func (in *instance) send(t *testing.T, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	return in.request(context.Background(), t, "/v1/batch", "application/json", body, hdr...)
}

// metric returns the value of one sample line of /metrics ("name{labels}"), or -1 when absent.
func (in *instance) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := in.client.Get(in.base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, line)
			return f
		}
	}
	return -1
}

// refusal is a batch-level ErrorResult.
type refusal struct {
	OK     bool
	Result struct {
		Error       int
		Description string
		Details     []struct{ Key, Reason, Problem string }
	}
}

// TestHostileBatchesNeverReachUpstream: every hostile batch is refused with 400, the refusal names the step, and
// the upstream receives nothing — not even the batch's harmless step.
func TestHostileBatchesNeverReachUpstream(t *testing.T) {
	up := newRecordingUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/", "-blocked", "Item/Import,Admin/Drop", "-max-body", "3MiB")

	deep := strings.Repeat("[", 70) + strings.Repeat("]", 70)
	bigPayload := `"` + strings.Repeat("x", 1<<20) + `"` // one byte over the 1 MiB per-step payload cap with its quotes
	cases := []struct {
		name string
		step string // the hostile step, second in the batch after a harmless one; its key is "bad"
		// where names the step in the refusal: "bad" (its key), or a JSON pointer that a problem must contain
		// when decoding stopped before the key was known.
		where  string
		reason string
	}{
		// Paths: anything that could leave the base URL or change its meaning.
		{"absolute URL", `{"key":"bad","path":"https://evil.test/x"}`, "bad", "invalid_path"},
		{"absolute URL to loopback", `{"key":"bad","path":"http://127.0.0.1:1/x"}`, "bad", "invalid_path"},
		{"upper-case scheme", `{"key":"bad","path":"HTTPS://EVIL.TEST/x"}`, "bad", "invalid_path"},
		{"scheme without slashes", `{"key":"bad","path":"https:x"}`, "bad", "invalid_path"},
		{"javascript scheme", `{"key":"bad","path":"javascript:alert(1)"}`, "bad", "invalid_path"},
		{"encoded scheme", `{"key":"bad","path":"https%3A//evil.test"}`, "bad", "invalid_path"},
		{"network path", `{"key":"bad","path":"//evil.test/x"}`, "bad", "invalid_path"},
		{"triple slash", `{"key":"bad","path":"///evil.test/x"}`, "bad", "invalid_path"},
		{"backslash host", `{"key":"bad","path":"/\\evil.test/x"}`, "bad", "invalid_path"},
		{"UNC path", `{"key":"bad","path":"\\\\evil.test\\x"}`, "bad", "invalid_path"},
		{"userinfo", `{"key":"bad","path":"@evil.test/x"}`, "bad", "invalid_path"},
		{"user at host", `{"key":"bad","path":"user@evil.test/x"}`, "bad", "invalid_path"},
		{"user and password", `{"key":"bad","path":"user:pw@evil.test/x"}`, "bad", "invalid_path"},
		{"encoded userinfo", `{"key":"bad","path":"%40evil.test/x"}`, "bad", "invalid_path"},
		{"backslash", `{"key":"bad","path":"Producer\\Add"}`, "bad", "invalid_path"},
		{"dot segment", `{"key":"bad","path":"./Producer/Add"}`, "bad", "invalid_path"},
		{"inner dot segment", `{"key":"bad","path":"Producer/./Add"}`, "bad", "invalid_path"},
		{"dot-dot segment", `{"key":"bad","path":"Producer/../../admin"}`, "bad", "invalid_path"},
		{"leading dot-dot", `{"key":"bad","path":"../admin"}`, "bad", "invalid_path"},
		{"only dot-dot", `{"key":"bad","path":".."}`, "bad", "invalid_path"},
		{"empty segment", `{"key":"bad","path":"Producer//Add"}`, "bad", "invalid_path"},
		{"trailing slash", `{"key":"bad","path":"Producer/Add/"}`, "bad", "invalid_path"},
		{"empty path", `{"key":"bad","path":""}`, "bad", "invalid_path"},
		{"root", `{"key":"bad","path":"/"}`, "bad", "invalid_path"},
		{"missing path", `{"key":"bad"}`, "bad", "invalid_path"},
		{"encoded dot-dot", `{"key":"bad","path":"%2e%2e/admin"}`, "bad", "invalid_path"},
		{"encoded inner dot-dot", `{"key":"bad","path":"Producer/%2E%2e/admin"}`, "bad", "invalid_path"},
		{"half-encoded dot-dot", `{"key":"bad","path":"Producer/.%2e/admin"}`, "bad", "invalid_path"},
		{"encoded dot", `{"key":"bad","path":"%2e/admin"}`, "bad", "invalid_path"},
		{"encoded slash", `{"key":"bad","path":"Producer%2FAdd"}`, "bad", "invalid_path"},
		{"encoded slash lower case", `{"key":"bad","path":"..%2fadmin"}`, "bad", "invalid_path"},
		{"encoded double slash", `{"key":"bad","path":"%2F%2Fevil.test"}`, "bad", "invalid_path"},
		{"encoded backslash", `{"key":"bad","path":"Producer%5CAdd"}`, "bad", "invalid_path"},
		{"encoded NUL", `{"key":"bad","path":"Producer%00Add"}`, "bad", "invalid_path"},
		{"encoded CRLF", `{"key":"bad","path":"Producer%0d%0aHost:%20evil"}`, "bad", "invalid_path"},
		{"encoded tab", `{"key":"bad","path":"Producer%09Add"}`, "bad", "invalid_path"},
		{"encoded DEL", `{"key":"bad","path":"Producer%7FAdd"}`, "bad", "invalid_path"},
		{"invalid escape", `{"key":"bad","path":"Producer%zzAdd"}`, "bad", "invalid_path"},
		{"NUL", `{"key":"bad","path":"Producer\u0000Add"}`, "bad", "invalid_path"},
		{"CR", `{"key":"bad","path":"Producer\rAdd"}`, "bad", "invalid_path"},
		{"LF", `{"key":"bad","path":"Producer\nAdd"}`, "bad", "invalid_path"},
		{"CRLF request smuggling", `{"key":"bad","path":"x HTTP/1.1\r\nHost: evil.test\r\n\r\nGET /y"}`, "bad", "invalid_path"},
		{"tab", `{"key":"bad","path":"Producer\tAdd"}`, "bad", "invalid_path"},
		{"DEL", `{"key":"bad","path":"Producer\u007fAdd"}`, "bad", "invalid_path"},
		{"control in query", `{"key":"bad","path":"Producer/Get?x=\r\n"}`, "bad", "invalid_path"},
		{"fragment", `{"key":"bad","path":"Producer/Add#x"}`, "bad", "invalid_path"},
		{"templated host", `{"key":"bad","path":"//${ok.result.path}/x"}`, "bad", "invalid_path"},

		// Nested batch and blocked methods, in every spelling; the method's spelling does not matter either.
		{"nested batch", `{"key":"bad","path":"v1/batch"}`, "bad", "nested_batch"},
		{"nested batch rooted", `{"key":"bad","path":"/v1/batch"}`, "bad", "nested_batch"},
		{"nested batch upper case", `{"key":"bad","path":"V1/BATCH"}`, "bad", "nested_batch"},
		{"nested batch bare", `{"key":"bad","path":"Batch"}`, "bad", "nested_batch"},
		{"nested batch with query", `{"key":"bad","path":"/BATCH?x=1"}`, "bad", "nested_batch"},
		{"nested batch under a prefix", `{"key":"bad","path":"api/v1/batch"}`, "bad", "nested_batch"},
		{"nested batch encoded", `{"key":"bad","path":"%76%31/%62%61%74%63%68"}`, "bad", "nested_batch"},
		{"nested batch path parameter", `{"key":"bad","path":"v1/batch;x=1"}`, "bad", "nested_batch"},
		{"nested batch as GET", `{"key":"bad","method":"get","path":"v1/Batch"}`, "bad", "nested_batch"},
		{"blocked", `{"key":"bad","path":"Item/Import"}`, "bad", "blocked"},
		{"blocked lower case", `{"key":"bad","path":"item/import"}`, "bad", "blocked"},
		{"blocked upper case rooted", `{"key":"bad","path":"/ITEM/IMPORT"}`, "bad", "blocked"},
		{"blocked with query", `{"key":"bad","path":"Item/Import?dry=1"}`, "bad", "blocked"},
		{"blocked encoded", `{"key":"bad","path":"It%65m/Imp%6Frt"}`, "bad", "blocked"},
		{"blocked path parameter", `{"key":"bad","path":"Item/Import;jsessionid=1"}`, "bad", "blocked"},
		{"blocked second entry", `{"key":"bad","path":"admin/DROP"}`, "bad", "blocked"},
		{"blocked lower-case method", `{"key":"bad","method":"post","path":"Item/Import"}`, "bad", "blocked"},
		{"blocked other method", `{"key":"bad","method":"PuT","path":"item/Import"}`, "bad", "blocked"},
		{"blocked with a format suffix", `{"key":"bad","path":"Item/Import.json"}`, "bad", "blocked"},
		{"blocked with a trailing dot", `{"key":"bad","path":"Item/Import."}`, "bad", "blocked"},
		{"blocked with a trailing space", `{"key":"bad","path":"Item/Import%20"}`, "bad", "blocked"},
		{"method CONNECT", `{"key":"bad","method":"connect","path":"Producer/Add"}`, "bad", "invalid_method"},
		{"method TRACE", `{"key":"bad","method":"TrAcE","path":"Producer/Add"}`, "bad", "invalid_method"},
		{"method not a token", `{"key":"bad","method":"GET /x HTTP/1.1\r\n","path":"Producer/Add"}`, "bad", "invalid_method"},

		// Duplicate members anywhere, and nesting: decoding stops, the problem names the step by its position.
		{"duplicate step member", `{"key":"bad","path":"Producer/Add","path":"Item/Import"}`, "/requests/1", "invalid_json"},
		{"duplicate payload member", `{"key":"bad","path":"Producer/Add","payload":{"a":{"b":1,"b":2}}}`, "/requests/1/payload/a", "invalid_json"},
		{"duplicate member via escape", `{"key":"bad","path":"Producer/Add","payload":{"ab":1,"a\u0062":2}}`, "/requests/1/payload", "invalid_json"},
		{"duplicate header member", `{"key":"bad","path":"Producer/Add","headers":{"X-A":"1","X-A":"2"}}`, "/requests/1/headers", "invalid_json"},
		{"same header in two cases", `{"key":"bad","path":"Producer/Add","headers":{"x-a":"1","X-A":"2"}}`, "bad", "invalid_header"},
		{"payload too deep", `{"key":"bad","path":"Producer/Add","payload":` + deep + `}`, "bad", "invalid_json"},
		{"payload too large", `{"key":"bad","path":"Producer/Add","payload":` + bigPayload + `}`, "bad", "too_large"},

		// Headers: no injection, no framing or routing headers.
		{"header Host", `{"key":"bad","path":"Producer/Add","headers":{"Host":"evil.test"}}`, "bad", "invalid_header"},
		{"header host lower case", `{"key":"bad","path":"Producer/Add","headers":{"host":"evil.test"}}`, "bad", "invalid_header"},
		{"header Content-Length", `{"key":"bad","path":"Producer/Add","headers":{"Content-Length":"0"}}`, "bad", "invalid_header"},
		{"header Transfer-Encoding", `{"key":"bad","path":"Producer/Add","headers":{"Transfer-Encoding":"chunked"}}`, "bad", "invalid_header"},
		{"header Connection", `{"key":"bad","path":"Producer/Add","headers":{"Connection":"close"}}`, "bad", "invalid_header"},
		{"header Keep-Alive", `{"key":"bad","path":"Producer/Add","headers":{"keep-alive":"timeout=1"}}`, "bad", "invalid_header"},
		{"header Proxy-Connection", `{"key":"bad","path":"Producer/Add","headers":{"Proxy-Connection":"keep-alive"}}`, "bad", "invalid_header"},
		{"header Proxy-Authorization", `{"key":"bad","path":"Producer/Add","headers":{"Proxy-Authorization":"Basic eDp5"}}`, "bad", "invalid_header"},
		{"header TE", `{"key":"bad","path":"Producer/Add","headers":{"TE":"trailers"}}`, "bad", "invalid_header"},
		{"header Trailer", `{"key":"bad","path":"Producer/Add","headers":{"Trailer":"X"}}`, "bad", "invalid_header"},
		{"header Upgrade", `{"key":"bad","path":"Producer/Add","headers":{"Upgrade":"websocket"}}`, "bad", "invalid_header"},
		// Client-address headers: a step may not tell an upstream that trusts them who the client is.
		{"header X-Forwarded-For", `{"key":"bad","path":"Producer/Add","headers":{"X-Forwarded-For":"10.0.0.1"}}`, "bad", "invalid_header"},
		{"header Forwarded", `{"key":"bad","path":"Producer/Add","headers":{"forwarded":"for=10.0.0.1"}}`, "bad", "invalid_header"},
		{"header X-Real-IP", `{"key":"bad","path":"Producer/Add","headers":{"X-Real-IP":"10.0.0.1"}}`, "bad", "invalid_header"},
		{"header name with CRLF", `{"key":"bad","path":"Producer/Add","headers":{"X-A\r\nHost":"evil.test"}}`, "bad", "invalid_header"},
		{"header name with colon", `{"key":"bad","path":"Producer/Add","headers":{"X-A:":"1"}}`, "bad", "invalid_header"},
		{"header name empty", `{"key":"bad","path":"Producer/Add","headers":{"":"1"}}`, "bad", "invalid_header"},
		{"header value CRLF", `{"key":"bad","path":"Producer/Add","headers":{"X-A":"1\r\nHost: evil.test"}}`, "bad", "invalid_header"},
		{"header value LF", `{"key":"bad","path":"Producer/Add","headers":{"X-A":"1\nSet-Cookie: a=b"}}`, "bad", "invalid_header"},
		{"header value NUL", `{"key":"bad","path":"Producer/Add","headers":{"X-A":"1\u0000"}}`, "bad", "invalid_header"},
		{"header value CR around a placeholder", `{"key":"bad","path":"Producer/Add","headers":{"X-A":"\r${ok.result.id}"}}`, "bad", "invalid_header"},

		// Placeholders that cannot work are refused before anything runs.
		{"malformed placeholder", `{"key":"bad","path":"Producer/Add","payload":"${ok.result."}`, "bad", "placeholder"},
		{"unknown reference", `{"key":"bad","path":"Producer/Add","payload":"${nope.result}"}`, "bad", "unknown_ref"},
		{"self reference", `{"key":"bad","path":"Producer/Add","payload":"${bad.result}"}`, "bad", "self_ref"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			body := `{"requests":[{"key":"ok","path":"Producer/Add","payload":{"name":"x"}},` + tc.step + `]}`
			status, _, b := in.send(t, body)
			require.Equal(t, http.StatusBadRequest, status, "%.400s", b)
			var er refusal
			require.NoError(t, json.Unmarshal(b, &er), "%.400s", b)
			assert.False(t, er.OK)
			assert.Equal(t, 4000, er.Result.Error)
			assert.Contains(t, er.Result.Description, "nothing was executed")
			named := false
			for _, d := range er.Result.Details {
				if d.Key == tc.where || strings.HasPrefix(tc.where, "/") && strings.Contains(d.Problem, `"`+tc.where+`"`) {
					named = true
					assert.Equal(t, tc.reason, d.Reason, "%s", d.Problem)
					assert.NotEmpty(t, d.Problem)
				}
				assert.NotEqual(t, "ok", d.Key, "the harmless step has no problem")
			}
			assert.True(t, named, "the refusal names the step (%s): %.400s", tc.where, b)
			assert.Len(t, up.requests(), before, "nothing was sent upstream")
		})
	}
	assert.Empty(t, up.requests(), "no hostile batch reached the upstream")

	// The upstream and the harmless step work: the refusals were the hostile steps' doing.
	res := in.batch(t, `{"requests":[{"key":"ok","path":"Producer/Add","payload":{"name":"x"}}]}`)
	require.Len(t, res, 1)
	assert.Equal(t, 200, res[0].Status)
	assert.Equal(t, 1, up.count("/api/Producer/Add"))
}

// TestHostileDuplicateTopLevelAndDepth covers refusals of the body as a whole: a duplicate batch-level member and
// nesting past 64 levels outside any payload.
func TestHostileDuplicateTopLevelAndDepth(t *testing.T) {
	up := newRecordingUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/")
	for name, body := range map[string]string{
		"duplicate requests":      `{"requests":[{"key":"a","path":"x"}],"requests":[{"key":"b","path":"Item/Import"}]}`,
		"duplicate stop_on_error": `{"stop_on_error":true,"stop_on_error":false,"requests":[{"key":"a","path":"x"}]}`,
		"structure too deep":      `{"requests":[{"key":"a","path":"x","payload":` + strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100) + `}]}`,
	} {
		status, _, b := in.send(t, body)
		require.Equal(t, 400, status, "%s: %s", name, b)
		var er refusal
		require.NoError(t, json.Unmarshal(b, &er))
		require.Len(t, er.Result.Details, 1, "%s", b)
		assert.Equal(t, "invalid_json", er.Result.Details[0].Reason)
		assert.Regexp(t, `duplicate|at most 64 allowed`, er.Result.Details[0].Problem, name)
	}
	assert.Empty(t, up.requests())
}

// TestSubstitutedPathsStayOnTheUpstream: values from a response substituted into a path are escaped as one
// segment and the resolved path is checked again; a step whose resolved path is refused fails alone (424, 4243)
// without being sent, and every request batchd sends goes to the upstream's host.
func TestSubstitutedPathsStayOnTheUpstream(t *testing.T) {
	values := map[string]string{
		"dotdot": "../admin", "slash": "a/b", "scheme": "https://evil.test/x", "host": "//evil.test",
		"import": "Import", "batch": "batch", "crlf": "x\r\nHost: evil.test", "dot": ".", "query": "a?b=c#d",
		"space": "a b", "percent": "%2e%2e",
	}
	up := newRecordingUpstream(t)
	up.mu.Lock()
	up.values = values
	up.mu.Unlock()
	in := start(t, "-upstream", up.URL+"/api/", "-blocked", "Item/Import")
	body := `{"requests":[
		{"key":"v","path":"values"},
		{"key":"dotdot","path":"users/${v.result.dotdot}"},
		{"key":"slash","path":"users/${v.result.slash}"},
		{"key":"scheme","path":"${v.result.scheme}"},
		{"key":"host","path":"${v.result.host}/x"},
		{"key":"import","path":"Item/${v.result.import}"},
		{"key":"batch","path":"v1/${v.result.batch}"},
		{"key":"crlf","path":"users/${v.result.crlf}"},
		{"key":"dot","path":"users/${v.result.dot}/x"},
		{"key":"query","path":"users/${v.result.query}?q=${v.result.query}"},
		{"key":"space","path":"users/${v.result.space}"},
		{"key":"percent","path":"users/${v.result.percent}/x"},
		{"key":"embedded","path":"users","payload":{"name":"copy of ${v.result}"}}
	]}`
	res := in.batch(t, body)
	require.Len(t, res, 13)
	byKey := map[string]stepResult{}
	for _, r := range res {
		byKey[r.Key] = r
	}
	refused := []string{"dotdot", "scheme", "import", "batch", "dot", "crlf", "embedded"}
	for _, k := range refused {
		r := byKey[k]
		require.Equal(t, 424, r.Status, "%s: %s", k, r.Response)
		want := 4243
		if k == "embedded" {
			want = 4242 // an object inside a longer string
		}
		assert.Equal(t, want, r.errorCode(t), "%s: %s", k, r.Response)
	}
	assert.Contains(t, string(byKey["embedded"].Response), "${v.result}", "the error names the placeholder")
	// A value is one segment, escaped: its slashes, "?", "#" and "%" cannot change the path's structure.
	sent := map[string]string{
		"slash": "/api/users/a%2Fb", "host": "/api/%2F%2Fevil.test/x", "query": "/api/users/a%3Fb=c%23d",
		"space": "/api/users/a%20b", "percent": "/api/users/%252e%252e/x",
	}
	for k, p := range sent {
		assert.Equal(t, 200, byKey[k].Status, "%s: %s", k, byKey[k].Response)
		assert.Equal(t, 1, up.count(p), "%s sent as %s; got %v", k, p, paths(up.requests()))
	}
	host := strings.TrimPrefix(up.URL, "http://")
	for _, r := range up.requests() {
		assert.Equal(t, host, r.Host, "every request goes to the upstream: %s", r.Path)
		assert.True(t, strings.HasPrefix(r.Path, "/api/"), r.Path)
		assert.NotContains(t, r.Path, "/admin")
		assert.NotContains(t, strings.ToLower(r.Path), "import")
	}
	assert.Len(t, up.requests(), 1+len(sent), "only the value step and the steps whose paths passed: %v", paths(up.requests()))
}

func paths(rs []seenRequest) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Path
	}
	return out
}

// TestUpstreamFaultsEndToEnd: each fault fails its own step exactly once with its own code; every other step,
// dependents of healthy steps included, is unaffected.
func TestUpstreamFaultsEndToEnd(t *testing.T) {
	up := newRecordingUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/", "-step-timeout", "300ms", "-max-response", "1KiB", "-max-parallel", "16")
	body := `{"requests":[
		{"key":"ok1","path":"ok/1"},
		{"key":"hang","path":"hang/1"},
		{"key":"reset","path":"reset/1"},
		{"key":"redirect","path":"redirect/1"},
		{"key":"big","path":"big/1"},
		{"key":"slowbody","path":"slowbody/1"},
		{"key":"text","path":"text/1"},
		{"key":"fail","path":"fail/1"},
		{"key":"ok2","path":"ok/2","payload":{"after":"${ok1.result.id}"}},
		{"key":"afterHang","path":"ok/3","payload":{"x":"${hang.result.id}"}},
		{"key":"afterReset","path":"ok/4","depends_on":["reset"]},
		{"key":"ok5","path":"ok/5","depends_on":["ok2"]}
	]}`
	status, hdr, b := in.send(t, body)
	require.Equal(t, 200, status, "%s", b)
	assert.Empty(t, hdr.Values("Location"), "the redirect is a step result, not the batch's")
	var out struct{ Responses []stepResult }
	require.NoError(t, json.Unmarshal(b, &out), "%s", b)

	want := []struct {
		key    string
		status int
		code   int // 0: the upstream's own answer
	}{
		{"ok1", 200, 0}, {"hang", 504, 5040}, {"reset", 502, 5021}, {"redirect", 302, 0}, {"big", 502, 5022},
		{"slowbody", 504, 5040}, {"text", 200, 0}, {"fail", 500, 0}, {"ok2", 200, 0}, {"afterHang", 424, 4240},
		{"afterReset", 424, 4240}, {"ok5", 200, 0},
	}
	require.Len(t, out.Responses, len(want), "every step exactly once")
	for i, w := range want {
		r := out.Responses[i]
		require.Equal(t, w.key, r.Key, "request order")
		assert.Equal(t, w.status, r.Status, "%s: %s", r.Key, r.Response)
		if w.code != 0 {
			assert.Equal(t, w.code, r.errorCode(t), "%s: %s", r.Key, r.Response)
		}
	}
	byKey := map[string]stepResult{}
	for _, r := range out.Responses {
		byKey[r.Key] = r
	}
	assert.JSONEq(t, `"<html>oops</html>"`, string(byKey["text"].Response), "a non-JSON body is a JSON string")
	assert.JSONEq(t, `null`, string(byKey["redirect"].Response), "the redirect's (empty) body as is")
	assert.JSONEq(t, `{"ok":false,"result":{"error":1,"description":"upstream failed"}}`, string(byKey["fail"].Response))
	assert.Contains(t, string(byKey["ok2"].Response), `"path":"/api/ok/2"`)

	// Exactly one call per executed step; the redirect was not followed; dependents of failed steps never sent.
	for _, p := range []string{"ok/1", "hang/1", "reset/1", "redirect/1", "big/1", "slowbody/1", "text/1", "fail/1", "ok/2", "ok/5"} {
		assert.Equal(t, 1, up.count("/api/"+p), p)
	}
	for _, p := range []string{"elsewhere", "ok/3", "ok/4"} {
		assert.Zero(t, up.count("/api/"+p), p)
	}
	// The timed-out calls were cancelled on the upstream's side too.
	require.Eventually(t, func() bool {
		n := 0
		for _, r := range up.requests() {
			if (r.Path == "/api/hang/1" || r.Path == "/api/slowbody/1") && r.Aborted {
				n++
			}
		}
		return n == 2
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 2.0, in.metric(t, `batchd_step_timeouts_total{method="other"}`))
	assert.Equal(t, 1.0, in.metric(t, `batchd_upstream_errors_total{kind="reset"}`))
	assert.Equal(t, 1.0, in.metric(t, `batchd_upstream_errors_total{kind="too_large"}`))

	// The service is fine afterwards.
	res := in.batch(t, `{"requests":[{"key":"again","path":"ok/6"}]}`)
	assert.Equal(t, 200, res[0].Status)
}

// TestUpstreamRefusedEndToEnd: an upstream that refuses connections fails each step with 502 (5020), once.
func TestUpstreamRefusedEndToEnd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	in := start(t, "-upstream", "http://"+addr+"/api/")
	res := in.batch(t, `{"requests":[{"key":"a","path":"x"},{"key":"b","path":"y"},{"key":"c","path":"z","depends_on":["a"]}]}`)
	require.Len(t, res, 3)
	for i, k := range []string{"a", "b"} {
		assert.Equal(t, k, res[i].Key)
		assert.Equal(t, 502, res[i].Status)
		assert.Equal(t, 5020, res[i].errorCode(t))
	}
	assert.Equal(t, 424, res[2].Status)
	assert.Equal(t, 2.0, in.metric(t, `batchd_upstream_errors_total{kind="connect"}`))
}

// TestCookiesNeverCrossSteps: a Set-Cookie from one step's upstream response reaches neither the batch's answer nor
// any other step (of this batch or the next); a step's own Cookie header reaches that step only, and the client's
// Cookie is not forwarded.
func TestCookiesNeverCrossSteps(t *testing.T) {
	up := newRecordingUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/")
	body := `{"requests":[
		{"key":"login","path":"login/1"},
		{"key":"me","path":"me/1","headers":{"Authorization":"Bearer ${login.result.token}"}},
		{"key":"mine","path":"mine/1","headers":{"Cookie":"own=1"},"depends_on":["login"]},
		{"key":"after","path":"after/1","depends_on":["mine"]}
	]}`
	status, hdr, b := in.send(t, body, "Cookie", "client=secret")
	require.Equal(t, 200, status, "%s", b)
	assert.Empty(t, hdr.Values("Set-Cookie"), "no Set-Cookie on the batch's answer")
	assert.NotContains(t, string(b), "upstream-secret")
	var out struct{ Responses []stepResult }
	require.NoError(t, json.Unmarshal(b, &out))
	for _, r := range out.Responses {
		assert.Equal(t, 200, r.Status, "%s: %s", r.Key, r.Response)
	}

	status, hdr, b = in.send(t, `{"requests":[{"key":"next","path":"next/1"}]}`)
	require.Equal(t, 200, status, "%s", b)
	assert.Empty(t, hdr.Values("Set-Cookie"))

	cookies := map[string][]string{}
	for _, r := range up.requests() {
		cookies[r.Path] = r.Header.Values("Cookie")
	}
	require.Len(t, cookies, 5)
	assert.Empty(t, cookies["/api/login/1"], "the client's Cookie is not forwarded")
	assert.Empty(t, cookies["/api/me/1"], "the login's Set-Cookie does not reach the next step")
	assert.Equal(t, []string{"own=1"}, cookies["/api/mine/1"], "a step's own Cookie, and nothing else")
	assert.Empty(t, cookies["/api/after/1"], "a step's own Cookie stays with that step")
	assert.Empty(t, cookies["/api/next/1"], "nor the next batch")
	for _, r := range up.requests() {
		if r.Path == "/api/me/1" {
			assert.Equal(t, "Bearer t-1", r.Header.Get("Authorization"))
		}
	}
}

// TestClientDisconnectEndToEnd: when the client goes away, the running call is cancelled on the upstream, the step
// waiting for it never starts, and the batch is logged and counted as abandoned.
func TestClientDisconnectEndToEnd(t *testing.T) {
	up := newRecordingUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/")
	require.Equal(t, 0.0, in.metric(t, "batchd_batches_abandoned_total"), "the series exists from the start")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.base+"/v1/batch", strings.NewReader(`{"requests":[
		{"key":"s","path":"hang/1"},
		{"key":"n","path":"never/1","depends_on":["s"]},
		{"key":"q","path":"quick/1"}]}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	errc := make(chan error, 1)
	go func() {
		resp, err := in.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return up.count("/api/hang/1") == 1 && up.count("/api/quick/1") == 1 },
		10*time.Second, 5*time.Millisecond)
	cancel()
	require.Error(t, <-errc)

	require.Eventually(t, func() bool { return in.metric(t, "batchd_batches_abandoned_total") == 1 },
		10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		for _, r := range up.requests() {
			if r.Path == "/api/hang/1" {
				return r.Aborted
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "the running call was cancelled")
	assert.Zero(t, up.count("/api/never/1"), "no new step started")
	assert.Contains(t, in.logs.String(), "client closed")
	assert.Equal(t, 0.0, in.metric(t, "batchd_batches_in_flight"))
	assert.Equal(t, 0.0, in.metric(t, "batchd_steps_in_flight"))
}

// TestGlobalUpstreamCapEndToEnd: two concurrent batches of 20 steps with -max-parallel 20 never have more than
// -max-upstream-inflight 5 calls at the upstream at once, and do run in parallel.
func TestGlobalUpstreamCapEndToEnd(t *testing.T) {
	up := newRecordingUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/", "-max-parallel", "20", "-max-upstream-inflight", "5")
	batch := func(b int) string {
		steps := make([]string, 20)
		for i := range steps {
			steps[i] = fmt.Sprintf(`{"key":"s%d","path":"gate/%d/%d"}`, i, b, i)
		}
		return `{"requests":[` + strings.Join(steps, ",") + `]}`
	}
	var wg sync.WaitGroup
	for b := range 2 {
		wg.Go(func() {
			status, _, body := in.send(t, batch(b))
			assert.Equal(t, 200, status)
			var out struct{ Responses []stepResult }
			assert.NoError(t, json.Unmarshal(body, &out))
			assert.Len(t, out.Responses, 20)
			for _, r := range out.Responses {
				assert.Equal(t, 200, r.Status, "%s: %s", r.Key, r.Response)
			}
		})
	}
	wg.Wait()
	assert.Len(t, up.requests(), 40)
	assert.LessOrEqual(t, up.maxInFlight(), 5, "the global cap holds across batches")
	assert.Greater(t, up.maxInFlight(), 1, "steps do run in parallel")
}

// TestRateLimitEndToEnd: a caller over -rate-limit gets 429 with Retry-After and nothing of its batch runs; a batch
// costs its step count; another caller is unaffected. Callers are told apart by their Authorization here
// (-rate-limit-key authorization, as behind a gateway that verifies it).
func TestRateLimitEndToEnd(t *testing.T) {
	up := newRecordingUpstream(t)
	// 0.01 steps/s: nothing refills during the test.
	in := start(t, "-upstream", up.URL+"/api/", "-rate-limit", "0.01", "-rate-burst", "5", "-rate-limit-key", "authorization")
	three := `{"requests":[{"key":"a","path":"a"},{"key":"b","path":"b"},{"key":"c","path":"c"}]}`
	status, _, b := in.send(t, three, "Authorization", "Bearer alice")
	require.Equal(t, 200, status, "%s", b)

	status, hdr, b := in.send(t, three, "Authorization", "Bearer alice")
	require.Equal(t, http.StatusTooManyRequests, status, "%s", b)
	var er refusal
	require.NoError(t, json.Unmarshal(b, &er))
	assert.Equal(t, 4290, er.Result.Error)
	assert.Equal(t, "rate_limited", er.Result.Details[0].Reason)
	ra, err := strconv.Atoi(hdr.Get("Retry-After"))
	require.NoError(t, err, "Retry-After in whole seconds: %q", hdr.Get("Retry-After"))
	assert.Equal(t, 100, ra, "one missing step at 0.01 steps/s")

	// Two one-step batches fit in the two steps left; the third does not: splitting a batch does not help.
	for i, want := range []int{200, 200, 429} {
		status, _, b := in.send(t, `{"requests":[{"key":"x","path":"x"}]}`, "Authorization", "Bearer alice")
		assert.Equal(t, want, status, "one-step batch %d: %s", i, b)
	}

	// Over the burst: refused whoever sends it, with a description that says why.
	six := `[` + strings.TrimSuffix(strings.Repeat(`{"path":"y"},`, 6), ",") + `]` // keys default to "0"…"5"
	status, hdr, b = in.send(t, six, "Authorization", "Bearer bob")
	require.Equal(t, 429, status, "%s", b)
	assert.Empty(t, hdr.Get("Retry-After"))
	assert.Contains(t, string(b), "burst of 5 steps")

	// Another caller has its own bucket.
	status, _, b = in.send(t, three, "Authorization", "Bearer bob")
	require.Equal(t, 200, status, "%s", b)

	assert.Len(t, up.requests(), 3+2+3, "refused batches sent nothing")
	assert.Equal(t, 3.0, in.metric(t, `batchd_batches_rejected_total{reason="rate_limited"}`))
}

// TestRateLimitIdentityCannotBeMinted: by default a caller is its address, so a fresh Authorization on every batch
// (or a forged X-Forwarded-For) does not buy a fresh bucket: of ten 5-step batches under a burst of 10, two run.
func TestRateLimitIdentityCannotBeMinted(t *testing.T) {
	up := newRecordingUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/", "-rate-limit", "1", "-rate-burst", "10")
	five := `[` + strings.TrimSuffix(strings.Repeat(`{"path":"y"},`, 5), ",") + `]`
	accepted := 0
	for i := range 10 {
		status, _, b := in.send(t, five, "Authorization", "Bearer minted-"+strconv.Itoa(i),
			"X-Forwarded-For", "203.0.113."+strconv.Itoa(i))
		if status == 200 {
			accepted++
		} else {
			require.Equal(t, http.StatusTooManyRequests, status, "%s", b)
		}
	}
	// A refill of one step per second can let a third batch through on a slow machine; never ten.
	assert.LessOrEqual(t, accepted, 3)
	assert.GreaterOrEqual(t, accepted, 2)
	assert.Equal(t, 5*accepted, len(up.requests()), "refused batches sent nothing")
}

func TestRateLimitFlags(t *testing.T) {
	c, err := parseConfig(nil, func(k string) string {
		return map[string]string{"BATCHD_RATE_LIMIT": "2.5", "BATCHD_RATE_BURST": "7"}[k]
	}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 2.5, c.rateLimit)
	assert.Equal(t, 7, c.rateBurst)
	c, err = parseConfig([]string{"-rate-limit", "100"}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 100.0, c.rateLimit)
	assert.Zero(t, c.rateBurst, "0: the limiter's default, max(50, rate)")
	c, err = parseConfig(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	assert.Zero(t, c.rateLimit, "off by default")
	assert.Equal(t, "address", c.rateLimitKey, "a client cannot mint its address")
	c, err = parseConfig([]string{"-rate-limit-key", "authorization", "-trusted-proxies", "10.0.0.0/8, 192.0.2.7"},
		func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "authorization", c.rateLimitKey)
	nets, err := c.proxies()
	require.NoError(t, err)
	require.Len(t, nets, 2)
	assert.Equal(t, "10.0.0.0/8", nets[0].String())
	assert.Equal(t, "192.0.2.7/32", nets[1].String())
	for _, args := range [][]string{{"-rate-limit", "-1"}, {"-rate-limit", "x"}, {"-rate-limit", "NaN"},
		{"-rate-limit", "+Inf"}, {"-rate-burst", "-1"}, {"-rate-limit-key", "ip"}, {"-trusted-proxies", "10.0.0.0/33"},
		{"-trusted-proxies", "proxy.local"}} {
		_, err := parseConfig(args, func(string) string { return "" }, io.Discard)
		var u *usageError
		assert.ErrorAs(t, err, &u, "%v", args)
	}
}

// TestSIGTERMDrainsAndExitsZero runs the real main in a child process: SIGTERM while a batch runs lets the batch
// finish and be answered, refuses new batches, and exits 0.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	if os.Getenv("BATCHD_TEST_MAIN") == "1" {
		os.Args = append([]string{"batchd"}, strings.Fields(os.Getenv("BATCHD_TEST_ARGS"))...)
		main()
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGTERMDrainsAndExitsZero$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATCHD_") { // the child's configuration is this test's alone
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "BATCHD_TEST_MAIN=1",
		"BATCHD_TEST_ARGS=-addr 127.0.0.1:0 -log-format json -batch-timeout 20s -drain-delay 0")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	logs := &syncbuf.Buffer{}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			_, _ = logs.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr string }
			if !sent && json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				addrc <- rec.Addr
				sent = true
			}
		}
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a
	case <-time.After(20 * time.Second):
		t.Fatalf("child did not start:\n%s", logs.String())
	}
	in := &instance{base: base, logs: logs, client: &http.Client{Timeout: 30 * time.Second}}

	type answer struct {
		status int
		body   []byte
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := in.client.Post(base+"/v1/batch", "application/json",
			strings.NewReader(`{"requests":[{"key":"s","path":"Demo/Sleep","payload":{"ms":500}},{"key":"e","path":"Demo/Echo","payload":1,"depends_on":["s"]}]}`))
		if err != nil {
			got <- answer{-1, []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- answer{resp.StatusCode, b}
	}()
	require.Eventually(t, func() bool { return in.metric(t, "batchd_steps_in_flight") == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))

	a := <-got
	require.Equal(t, 200, a.status, "%s", a.body)
	assert.Contains(t, string(a.body), `"slept_ms":500`)
	assert.Regexp(t, regexp.MustCompile(`"key":"e","status":200`), string(a.body), "the batch ran to its end")

	// A new batch is not run: 503 while the listener is still open, connection refused once it is closed.
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"draining"`) }, 10*time.Second, 5*time.Millisecond)
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Post(base+"/v1/batch", "application/json",
		strings.NewReader(`{"requests":[{"key":"late","path":"Demo/Echo"}]}`)); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, 503, resp.StatusCode, "%s", b)
	}

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "exit status 0:\n%s", logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not exit after SIGTERM:\n%s", logs.String())
	}
	assert.Contains(t, logs.String(), `"msg":"draining"`)
	assert.Contains(t, logs.String(), `"msg":"stopped"`)
}

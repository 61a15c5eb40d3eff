package main

// End-to-end tests of what batchd does when an upstream breaks HTTP (README "Limits and guarantees"): a raw TCP
// upstream that answers each request as its path says, and records which connection served it.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawUpstream speaks HTTP/1.1 by hand, keep-alive, answering by the request's last path segment:
//
//	zero    "HTTP/1.1 000 Zero" with a JSON body
//	switch  "HTTP/1.1 101 Switching Protocols"
//	stray   a 200 whose body is followed by a whole second response nobody asked for
//	pretty  a 200 with an indented JSON body over several lines
//	other   200 {"ok":true,"result":{"conn":<the connection's number>}}
//
// It numbers connections from 1 and records, for each request, its path and connection, and each connection's
// close (the peer closed it, or it broke).
type rawUpstream struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  int
	served []rawCall
	closed map[int]bool
	change chan struct{} // signalled on every record
}

type rawCall struct {
	path string
	conn int
}

func newRawUpstream(t *testing.T) *rawUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &rawUpstream{ln: ln, closed: map[int]bool{}, change: make(chan struct{}, 1)}
	go u.accept()
	t.Cleanup(func() { ln.Close() })
	return u
}

func (u *rawUpstream) url() string { return "http://" + u.ln.Addr().String() + "/api/" }

func (u *rawUpstream) accept() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		u.conns++
		n := u.conns
		u.mu.Unlock()
		go u.serve(c, n)
	}
}

func (u *rawUpstream) record(f func()) {
	u.mu.Lock()
	f()
	u.mu.Unlock()
	select {
	case u.change <- struct{}{}:
	default:
	}
}

func (u *rawUpstream) serve(c net.Conn, n int) {
	defer func() {
		c.Close()
		u.record(func() { u.closed[n] = true })
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		last := req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:]
		u.record(func() { u.served = append(u.served, rawCall{last, n}) })
		var out string
		switch last {
		case "zero":
			out = "HTTP/1.1 000 Zero\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
		case "switch":
			out = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
		case "stray":
			out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}" +
				"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"stray\":\"bytes\"}"
		case "pretty":
			body := "{\n  \"ok\": true,\n  \"result\": {\n    \"id\": 7,\n    \"s\": \"a\\nb\"\n  }\n}\n"
			out = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		default:
			body := fmt.Sprintf(`{"ok":true,"result":{"conn":%d}}`, n)
			out = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
	}
}

// connOf returns the connection that served the i-th request with path segment last (from 0).
func (u *rawUpstream) connOf(last string, i int) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, s := range u.served {
		if s.path == last {
			if i == 0 {
				return s.conn
			}
			i--
		}
	}
	return 0
}

// waitClosed waits until connection n is closed.
func (u *rawUpstream) waitClosed(t *testing.T, n int) {
	deadline := time.After(20 * time.Second)
	for {
		u.mu.Lock()
		done := u.closed[n]
		u.mu.Unlock()
		if done {
			return
		}
		select {
		case <-u.change:
		case <-deadline:
			t.Fatalf("connection %d was never closed", n)
		}
	}
}

// TestUpstreamStatusOutsideTheFinalRange: an upstream answering with status 000 or 101 has failed the step (502,
// protocol, never "success"): its dependents do not run, an atomic batch does not commit, and the connection that
// carried it is never used again.
func TestUpstreamStatusOutsideTheFinalRange(t *testing.T) {
	up := newRawUpstream(t)
	in := start(t, "-upstream", up.url())
	for _, bad := range []string{"zero", "switch"} {
		rs := in.batch(t, `{"atomic":true,"requests":[
			{"key":"A","path":"ok","rollback":{"path":"undo"}},
			{"key":"B","path":"`+bad+`","depends_on":["A"]},
			{"key":"C","path":"after","payload":"${B.result}"}]}`)
		require.Len(t, rs, 3)
		assert.Equal(t, 200, rs[0].Status)
		assert.Equal(t, 502, rs[1].Status, bad)
		assert.Equal(t, 5021, rs[1].errorCode(t), "upstream protocol error")
		assert.Equal(t, 424, rs[2].Status, "a dependent of a protocol failure does not run")
		status, _, b := in.post(t, "/v1/batch", "application/json", `{"atomic":true,"requests":[
			{"key":"A","path":"ok","rollback":{"path":"undo"}},{"key":"B","path":"`+bad+`","depends_on":["A"]}]}`)
		require.Equal(t, 200, status)
		var ans struct {
			Atomic struct{ Committed bool }
		}
		require.NoError(t, json.Unmarshal(b, &ans))
		assert.False(t, ans.Atomic.Committed, "%s", b)
		// The connection that answered the bad status was closed, never reused.
		up.waitClosed(t, up.connOf(bad, 0))
	}
	for i := range 2 {
		assert.Equal(t, 0, up.connOf("after", i), "C never reached the upstream")
	}
}

// TestStrayBytesOnAnIdleConnection: an upstream that sends bytes past a response's Content-Length has its
// connection closed (Go's transport notices unsolicited bytes on an idle connection) before the next call, which
// gets its own answer, never the stray one.
func TestStrayBytesOnAnIdleConnection(t *testing.T) {
	up := newRawUpstream(t)
	in := start(t, "-upstream", up.url())
	for i := range 3 {
		rs := in.batch(t, `{"requests":[{"key":"S","path":"stray"}]}`)
		require.Equal(t, 200, rs[0].Status)
		assert.JSONEq(t, `{"ok":true}`, string(rs[0].Response))
		up.waitClosed(t, up.connOf("stray", i))
		rs = in.batch(t, `{"requests":[{"key":"N","path":"next"}]}`)
		require.Equal(t, 200, rs[0].Status)
		assert.NotContains(t, string(rs[0].Response), "stray", "the next call got the stray bytes")
		assert.NotEqual(t, up.connOf("stray", i), up.connOf("next", i), "a connection that misbehaved was reused")
	}
}

// TestStreamLinesStayOneLine: a pretty-printing upstream's body and a payload holding a newline stream as exactly
// one NDJSON line per step, each valid JSON.
func TestStreamLinesStayOneLine(t *testing.T) {
	up := newRawUpstream(t)
	in := start(t, "-upstream", up.url())
	status, hdr, b := in.request(t.Context(), t, "/v1/batch", "application/json", `{"requests":[
		{"key":"P","path":"pretty"},{"key":"E","path":"echo","payload":{"s":"line1\nline2"}},
		{"key":"D","path":"x","payload":"${P.result}"}]}`, "Accept", "application/x-ndjson")
	require.Equal(t, 200, status, "%s", b)
	require.Equal(t, "application/x-ndjson", hdr.Get("Content-Type"))
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	require.Len(t, lines, 4, "three steps and the summary:\n%s", b)
	keys := map[string]bool{}
	for _, l := range lines {
		require.True(t, jsontext.Value(l).IsValid(), "line is not JSON: %q", l)
		var rec struct{ Key string }
		require.NoError(t, json.Unmarshal([]byte(l), &rec))
		keys[rec.Key] = true
	}
	assert.Equal(t, map[string]bool{"P": true, "E": true, "D": true, "": true}, keys)
	assert.Contains(t, string(b), `"response":{"ok":true,"result":{"id":7,"s":"a\nb"}}`, "compacted, strings kept")
}

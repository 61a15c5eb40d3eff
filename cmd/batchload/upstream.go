package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Path prefixes the upstream understands: the first segment of a call's path picks its delay, so that one upstream
// (and one batchd in front of it) serves both the 0 ms and the 10 ms scenarios.
const (
	fastPrefix = "fast" // answers at once
	slowPrefix = "slow" // answers after upstream.slow
)

// upstream is the JSON API the scenarios call, directly (baselines) or through batchd. It answers every POST
// {"ok": true, "result": {"new_id": N}} with N from an atomic counter, and counts every call it receives so that a
// run can verify exactly N upstream calls per batch. A call it does not expect is counted as bad and answered with
// an error, so it also surfaces as a step error at the client.
type upstream struct {
	slow time.Duration

	srv *http.Server
	ln  net.Listener
	url string // base URL, with a trailing slash

	calls   atomic.Int64 // every request received
	bad     atomic.Int64 // requests that were not what a scenario sends
	ids     atomic.Int64 // last new_id issued
	lastBad atomic.Pointer[string]
}

// upstreamStats is a snapshot of the upstream's counters; phases subtract two snapshots.
type upstreamStats struct {
	Calls int64
	Bad   int64
}

func (s upstreamStats) sub(o upstreamStats) upstreamStats {
	return upstreamStats{Calls: s.Calls - o.Calls, Bad: s.Bad - o.Bad}
}

// startUpstream listens on addr (use "127.0.0.1:0" for any free port) and serves until close.
func startUpstream(addr string, slow time.Duration) (*upstream, error) {
	if err := requireLoopbackAddr(addr); err != nil {
		return nil, fmt.Errorf("upstream listen address: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &upstream{slow: slow, ln: ln, url: "http://" + ln.Addr().String() + "/"}
	u.srv = &http.Server{
		Handler:           u,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = u.srv.Serve(ln) }() // returns http.ErrServerClosed after close
	return u, nil
}

func (u *upstream) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := u.srv.Shutdown(ctx); err != nil {
		_ = u.srv.Close()
	}
}

func (u *upstream) stats() upstreamStats {
	return upstreamStats{Calls: u.calls.Load(), Bad: u.bad.Load()}
}

// lastBadCall describes the most recent unexpected call, for the report.
func (u *upstream) lastBadCall() string {
	if p := u.lastBad.Load(); p != nil {
		return *p
	}
	return ""
}

func (u *upstream) refuse(w http.ResponseWriter, r *http.Request, status int, why string) {
	u.bad.Add(1)
	msg := fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, why)
	u.lastBad.Store(&msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"ok":false,"result":{"error":%d,"description":%q}}`, status, why)
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == statsPath {
		u.serveStats(w)
		return
	}
	u.calls.Add(1)
	// Read the whole body so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))

	if r.Method != http.MethodPost {
		u.refuse(w, r, http.StatusMethodNotAllowed, "not a POST")
		return
	}
	prefix, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var delay time.Duration
	switch prefix {
	case fastPrefix:
	case slowPrefix:
		delay = u.slow
	default:
		u.refuse(w, r, http.StatusNotFound, "unknown path prefix (want fast/ or slow/)")
		return
	}
	// A chained step's path ends with the new_id of the step before it: it must be an id this upstream issued,
	// which proves that batchd substituted the placeholder (and did not send it literally, or send it too early).
	if ref, ok := strings.CutPrefix(rest, "Item/Get/"); ok {
		id, err := strconv.ParseInt(ref, 10, 64)
		if err != nil || id < 1 || id > u.ids.Load() {
			u.refuse(w, r, http.StatusBadRequest, "chain reference is not an issued new_id: "+strconv.Quote(ref))
			return
		}
	}
	id := u.ids.Add(1)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	buf := make([]byte, 0, 64)
	buf = append(buf, `{"ok":true,"result":{"new_id":`...)
	buf = strconv.AppendInt(buf, id, 10)
	buf = append(buf, "}}"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	_, _ = w.Write(buf)
}

// requireLoopbackAddr refuses a host:port whose host is not a loopback IP or "localhost".
func requireLoopbackAddr(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	return requireLoopbackHost(host)
}

func requireLoopbackHost(host string) error {
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("host " + strconv.Quote(host) + " is not a loopback address (this tool only talks to loopback)")
	}
	return nil
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// childEnv tells a re-executed batchload to serve only the counting upstream: "ADDR DELAY".
const childEnv = "BATCHLOAD_UPSTREAM_CHILD"

// callCounter is what the phases read from the upstream, in this process or in a child.
type callCounter interface {
	stats() upstreamStats
	lastBadCall() string
}

var (
	_ callCounter = (*upstream)(nil)
	_ callCounter = (*childUpstream)(nil)
)

// statsPath is where the upstream reports its counters (GET only, not counted): the parent of a child upstream
// reads them there.
const statsPath = "/_stats"

type statsAnswer struct {
	Calls   int64  `json:"calls"`
	Bad     int64  `json:"bad"`
	LastBad string `json:"last_bad"`
}

func (u *upstream) serveStats(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(statsAnswer{Calls: u.calls.Load(), Bad: u.bad.Load(), LastBad: u.lastBadCall()})
}

// serveUpstreamChild is the whole program of a child upstream: listen, print the base URL on one line, serve until
// stdin closes (the parent stopped or died) or ctx ends.
func serveUpstreamChild(ctx context.Context, spec string, stdin io.Reader, stdout io.Writer) error {
	addr, d, ok := strings.Cut(spec, " ")
	delay, err := time.ParseDuration(d)
	if !ok || err != nil {
		return fmt.Errorf("%s=%q: want \"ADDR DELAY\"", childEnv, spec)
	}
	up, err := startUpstream(addr, delay)
	if err != nil {
		return err
	}
	defer up.close()
	if _, err := fmt.Fprintln(stdout, up.url); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	return nil
}

// childUpstream is the counting upstream running in a child process, so that the client's direct calls cross
// processes just as batchd's calls do.
type childUpstream struct {
	url    string
	client *http.Client
	cmd    *exec.Cmd
	stdin  io.Closer
	done   chan struct{}

	mu      sync.Mutex
	lastErr string
}

func startChildUpstream(ctx context.Context, c *http.Client, addr string, delay time.Duration) (*childUpstream, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("upstream child: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+addr+" "+delay.String())
	cmd.Stderr = os.Stderr
	setParentDeathSignal(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("upstream child: %w", err)
	}
	u := &childUpstream{client: c, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(u.done)
	}()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case u.url = <-line:
	case <-t.C:
	case <-ctx.Done():
	}
	if !strings.HasPrefix(u.url, "http://") {
		u.close()
		return nil, errors.New("upstream child did not report its address")
	}
	return u, nil
}

func (u *childUpstream) close() {
	_ = u.stdin.Close()
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-u.done:
	case <-t.C:
		_ = u.cmd.Process.Kill()
		<-u.done
	}
}

func (u *childUpstream) fetch() (statsAnswer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(u.url, "/")+statsPath, nil)
	if err != nil {
		return statsAnswer{}, err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return statsAnswer{}, err
	}
	defer drainClose(resp)
	var s statsAnswer
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET %s: HTTP %d", statsPath, resp.StatusCode)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// stats reads the child's counters; if it cannot, it reports a bad call so that the phase fails its check
// rather than pass unverified.
func (u *childUpstream) stats() upstreamStats {
	s, err := u.fetch()
	if err != nil {
		u.mu.Lock()
		u.lastErr = "cannot read the upstream's counters: " + err.Error()
		u.mu.Unlock()
		return upstreamStats{Calls: -1 << 40, Bad: 1 << 40}
	}
	return upstreamStats{Calls: s.Calls, Bad: s.Bad}
}

func (u *childUpstream) lastBadCall() string {
	u.mu.Lock()
	msg := u.lastErr
	u.mu.Unlock()
	if msg != "" {
		return msg
	}
	s, err := u.fetch()
	if err != nil {
		return "cannot read the upstream's counters: " + err.Error()
	}
	return s.LastBad
}

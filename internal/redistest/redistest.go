// Package redistest starts a throwaway redis-server for tests, the way httptest starts an HTTP server.
//
// Without redis-server on PATH the test is skipped, unless CI=true: there it is installed (.ci/run), and its
// absence fails the test.
package redistest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batchd/batchd/internal/syncbuf"
)

// Server is a running redis-server on a loopback port.
type Server struct {
	Addr string // host:port
	URL  string // redis://host:port/0
}

// Start runs redis-server on a free loopback port with persistence off, waits until it answers PING, and stops
// it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found on PATH, and CI=true: CI must install it (Debian: apt-get install redis-server)")
		}
		t.Skipf("redis-server not found on PATH: install it to run this test (Debian: apt-get install redis-server); " +
			"with CI=true its absence fails instead")
	}
	// The port is found by listening on :0 and closing; another process may take it before redis-server does, in
	// which case redis-server exits and we try another.
	var last string
	for attempt := 0; attempt < 5; attempt++ {
		s, out, ok := try(t, bin)
		if ok {
			return s
		}
		last = out
	}
	t.Fatalf("redis-server did not start:\n%s", last)
	return nil
}

func try(t testing.TB, bin string) (*Server, string, bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	var out syncbuf.Buffer
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.URL = "redis://" + s.Addr + "/0"
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			t.Cleanup(stop)
			return s, "", true
		}
		select {
		case <-exited:
			return nil, out.String(), false
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, out.String() + "\nlast PING error: " + err.Error(), false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Client returns a client of s, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	readyTimeout = 15 * time.Second // how long batchd may take to answer GET /readyz 200
	stopGrace    = 5 * time.Second  // SIGTERM, then SIGKILL after this
	startTries   = 3                // a free port picked on :0 may be taken before batchd binds it
)

// batchdProc is a batchd subprocess started by the tool.
type batchdProc struct {
	cmd  *exec.Cmd
	args []string
	base string // http://127.0.0.1:PORT
	out  *tailBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's error, valid after done
}

// startBatchd starts bin with the given extra flags (proxy mode when upstream is not empty, demo mode otherwise) on
// a free loopback port and waits until GET /readyz answers 200.
func startBatchd(ctx context.Context, c *http.Client, bin, upstream string, maxParallel int, extra ...string) (*batchdProc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("batchd binary: %w (build it with `go build -o bin/batchd ./cmd/batchd`, or pass -batchd PATH or -target URL)", err)
	}
	var lastErr error
	for range startTries {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		args := []string{"-addr", addr, "-max-parallel", fmt.Sprint(maxParallel)}
		if upstream != "" {
			args = append(args, "-upstream", upstream)
		}
		args = append(args, extra...)
		p, err := spawn(bin, args)
		if err != nil {
			return nil, err
		}
		p.base = "http://" + addr
		err = p.waitReady(ctx, c)
		if err == nil {
			return p, nil
		}
		p.stop()
		lastErr = err
		if ctx.Err() != nil || !p.exitedEarly() {
			break // not a lost race for the port: trying again would not help
		}
	}
	return nil, lastErr
}

func spawn(bin string, args []string) (*batchdProc, error) {
	cmd := exec.Command(bin, args...)
	// batchd reads BATCHD_* from the environment when a flag is absent: a stray BATCHD_UPSTREAM would turn the
	// demo instance into a proxy, so the child gets none of them.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATCHD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// No readiness delay before the drain: nothing balances load in front of it, and the tool stops it after each
	// run. An environment variable rather than a flag, which an older batchd (-compare) would refuse.
	cmd.Env = append(cmd.Env, "BATCHD_DRAIN_DELAY=0")
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out // exec copies in its own goroutines, so batchd never blocks on its logs
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start batchd: %w", err)
	}
	p := &batchdProc{cmd: cmd, args: append([]string{bin}, args...), out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *batchdProc) exitedEarly() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *batchdProc) waitReady(ctx context.Context, c *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return fmt.Errorf("batchd exited before it was ready (%v): %s", p.err, p.out.String())
		case <-ctx.Done():
			return fmt.Errorf("batchd not ready after %v (GET %s/readyz): %s", readyTimeout, p.base, p.out.String())
		case <-tick.C:
		}
		if readyz(ctx, c, p.base) {
			return nil
		}
	}
}

func readyz(ctx context.Context, c *http.Client, base string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_ = drainClose(resp)
	return resp.StatusCode == http.StatusOK
}

// stop sends SIGTERM, waits up to stopGrace for batchd to drain and exit, then kills it.
func (p *batchdProc) stop() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1 and releases it for batchd to bind.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", err
	}
	return addr, nil
}

// tailBuffer keeps the last max bytes written to it (batchd's logs, shown when it fails to start).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.b))
	if s == "" {
		return "(no output)"
	}
	return "output:\n" + s
}

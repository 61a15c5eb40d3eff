package batchtest

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/batchd/batchd/internal/syncbuf"
)

// StartBinary runs the batchd binary bin on a free loopback port with JSON logs, then args, and returns its URL and
// its log (JSON lines) as it grows. It is stopped with SIGTERM when the test ends and must then exit 0.
func StartBinary(t testing.TB, bin string, args ...string) (string, *syncbuf.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			_, _ = logs.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				select {
				case addr <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			assert.NoError(t, err, "batchd did not exit 0 on SIGTERM:\n%s", logs)
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("batchd did not exit within 30s of SIGTERM:\n%s", logs)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a, logs
	case err := <-exited:
		exited <- err
		t.Fatalf("batchd exited before listening: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("batchd did not log its address within 20s:\n%s", logs)
	}
	return "", nil
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/batchtest"
	"github.com/batchd/batchd/internal/syncbuf"
)

// binaries builds cmd/batchd and cmd/batchctl from this module once per test binary.
var binaries = sync.OnceValues(func() (dir string, err error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	dir, err = os.MkdirTemp("", "batchctl-test-")
	if err != nil {
		return "", err
	}
	for _, pkg := range []string{"batchd", "batchctl"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, pkg), "./cmd/"+pkg)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build ./cmd/%s: %v\n%s", pkg, err, out)
		}
	}
	return dir, nil
})

func binary(t *testing.T, name string) string {
	t.Helper()
	dir, err := binaries()
	require.NoError(t, err)
	return filepath.Join(dir, name)
}

// startBatchd runs the batchd binary built from this module in demo mode on a free loopback port and returns its
// URL; it is stopped with SIGTERM when the test ends (at once: no -drain-delay) and must then exit 0.
func startBatchd(t *testing.T, args ...string) string {
	t.Helper()
	server, _ := startBatchdLogs(t, args...)
	return server
}

// startBatchdLogs is startBatchd, and returns batchd's log (JSON lines) as it grows.
func startBatchdLogs(t *testing.T, args ...string) (string, *syncbuf.Buffer) {
	t.Helper()
	return batchtest.StartBinary(t, binary(t, "batchd"), append([]string{"-drain-delay", "0"}, args...)...)
}

// result is what one in-process run of batchctl did.
type result struct {
	code           int
	stdout, stderr string
}

// batchctl runs batchctl in-process with args, stdin and environment variables (name=value).
func batchctl(t *testing.T, stdin string, environ []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	getenv := func(name string) string {
		for _, kv := range environ {
			if k, v, _ := strings.Cut(kv, "="); k == name {
				return v
			}
		}
		return ""
	}
	code := run(ctx, args, env{getenv: getenv, stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr})
	return result{code, stdout.String(), stderr.String()}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// jobsServer is a loopback server of the jobs endpoints as batchd documents them (POST /v1/jobs answering 202
// {"id","status","batches"}, GET and DELETE /v1/jobs/{id}, GET /v1/jobs/{id}/results), for the job commands'
// side of that wire form. It records each upload and whether its body arrived whole; GET /v1/jobs/{id} answers
// the statuses of seq one per poll (the last one again once they run out), and waits on hold, when set, before
// answering the poll with index holdAt.
type jobsServer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	uploads  []upload
	seq      []string // status bodies
	polls    int
	holdAt   int
	hold     chan struct{}
	held     chan struct{} // closed when the poll at holdAt is waiting
	results  string
	requests []string
}

type upload struct {
	lines  []string
	header http.Header
	whole  bool // the body ended cleanly
}

func startJobsServer(t *testing.T) (*jobsServer, string) {
	j := &jobsServer{holdAt: -1}
	j.srv = httptest.NewServer(j)
	t.Cleanup(j.srv.Close)
	return j, j.srv.URL
}

// settledUploads stops the server, waiting for every request it took to be handled (an upload cut short may still
// be read when batchctl has returned), and returns the uploads it recorded.
func (j *jobsServer) settledUploads() []upload {
	j.srv.Close()
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.uploads
}

func (j *jobsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	j.mu.Lock()
	j.requests = append(j.requests, r.Method+" "+r.URL.RequestURI())
	j.mu.Unlock()
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/jobs":
		body, err := io.ReadAll(r.Body)
		u := upload{header: r.Header.Clone(), whole: err == nil}
		for l := range strings.Lines(string(body)) {
			u.lines = append(u.lines, strings.TrimSuffix(l, "\n"))
		}
		j.mu.Lock()
		j.uploads = append(j.uploads, u)
		j.mu.Unlock()
		if err != nil {
			return
		}
		w.Header().Set("Location", "/v1/jobs/j-1")
		w.WriteHeader(202)
		fmt.Fprintf(w, `{"id":"j-1","status":"queued","batches":%d}`, len(u.lines))
	case r.Method == "GET" && r.URL.Path == "/v1/jobs/j-1":
		j.mu.Lock()
		i := min(j.polls, len(j.seq)-1)
		j.polls++
		hold := i == j.holdAt && j.polls-1 == i
		body, held, release := j.seq[i], j.held, j.hold
		j.mu.Unlock()
		if hold {
			close(held)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	case r.Method == "DELETE" && r.URL.Path == "/v1/jobs/j-1":
		_, _ = io.WriteString(w, jobStatus("cancelled", 4, 2, 0))
	case r.Method == "GET" && r.URL.Path == "/v1/jobs/j-1/results":
		j.mu.Lock()
		body := j.results
		j.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, body)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		_, _ = io.WriteString(w, `{"ok":false,"result":{"error":4040,"description":"unknown route"}}`)
	}
}

// jobStatus is a GET /v1/jobs/{id} body.
func jobStatus(status string, total, done, failed int) string {
	finished := "null"
	if status == "done" || status == "cancelled" {
		finished = `"2026-12-02T07:00:41Z"`
	}
	return fmt.Sprintf(`{"id":"j-1","status":%q,"batches":{"total":%d,"done":%d,"failed":%d},"steps":{"done":%d,"failed":%d},`+
		`"created":"2026-12-02T07:00:00Z","started":"2026-12-02T07:00:00Z","finished":%s}`,
		status, total, done, failed, done*2, failed, finished)
}

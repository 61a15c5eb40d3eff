package main

// End-to-end tests of jobs on Redis (README "Jobs", docs/jobs.md): real batchd binaries built from this tree share
// one real redis-server, in front of an upstream that records every call with its Idempotency-Key. Replicas are
// killed with SIGKILL mid-job, holding batches whose calls the upstream is still answering.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/redistest"
)

// jobUpstream answers t/<line>/<step> with {"ok":true,"result":{"id":<line>}} and records each call's line, step,
// Idempotency-Key and arrival order. While gated, a call for a line at or past gateFrom waits for the gate to open
// (or for its caller to go away): the replicas' workers then hold those batches, mid-run.
type jobUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	calls    []jobCall
	gateFrom int
	gate     chan struct{}
	waiting  int
}

type jobCall struct {
	line int
	step string
	key  string
}

func newJobUpstream(t *testing.T, gateFrom int) *jobUpstream {
	u := &jobUpstream{gateFrom: gateFrom, gate: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/t/"), "/")
		line, err := strconv.Atoi(parts[0])
		if err != nil || len(parts) != 2 {
			http.Error(w, "unexpected path "+r.URL.Path, http.StatusNotFound)
			return
		}
		u.mu.Lock()
		u.calls = append(u.calls, jobCall{line: line, step: parts[1], key: r.Header.Get("Idempotency-Key")})
		gated := line >= u.gateFrom && parts[1] == "a"
		if gated {
			u.waiting++
		}
		u.mu.Unlock()
		if gated {
			select {
			case <-u.gate:
			case <-r.Context().Done():
			}
			u.mu.Lock()
			u.waiting--
			u.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"result":{"id":%d}}`, line)
	}))
	t.Cleanup(u.Close)
	return u
}

// waitFor polls cond every 20ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *jobUpstream) held() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.waiting
}

func (u *jobUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.calls)
}

// jobBody is n lines, each a chain of two steps: t/<line>/a, then t/<line>/b with a's id.
func jobBody(n int) []byte {
	var b bytes.Buffer
	for l := 1; l <= n; l++ {
		fmt.Fprintf(&b, `{"requests":[{"key":"a","path":"t/%d/a"},{"key":"b","path":"t/%d/b","payload":{"id":"${a.result.id}"}}]}`+"\n", l, l)
	}
	return b.Bytes()
}

type jobState struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Batches struct {
		Total, Done, Failed, Skipped int64
	} `json:"batches"`
	Steps struct{ Done, Failed int64 } `json:"steps"`
}

func submitJob(t *testing.T, base string, body []byte) string {
	t.Helper()
	resp, err := http.Post(base+"/v1/jobs", "application/x-ndjson", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", b)
	var j struct {
		ID      string `json:"id"`
		Status  string `json:"status"`
		Batches int64  `json:"batches"`
	}
	require.NoError(t, json.Unmarshal(b, &j))
	assert.Equal(t, "/v1/jobs/"+j.ID, resp.Header.Get("Location"))
	assert.Equal(t, "queued", j.Status)
	assert.Equal(t, int64(bytes.Count(body, []byte("\n"))), j.Batches)
	return j.ID
}

func getJob(t *testing.T, base, id string) jobState {
	t.Helper()
	resp, err := http.Get(base + "/v1/jobs/" + id)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	var j jobState
	require.NoError(t, json.Unmarshal(b, &j))
	return j
}

// checkResults reads every result line of a finished job and checks that each of its n lines has exactly one,
// in order, every step answered 200.
func checkResults(t *testing.T, base, id string, n int) {
	t.Helper()
	resp, err := http.Get(base + "/v1/jobs/" + id + "/results?wait=true")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	line := 0
	for sc.Scan() {
		line++
		var rec struct {
			Line   int `json:"line"`
			Answer struct {
				Responses []struct {
					Key    string          `json:"key"`
					Status int             `json:"status"`
					Resp   json.RawMessage `json:"response"`
				} `json:"responses"`
			} `json:"answer"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), "%s", sc.Bytes())
		require.Equal(t, line, rec.Line, "results in line order, each line once")
		require.Len(t, rec.Answer.Responses, 2, "%s", sc.Bytes())
		for _, r := range rec.Answer.Responses {
			require.Equal(t, 200, r.Status, "line %d: %s", line, sc.Bytes())
		}
	}
	require.NoError(t, sc.Err())
	require.Equal(t, n, line)
}

// checkKeys checks that every (line, step) of the job was called, always with Idempotency-Key
// <job>:<line>:<step>, and returns the lines called more than once.
func (u *jobUpstream) checkKeys(t *testing.T, id string, n int) (rerun map[int]bool) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	seen := map[string]int{}
	rerun = map[int]bool{}
	for _, c := range u.calls {
		want := fmt.Sprintf("%s:%d:%s", id, c.line, c.step)
		require.Equal(t, want, c.key, "the Idempotency-Key of a call of line %d step %s", c.line, c.step)
		k := fmt.Sprintf("%d:%s", c.line, c.step)
		seen[k]++
		if seen[k] > 1 {
			rerun[c.line] = true
		}
	}
	for l := 1; l <= n; l++ {
		for _, s := range []string{"a", "b"} {
			require.Positive(t, seen[fmt.Sprintf("%d:%s", l, s)], "line %d step %s never called", l, s)
		}
	}
	return rerun
}

func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			require.NoError(t, err)
			return v
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

// TestJobSurvivesAKilledReplica: two replicas share one Redis; a 2 000-batch job runs on both; when every worker of
// both holds a batch mid-call, one replica is killed (SIGKILL). The other finishes the job: it takes over the dead
// replica's batches after -job-claim-after and runs them again, each line has exactly one result, and every call
// of a (line, step), the re-runs included, carried the same Idempotency-Key.
func TestJobSurvivesAKilledReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("builds batchd and runs two replicas against redis-server")
	}
	const lines, gateFrom, workers = 2000, 1000, 4
	rs := redistest.Start(t)
	up := newJobUpstream(t, gateFrom)
	bin := buildBatchd(t)
	args := []string{bin, "-addr", "127.0.0.1:0", "-upstream", up.URL + "/api/", "-jobs-redis", rs.URL,
		"-job-workers", strconv.Itoa(workers), "-job-claim-after", "1s"}
	a := startChild(t, nil, args...)
	b := startChild(t, nil, args...)

	id := submitJob(t, a.base, jobBody(lines))
	// Every worker of both replicas ends up holding a line past the gate, its first call waiting at the upstream.
	waitFor(t, 60*time.Second, "8 batches held mid-call", func() bool { return up.held() == 2*workers })
	before := getJob(t, b.base, id)
	assert.Less(t, before.Batches.Done, int64(lines))
	require.NoError(t, a.cmd.Process.Kill())
	<-a.done
	a.done <- nil
	callsAtKill := up.count()
	close(up.gate)

	waitFor(t, 60*time.Second, "the job done on the surviving replica", func() bool {
		return getJob(t, b.base, id).Status == "done"
	})
	j := getJob(t, b.base, id)
	assert.Equal(t, int64(lines), j.Batches.Total)
	assert.Equal(t, int64(lines), j.Batches.Done)
	assert.Zero(t, j.Batches.Failed)
	assert.Equal(t, int64(2*lines), j.Steps.Done)
	checkResults(t, b.base, id, lines)

	rerun := up.checkKeys(t, id, lines)
	after := up.count() - callsAtKill
	t.Logf("job %s: %d of %d lines done when the replica was killed; the upstream saw %d calls after the kill "+
		"(%d for the rest of the job, at 2 a line, and %d again for the %d lines the dead replica held: %v)",
		id, before.Batches.Done, lines, after, after-len(rerun), len(rerun), len(rerun), rerun)
	assert.Len(t, rerun, workers, "exactly the lines the killed replica held run again")
	for l := range rerun {
		assert.GreaterOrEqual(t, l, gateFrom)
	}
	assert.Equal(t, float64(workers), metricValue(t, b.base, "batchd_job_batches_reclaimed_total"))
	assert.Equal(t, float64(1), metricValue(t, b.base, `batchd_jobs_total{status="done"}`))
}

// TestJobSurvivesARestart: every replica is killed mid-job; a new one started against the same Redis finishes it.
func TestJobSurvivesARestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds batchd and runs replicas against redis-server")
	}
	const lines, gateFrom, workers = 300, 100, 2
	rs := redistest.Start(t)
	up := newJobUpstream(t, gateFrom)
	bin := buildBatchd(t)
	args := []string{bin, "-addr", "127.0.0.1:0", "-upstream", up.URL + "/api/", "-jobs-redis", rs.URL,
		"-job-workers", strconv.Itoa(workers), "-job-claim-after", "1s"}
	first := []*child{startChild(t, nil, args...), startChild(t, nil, args...)}
	id := submitJob(t, first[0].base, jobBody(lines))
	waitFor(t, 60*time.Second, "every worker holding a batch mid-call", func() bool { return up.held() == 2*workers })
	for _, c := range first {
		require.NoError(t, c.cmd.Process.Kill())
		<-c.done
		c.done <- nil
	}
	close(up.gate)

	again := startChild(t, nil, args...)
	waitFor(t, 60*time.Second, "the job done after the restart", func() bool {
		return getJob(t, again.base, id).Status == "done"
	})
	j := getJob(t, again.base, id)
	assert.Equal(t, int64(lines), j.Batches.Done)
	assert.Equal(t, int64(2*lines), j.Steps.Done)
	checkResults(t, again.base, id, lines)
	rerun := up.checkKeys(t, id, lines)
	assert.Len(t, rerun, 2*workers, "the lines held by the killed replicas run again, and only those")
}

// TestJobFlags: each jobs flag reads its environment variable, the flag wins, and bad values are usage errors.
func TestJobFlags(t *testing.T) {
	env := map[string]string{"BATCHD_JOBS_REDIS": "redis://127.0.0.1:6390/2", "BATCHD_JOB_WORKERS": "7",
		"BATCHD_JOB_CLAIM_AFTER": "45s", "BATCHD_JOB_MAX_BATCHES": "500", "BATCHD_JOB_RESULTS_TTL": "2h",
		"BATCHD_JOB_MAX_RESULT_BYTES": "8MiB", "BATCHD_JOB_MAX_BODY": "64MiB"}
	c, err := parseConfig([]string{"-job-workers", "9"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, jobsConfig{redisURL: "redis://127.0.0.1:6390/2", workers: 9, claimAfter: 45 * time.Second,
		maxBatches: 500, resultsTTL: 2 * time.Hour, maxResultBytes: 8 << 20, maxBody: 64 << 20}, c.jobs)

	c, err = parseConfig(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, jobsConfig{workers: 4, claimAfter: 30 * time.Second, maxBatches: 1_000_000,
		resultsTTL: 24 * time.Hour, maxResultBytes: 256 << 20, maxBody: 1 << 30}, c.jobs)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-job-workers", "0"}, "-job-workers"},
		{[]string{"-job-claim-after", "100ms"}, "-job-claim-after"},
		{[]string{"-job-max-batches", "0"}, "-job-max-batches"},
		{[]string{"-job-results-ttl", "1s"}, "-job-results-ttl"},
		{[]string{"-job-max-result-bytes", "10"}, "-job-max-result-bytes"},
		{[]string{"-job-max-body", "10"}, "-job-max-body"},
		{[]string{"-jobs-redis", "http://127.0.0.1:6379"}, "-jobs-redis"},
	} {
		_, err := parseConfig(tc.args, func(string) string { return "" }, io.Discard)
		var usage *usageError
		require.ErrorAs(t, err, &usage, "%v", tc.args)
		assert.ErrorContains(t, err, tc.want)
	}
}

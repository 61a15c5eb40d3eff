package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeBatchd is just enough of batchd for the scenario batches: independent steps run in parallel, a batch with
// placeholders runs in order substituting "${sK.result.new_id}"; Demo/Echo runs in-process. It lets the tool be
// tested end to end without cmd/batchd. From its batch number miscountFrom on (1 is the first; 0: never) it calls
// the upstream once too often for the first step, as a broken batchd might.
type fakeBatchd struct {
	upstream     string
	client       *http.Client
	miscountFrom int64
	batches      atomic.Int64
}

type fakeResult struct {
	Key      string          `json:"key"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
}

func (f *fakeBatchd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/readyz":
		return
	case r.URL.Path == "/v1/Demo/Echo":
		var payload json.RawMessage
		_ = json.NewDecoder(r.Body).Decode(&payload)
		_, _ = w.Write([]byte(`{"ok":true,"result":` + string(payload) + `}`))
		return
	case r.URL.Path != "/v1/batch":
		http.NotFound(w, r)
		return
	}
	var req struct {
		Requests []struct {
			Key     string          `json:"key"`
			Path    string          `json:"path"`
			Payload json.RawMessage `json:"payload"`
		} `json:"requests"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := make([]fakeResult, len(req.Requests))
	miscount := f.miscountFrom > 0 && f.batches.Add(1) >= f.miscountFrom
	call := func(i int, path string) {
		st := req.Requests[i]
		out[i] = fakeResult{Key: st.Key, Status: http.StatusOK}
		if path == echoPath {
			out[i].Response = json.RawMessage(`{"ok":true,"result":` + string(st.Payload) + `}`)
			return
		}
		n := 1
		if miscount && i == 0 {
			n = 2
		}
		for range n {
			status, body, err := post(r.Context(), f.client, f.upstream+path, st.Payload)
			if err != nil {
				status, body = http.StatusBadGateway, []byte(`{"ok":false}`)
			}
			out[i].Status, out[i].Response = status, body
		}
	}
	chained := strings.Contains(req.Requests[len(req.Requests)-1].Path, "${")
	if chained {
		for i, st := range req.Requests {
			path := st.Path
			if i > 0 {
				id, err := checkNewID(out[i-1].Response)
				if err != nil {
					out[i] = fakeResult{Key: st.Key, Status: http.StatusFailedDependency, Response: json.RawMessage(`{"ok":false}`)}
					continue
				}
				path = strings.Replace(path, "${"+stepKey(i-1)+".result.new_id}", itoa64(id), 1)
			}
			call(i, path)
		}
	} else {
		var wg sync.WaitGroup
		for i, st := range req.Requests {
			wg.Go(func() { call(i, st.Path) })
		}
		wg.Wait()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"responses": out})
}

func itoa64(n int64) string { b, _ := json.Marshal(n); return string(b) }

// startFake serves a fakeBatchd on loopback that calls the upstream the tool will listen on at the returned address.
func startFake(t *testing.T, miscountFrom int64) (target, upstreamAddr string) {
	t.Helper()
	upstreamAddr, err := freeLoopbackAddr()
	require.NoError(t, err)
	c := newTestClient(t)
	srv := httptest.NewServer(&fakeBatchd{upstream: "http://" + upstreamAddr + "/", client: c, miscountFrom: miscountFrom})
	t.Cleanup(srv.Close)
	return srv.URL, upstreamAddr
}

type jsonReport struct {
	Run       runInfo          `json:"run"`
	Scenarios []scenarioResult `json:"scenarios"`
}

func runJSON(t *testing.T, args ...string) (jsonReport, error, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, append([]string{"batchload", "-format", "json", "-max-time", "90s"}, args...), &stdout, &stderr)
	var rep jsonReport
	if stdout.Len() > 0 {
		require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep), stdout.String())
	}
	return rep, err, stderr.String()
}

// requireValidRun asserts what a run must verify whatever the machine's speed: 0 errors and the exact upstream
// calls; it never looks at latencies or throughput.
func requireValidRun(t *testing.T, rep jsonReport, err error, wantScenarios ...string) {
	t.Helper()
	if err != nil {
		require.ErrorIs(t, err, errTargetMissed, "only a missed target may fail a valid run")
	}
	var names []string
	for _, s := range rep.Scenarios {
		names = append(names, s.Name)
		sent := map[string]int{}
		for _, r := range s.Rows {
			sent[r.Mode] = r.Sent
		}
		assert.Empty(t, s.Failures, s.Name)
		require.NotEmpty(t, s.Rows, s.Name)
		assert.NotEmpty(t, s.Targets, s.Name)
		for _, r := range s.Rows {
			assert.Zero(t, r.Errors, "%s %s: %s", s.Name, r.Mode, r.FirstError)
			assert.False(t, r.Aborted, "%s %s", s.Name, r.Mode)
			assert.Positive(t, r.Measured, "%s %s", s.Name, r.Mode)
			if s.Name == "demo10" {
				assert.Nil(t, r.Upstream)
				continue
			}
			if assert.NotNil(t, r.Upstream, "%s %s", s.Name, r.Mode) {
				u := r.Upstream
				assert.Equal(t, int64(r.Steps), u.PerGroup)
				batches := r.Sent
				if u.CountedWith != "" {
					require.Contains(t, sent, u.CountedWith, "%s %s: counted with a row of the run", s.Name, r.Mode)
					batches += sent[u.CountedWith]
				}
				assert.Equal(t, int64(r.Steps)*int64(batches), u.Total, "%s %s: exactly N upstream calls per batch", s.Name, r.Mode)
				assert.Zero(t, u.Bad, "%s %s: %s", s.Name, r.Mode, u.LastBad)
				if u.MinPerGroup >= 0 {
					assert.Equal(t, u.PerGroup, u.MinPerGroup)
					assert.Equal(t, u.PerGroup, u.MaxPerGroup)
				}
			}
		}
	}
	assert.Equal(t, wantScenarios, names)
}

func TestRunAllScenariosAgainstFakeBatchd(t *testing.T) {
	// Throughput windows of 1 s: long enough that a loaded 2-core machine still completes some groups in them.
	target, upAddr := startFake(t, 0)
	rep, err, log := runJSON(t, "-scenario", "all", "-requests", "4", "-warmup", "1", "-delay", "1ms",
		"-duration", "1s", "-concurrency", "3", "-target", target, "-upstream-listen", upAddr, "-demo-target", target)
	requireValidRun(t, rep, err, "a50", "b50", "c10", "d10", "demo10")
	assert.Contains(t, log, "a50 batchd")
	assert.Equal(t, "running at "+target+" (version unknown)", rep.Run.Batchd)
	assert.Positive(t, rep.Run.NProc)

	modes := map[string][]string{}
	for _, s := range rep.Scenarios {
		for _, r := range s.Rows {
			modes[s.Name] = append(modes[s.Name], r.Mode)
		}
	}
	assert.Equal(t, []string{modeBatchd, modeSeq, modePar}, modes["a50"])
	assert.Equal(t, []string{modeBatchd, modeSeq}, modes["c10"], "a chain has no par baseline")
	assert.Equal(t, []string{modeBatch1, modeSingle1, modeBatchC, modeSingleC}, modes["demo10"])
}

func TestRunWithChildOrInProcessUpstream(t *testing.T) {
	for flag, setting := range map[string]string{
		"-upstream-process":       "upstream in a child process (-upstream-process)",
		"-upstream-process=false": "upstream in the client's process (-upstream-process=false)",
	} {
		t.Run(flag, func(t *testing.T) {
			target, upAddr := startFake(t, 0)
			rep, err, _ := runJSON(t, "-scenario", "a50,c10", "-requests", "3", "-warmup", "1", "-delay", "1ms",
				"-target", target, "-upstream-listen", upAddr, flag)
			requireValidRun(t, rep, err, "a50", "c10")
			assert.Contains(t, rep.Run.Settings, setting)
		})
	}
}

func TestRunFailsOnWrongUpstreamCount(t *testing.T) {
	target, upAddr := startFake(t, 1)
	_, err, _ := runJSON(t, "-scenario", "a50", "-requests", "2", "-target", target, "-upstream-listen", upAddr)
	// The probe batch (one step) already sees two calls.
	require.Error(t, err)
	assert.ErrorContains(t, err, "saw 2 calls")
}

func TestRunReportsMiscountedBatches(t *testing.T) {
	target, upAddr := startFake(t, 2) // right for the probe, then one call too many per batch
	var stdout bytes.Buffer
	err := run(context.Background(), []string{"batchload", "-scenario", "a50", "-requests", "2", "-warmup", "0",
		"-target", target, "-upstream-listen", upAddr}, &stdout, &bytes.Buffer{})
	require.ErrorIs(t, err, errCheckFailed)
	assert.Contains(t, stdout.String(), "want 50 ✗ FAIL")
	assert.Contains(t, stdout.String(), "51–51 per batch")
	assert.Contains(t, stdout.String(), "CHECK FAILED")
}

// TestSmokeRealBatchd builds cmd/batchd and runs a50 end to end through it. It checks 0 errors and the exact
// upstream calls, never timings.
func TestSmokeRealBatchd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts cmd/batchd; skipped in -short")
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(t.TempDir(), "batchd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/batchd")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/batchd:\n%s", out)
	rep, err, log := runJSON(t, "-scenario", "a50", "-requests", "5", "-batchd", bin)
	if err != nil && !errors.Is(err, errTargetMissed) {
		t.Fatalf("run: %v\nstderr:\n%s", err, log)
	}
	requireValidRun(t, rep, err, "a50")
	assert.Contains(t, rep.Run.Batchd, bin)

	// The job scenario through the same binary: a job and its interactive comparison, one client alone and beside a
	// job, then two jobs whose RSS is read, every answer checked and every upstream call counted.
	rep, err, log = runJSON(t, "-scenario", "job", "-job-lines", "30", "-job-rss-steps", "100,200", "-concurrency", "4",
		"-batchd", bin)
	if err != nil && !errors.Is(err, errTargetMissed) {
		t.Fatalf("run: %v\nstderr:\n%s", err, log)
	}
	requireValidRun(t, rep, err, "job")
	modes := []string{}
	for _, row := range rep.Scenarios[0].Rows {
		modes = append(modes, row.Mode)
	}
	assert.Equal(t, []string{"interactive d10", "job", "one client, alone", "one client, during a job", "job beside one client"}, modes)
	assert.Len(t, rep.Scenarios[0].Targets, 2, "throughput and RSS")
	notes := strings.Join(rep.Scenarios[0].Notes, "\n")
	assert.Contains(t, notes, "batchd RSS during a job of 200 steps")
	assert.Contains(t, notes, "one client's d10 batches while a job runs ÷ alone: p50")
}

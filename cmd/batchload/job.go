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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The job scenario (README.md here): the same 10-step batches (10 independent fast/Item/Add steps) sent as one job of
// -job-lines lines and as -job-lines interactive batches by -concurrency clients; steps/s of each, and the job's
// as a ratio of the interactive figure; then jobs of each -job-rss-steps size, with batchd's resident memory read
// from /proc while each runs, to show it flat as the job grows. Every answer is checked, and the upstream must see
// exactly 10 calls per batch. Then one client's d10 latency alone and while a job runs beside it.

const (
	modeInteractive = "interactive d10"
	modeJob         = "job"
	// One client sending d10 batches one after another, alone and while a job of -job-lines lines runs beside it:
	// the latency an interactive caller sees when a job shares the replica.
	modeOneAlone     = "one client, alone"
	modeOneDuringJob = "one client, during a job"
	modeJobBeside    = "job beside one client"
)

// jobPoll is how often a job's status is read while it runs, and batchd's RSS sampled.
const jobPoll = 50 * time.Millisecond

// runJob runs the job scenario against the batchd at base; pid is its process id (0: not known, no RSS figures).
func (r *runner) runJob(ctx context.Context, base string, up callCounter, pid int) scenarioResult {
	cfg := r.cfg
	spec := batchSpec{kind: batchIndependent, steps: 10, prefix: fastPrefix}
	res := scenarioResult{Name: "job", Title: fmt.Sprintf("%d batches of 10 independent steps, upstream 0 ms: "+
		"one job, and %d clients sending them as interactive batches", cfg.jobLines, cfg.concurrency)}

	r.progress("job %s: %d batches from %d clients", modeInteractive, cfg.jobLines, cfg.concurrency)
	res.Rows = append(res.Rows, r.interactiveRow(ctx, base, up, spec, cfg.jobLines, cfg.concurrency, nil))
	r.progress("job %s: one job of %d lines", modeJob, cfg.jobLines)
	row, _ := r.jobRow(ctx, base, up, spec, cfg.jobLines, 0)
	res.Rows = append(res.Rows, row)
	r.progress("job latency: one client's batches alone, then while a job of %d lines runs", cfg.jobLines)
	res.Rows = append(res.Rows, r.besideJob(ctx, base, up, spec)...)
	r.judge(&res)

	if pid == 0 {
		res.Notes = append(res.Notes, "RSS not measured: batchd's process is not known (-target)")
		return res
	}
	var first, last int64
	for i, steps := range cfg.jobRSSSteps {
		lines := max(steps/10, 1)
		r.progress("job RSS: a job of %d steps (%d lines)", lines*10, lines)
		row, peak := r.jobRow(ctx, base, up, spec, lines, pid)
		if !row.ok() {
			res.Failures = append(res.Failures, fmt.Sprintf("job of %d steps: %d errors (first: %s), upstream calls %s",
				lines*10, row.Errors, row.FirstError, describeCalls(row.Upstream)))
			break
		}
		res.Notes = append(res.Notes, fmt.Sprintf("batchd RSS during a job of %d steps (%d lines): peak %.1f MiB, "+
			"after it %.1f MiB; %.0f steps/s", lines*10, lines, mib(peak), mib(rss(pid)), row.StepsPerSecond()))
		if i == 0 {
			first = peak
		}
		last = peak
	}
	if first > 0 && len(cfg.jobRSSSteps) > 1 {
		res.Targets = append(res.Targets, ratioTarget(
			fmt.Sprintf("RSS flat: peak RSS at %d steps ≤ 1.5 × at %d steps", cfg.jobRSSSteps[len(cfg.jobRSSSteps)-1], cfg.jobRSSSteps[0]),
			fmt.Sprintf("%.1f / %.1f MiB", mib(last), mib(first)), float64(last), float64(first), 1.5, true))
	}
	return res
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// interactiveRow sends n batches through POST /v1/batch from the given number of clients, as fast as they are
// answered, until they are sent or stop is closed (nil: never).
func (r *runner) interactiveRow(ctx context.Context, base string, up callCounter, spec batchSpec, n, clients int, stop <-chan struct{}) phaseResult {
	row := phaseResult{Mode: modeInteractive, Steps: spec.steps, Clients: clients,
		Upstream: &callCheck{PerGroup: int64(spec.steps), MinPerGroup: -1}}
	op := batchdOp(r.client, base, spec)
	before := up.stats()
	var (
		next atomic.Int64
		mu   sync.Mutex
		lats = make([]time.Duration, 0, n)
		wg   sync.WaitGroup
	)
	t0 := time.Now()
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil && !stopped() {
				d, err := op(ctx)
				mu.Lock()
				row.Sent++
				if err != nil {
					row.fail(err)
				} else {
					lats = append(lats, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	row.Elapsed = time.Since(t0)
	row.Aborted = ctx.Err() != nil
	row.Measured = len(lats)
	row.Lat = summarize(lats)
	row.Throughput = float64(row.Measured) / row.Elapsed.Seconds()
	d := up.stats().sub(before)
	row.Upstream.Total, row.Upstream.Expected, row.Upstream.Bad = d.Calls, int64(row.Sent*spec.steps), d.Bad
	row.Upstream.LastBad = up.lastBadCall()
	return row
}

// besideJob measures one client's d10 batches sent one after another: first -job-lines of them (at most 2000)
// alone, then as many while a job of -job-lines lines runs, stopping when the job is done. The job and the client
// share the upstream, so their calls are checked together, on the job's row.
func (r *runner) besideJob(ctx context.Context, base string, up callCounter, spec batchSpec) []phaseResult {
	n := r.cfg.jobLines
	alone := r.interactiveRow(ctx, base, up, spec, min(n, 2000), 1, nil)
	alone.Mode = modeOneAlone
	before := up.stats()
	done := make(chan struct{})
	var job phaseResult
	go func() {
		defer close(done)
		job, _ = r.jobRow(ctx, base, up, spec, n, 0)
	}()
	during := r.interactiveRow(ctx, base, up, spec, n, 1, done)
	<-done
	during.Mode, job.Mode = modeOneDuringJob, modeJobBeside
	d := up.stats().sub(before)
	both := callCheck{PerGroup: int64(spec.steps), Total: d.Calls, Expected: int64((job.Sent + during.Sent) * spec.steps),
		MinPerGroup: -1, Bad: d.Bad, LastBad: up.lastBadCall()}
	forJob, forClient := both, both
	forJob.CountedWith, forClient.CountedWith = modeOneDuringJob, modeJobBeside
	job.Upstream, during.Upstream = &forJob, &forClient
	return []phaseResult{alone, during, job}
}

// jobRow submits a job of n copies of spec's batch, waits for it to be done, and checks its status, every line
// of its results and the upstream's count. The time measured runs from the submission to the status done. With a
// pid, batchd's RSS is sampled while the job runs; its peak is returned.
func (r *runner) jobRow(ctx context.Context, base string, up callCounter, spec batchSpec, n int, pid int) (phaseResult, int64) {
	row := phaseResult{Mode: modeJob, Steps: spec.steps, Clients: 1, Sent: n,
		Upstream: &callCheck{PerGroup: int64(spec.steps), Expected: int64(n * spec.steps), MinPerGroup: -1}}
	if n != r.cfg.jobLines {
		row.Mode = fmt.Sprintf("job of %d steps", n*spec.steps)
	}
	before := up.stats()
	var peak int64
	t0 := time.Now()
	id, err := submitJob(ctx, r.client, base, spec.body(), n)
	if err != nil {
		row.fail(err)
		return row, 0
	}
	tick := time.NewTicker(jobPoll)
	defer tick.Stop()
	var st jobStatus
	for {
		if pid != 0 {
			peak = max(peak, rss(pid))
		}
		st, err = getJobStatus(ctx, r.client, base, id)
		if err != nil || st.Status == "done" || st.Status == "cancelled" {
			break
		}
		select {
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-tick.C:
		}
		if err != nil {
			break
		}
	}
	row.Elapsed = time.Since(t0)
	switch {
	case err != nil:
		row.Aborted = ctx.Err() != nil
		row.fail(err)
		return row, peak
	case st.Status != "done":
		row.fail(fmt.Errorf("job %s ended %s", id, st.Status))
	case st.Batches.Done != int64(n) || st.Batches.Failed != 0 || st.Steps.Done != int64(n*spec.steps) || st.Steps.Failed != 0:
		row.fail(fmt.Errorf("job %s: batches %+v, steps %+v; want %d done, none failed", id, st.Batches, st.Steps, n))
	}
	row.Throughput = float64(n) / row.Elapsed.Seconds()
	checked, err := checkJobResults(ctx, r.client, base, id, spec, n)
	row.Measured = checked
	if err != nil {
		row.fail(err)
	}
	d := up.stats().sub(before)
	row.Upstream.Total, row.Upstream.Bad, row.Upstream.LastBad = d.Calls, d.Bad, up.lastBadCall()
	return row, peak
}

// repeatReader is n copies of line, each followed by a newline: a job body made as it is sent.
type repeatReader struct {
	line []byte
	left int
	off  int
}

func (rr *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && rr.left > 0 {
		if rr.off == len(rr.line) {
			p[n] = '\n'
			n++
			rr.off, rr.left = 0, rr.left-1
			continue
		}
		c := copy(p[n:], rr.line[rr.off:])
		n += c
		rr.off += c
	}
	if n == 0 && rr.left == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func submitJob(ctx context.Context, c *http.Client, base string, line []byte, n int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/jobs", &repeatReader{line: line, left: n})
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("submit job: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("submit job: HTTP %d: %s", resp.StatusCode, clip(b))
	}
	var a struct {
		ID      string `json:"id"`
		Batches int    `json:"batches"`
	}
	if err := json.Unmarshal(b, &a); err != nil || a.ID == "" || a.Batches != n {
		return "", fmt.Errorf("submit job: answer %s, want an id and %d batches", clip(b), n)
	}
	return a.ID, nil
}

type jobStatus struct {
	Status  string `json:"status"`
	Batches struct {
		Total, Done, Failed, Skipped int64
	} `json:"batches"`
	Steps struct{ Done, Failed int64 } `json:"steps"`
}

func getJobStatus(ctx context.Context, c *http.Client, base, id string) (jobStatus, error) {
	var st jobStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id, nil)
	if err != nil {
		return st, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return st, fmt.Errorf("job status: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("job status: HTTP %d: %s", resp.StatusCode, clip(b))
	}
	return st, json.Unmarshal(b, &st)
}

// checkJobResults reads a job's results and checks that lines 1…n come once each, in order, each answer the batch
// answer checkBatch accepts. It returns how many lines passed.
func checkJobResults(ctx context.Context, c *http.Client, base, id string, spec batchSpec, n int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id+"/results", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("job results: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("job results: HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		var rec struct {
			Line   int             `json:"line"`
			Answer json.RawMessage `json:"answer"`
			Steps  int             `json:"steps"`
			Failed int             `json:"failed"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return line - 1, fmt.Errorf("job results: line %d is not a results record: %w: %s", line, err, clip(sc.Bytes()))
		}
		if rec.Line != line || rec.Steps != spec.steps || rec.Failed != 0 {
			return line - 1, fmt.Errorf("job results: record %d says line %d, %d steps, %d failed; want line %d, %d steps, 0 failed",
				line, rec.Line, rec.Steps, rec.Failed, line, spec.steps)
		}
		if err := checkBatch(spec, http.StatusOK, rec.Answer); err != nil {
			return line - 1, fmt.Errorf("job results: line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return line, fmt.Errorf("job results: %w", err)
	}
	if line != n {
		return line, fmt.Errorf("job results: %d lines, want %d", line, n)
	}
	return line, nil
}

// rss is the resident set of process pid in bytes, from /proc (0 where there is none).
func rss(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// parseSteps parses -job-rss-steps: comma-separated step counts.
func parseSteps(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 10 || n > 10_000_000 {
			return nil, errors.New("-job-rss-steps: want step counts from 10 to 10000000, comma-separated, not " + strconv.Quote(part))
		}
		out = append(out, n)
	}
	return out, nil
}

// jobArgs are the flags of the job scenario given to the batchd the tool starts.
func (c config) jobArgs() []string {
	var args []string
	if c.jobsRedis != "" {
		args = append(args, "-jobs-redis", c.jobsRedis)
	}
	if c.jobWorkers > 0 {
		args = append(args, "-job-workers", strconv.Itoa(c.jobWorkers))
	}
	return args
}

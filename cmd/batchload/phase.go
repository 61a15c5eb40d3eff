package main

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// op runs one group of calls — one batch through batchd, or the same calls made directly by the client — and
// returns its latency: from sending the first request to reading the last byte of the last response. Checking the
// answers is not timed, except where the next call needs them (the seq chain reads each new_id).
type op func(ctx context.Context) (time.Duration, error)

// maxOpsPerClient bounds every loop by count as well as by time.
const maxOpsPerClient = 1_000_000

// phaseResult is one row of a scenario's table.
type phaseResult struct {
	Mode       string        `json:"mode"`
	Steps      int           `json:"steps_per_group"` // calls per batch or per client-side group
	Clients    int           `json:"clients"`
	Warmup     int           `json:"warmup_groups"` // sent and checked, not measured
	Sent       int           `json:"sent_groups"`   // warm-up included
	Measured   int           `json:"measured_groups"`
	Lat        latencyStats  `json:"latency"`
	Elapsed    time.Duration `json:"measured_wall_ns"`  // wall time of the measured part
	Throughput float64       `json:"groups_per_second"` // measured groups / Elapsed
	Errors     int           `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	Upstream   *callCheck    `json:"upstream,omitempty"` // nil in demo mode: batchd's embedded API is not counted
	Aborted    bool          `json:"aborted,omitempty"`  // -max-time or a signal cut the phase short
	// CPU used during a throughput phase's windows (warm-ups included), and the groups sent in them: batchd's
	// process's (a batchd row, when the tool started it) and the tool's own, the client's (every row; the upstream
	// runs in a process of its own unless -upstream-process=false).
	ServerCPU time.Duration `json:"server_cpu_ns,omitempty"`
	ClientCPU time.Duration `json:"client_cpu_ns,omitempty"`
	CPUGroups int           `json:"cpu_groups,omitempty"`
}

// ServerCPUPerGroup and ClientCPUPerGroup are the CPU per group of a throughput phase; 0 when not measured.
func (p phaseResult) ServerCPUPerGroup() time.Duration { return perGroup(p.ServerCPU, p.CPUGroups) }
func (p phaseResult) ClientCPUPerGroup() time.Duration { return perGroup(p.ClientCPU, p.CPUGroups) }

func perGroup(cpu time.Duration, groups int) time.Duration {
	if groups == 0 {
		return 0
	}
	return cpu / time.Duration(groups)
}

// StepsPerSecond is the throughput in calls.
func (p phaseResult) StepsPerSecond() float64 { return p.Throughput * float64(p.Steps) }

// callCheck is what the upstream counted during a phase.
type callCheck struct {
	PerGroup int64 `json:"expected_per_group"`
	Total    int64 `json:"calls"`
	Expected int64 `json:"expected_calls"` // PerGroup × groups sent
	// Per-group deltas, known when groups run one after another (MinPerGroup < 0 when not).
	MinPerGroup int64  `json:"min_per_group"`
	MaxPerGroup int64  `json:"max_per_group"`
	Bad         int64  `json:"bad_calls"`
	LastBad     string `json:"last_bad_call,omitempty"`
	// CountedWith names the row that ran at the same time against the same upstream: Total and Expected are then
	// the two rows' calls together.
	CountedWith string `json:"counted_with,omitempty"`
}

// OK reports whether the upstream saw exactly the calls the phase sent and nothing unexpected.
func (c *callCheck) OK() bool {
	if c == nil {
		return true
	}
	if c.Total != c.Expected || c.Bad != 0 {
		return false
	}
	return c.MinPerGroup < 0 || (c.MinPerGroup == c.PerGroup && c.MaxPerGroup == c.PerGroup)
}

// ok reports whether the row is a valid measurement: something measured, no error, the calls counted exactly.
func (p phaseResult) ok() bool {
	return !p.Aborted && p.Measured > 0 && p.Errors == 0 && p.Upstream.OK()
}

func (p *phaseResult) fail(err error) {
	p.Errors++
	if p.FirstError == "" {
		p.FirstError = err.Error()
	}
}

// seqPhase is one row of a latency scenario: count measured groups after warmup ones, sent by one client.
type seqPhase struct {
	mode          string
	steps         int
	count, warmup int
	op            op
}

// runInterleaved runs latency phases from one client, one group at a time, in rounds: round i sends group i of
// every phase that still has one. Interleaving spreads any change of the machine's background load over all rows
// alike, so the ratios between rows stay meaningful on a shared machine. Groups never overlap, so the upstream's
// count is checked per group. Throughput is measured groups over the wall time they took.
func runInterleaved(ctx context.Context, up callCounter, phases []seqPhase) []phaseResult {
	res := make([]phaseResult, len(phases))
	lats := make([][]time.Duration, len(phases))
	rounds := 0
	for i, ph := range phases {
		res[i] = phaseResult{Mode: ph.mode, Steps: ph.steps, Clients: 1, Warmup: ph.warmup}
		if up != nil {
			res[i].Upstream = &callCheck{PerGroup: int64(ph.steps), MinPerGroup: 1 << 62, MaxPerGroup: -1}
		}
		lats[i] = make([]time.Duration, 0, ph.count)
		rounds = max(rounds, ph.warmup+ph.count)
	}
	aborted := false
	for r := 0; r < rounds && !aborted; r++ {
		for i, ph := range phases {
			if r >= ph.warmup+ph.count {
				continue
			}
			if ctx.Err() != nil {
				aborted = true
				break
			}
			row := &res[i]
			var s0 upstreamStats
			if up != nil {
				s0 = up.stats()
			}
			t0 := time.Now()
			d, err := ph.op(ctx)
			wall := time.Since(t0)
			row.Sent++
			if c := row.Upstream; c != nil {
				delta := up.stats().sub(s0)
				c.Total += delta.Calls
				c.Bad += delta.Bad
				c.MinPerGroup = min(c.MinPerGroup, delta.Calls)
				c.MaxPerGroup = max(c.MaxPerGroup, delta.Calls)
				if delta.Bad > 0 {
					c.LastBad = up.lastBadCall()
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					aborted = true
					break
				}
				row.fail(err)
				continue
			}
			if r >= ph.warmup {
				lats[i] = append(lats[i], d)
				row.Elapsed += wall
			}
		}
	}
	for i := range res {
		row := &res[i]
		row.Aborted = aborted && row.Sent < phases[i].warmup+phases[i].count
		row.Lat = summarize(lats[i])
		row.Measured = len(lats[i])
		if row.Elapsed > 0 {
			row.Throughput = float64(row.Measured) / row.Elapsed.Seconds()
		}
		if c := row.Upstream; c != nil {
			c.Expected = c.PerGroup * int64(row.Sent)
			if c.MaxPerGroup < 0 {
				c.MinPerGroup = -1
			}
		}
	}
	return res
}

// concPhase is one row of a throughput scenario: clients loops sending groups with op.
type concPhase struct {
	mode  string
	steps int
	op    op
	// server, when not 0, is the pid of the batchd that serves the phase's groups: its CPU is read around each
	// window (ServerCPU).
	server int
}

// runConcurrent runs throughput phases, each as clients loops sending one group after another. Each phase's
// measured time dur is cut into rounds windows, and the phases take turns window by window (round i runs window i
// of every phase), so that a change of the machine's background load hits every row alike, as runInterleaved
// does for latency. Every window starts with a warm-up (warm for a phase's first window, the shorter of warm and
// dur/rounds/5 for the others: the loops start afresh, the connections are warm already). Groups that complete
// within a window after its warm-up count towards throughput; those that also started after the warm-up give
// the latencies. No client starts a group after its window ends, and every group started is finished before the
// next window, so the upstream's count is exact.
func runConcurrent(ctx context.Context, phases []concPhase, clients, rounds int, warm, dur time.Duration, up callCounter) []phaseResult {
	rounds = max(rounds, 1)
	slice := dur / time.Duration(rounds)
	res := make([]phaseResult, len(phases))
	lats := make([][]time.Duration, len(phases))
	for i, ph := range phases {
		res[i] = phaseResult{Mode: ph.mode, Steps: ph.steps, Clients: clients}
		if up != nil {
			res[i].Upstream = &callCheck{PerGroup: int64(ph.steps), MinPerGroup: -1, MaxPerGroup: -1}
		}
	}
	for r := range rounds {
		w := warm
		if r > 0 {
			w = min(warm, slice/5)
		}
		for i, ph := range phases {
			if ctx.Err() != nil {
				res[i].Aborted = true
				continue
			}
			row := &res[i]
			var s0 upstreamStats
			if up != nil {
				s0 = up.stats()
			}
			sent0 := row.Sent
			server0, okS := processCPU(ph.server)
			client0, okC := processCPU(0)
			lats[i] = concurrentWindow(ctx, row, clients, w, slice, ph.op, lats[i])
			server1, okS1 := processCPU(ph.server)
			client1, okC1 := processCPU(0)
			if okC && okC1 {
				row.ClientCPU += client1 - client0
				row.CPUGroups += row.Sent - sent0
				if ph.server != 0 && okS && okS1 {
					row.ServerCPU += server1 - server0
				}
			}
			if c := row.Upstream; c != nil {
				d := up.stats().sub(s0)
				c.Total += d.Calls
				c.Bad += d.Bad
				if d.Bad > 0 {
					c.LastBad = up.lastBadCall()
				}
			}
		}
	}
	for i := range res {
		row := &res[i]
		row.Lat = summarize(lats[i])
		if row.Elapsed > 0 {
			row.Throughput = float64(row.Measured) / row.Elapsed.Seconds()
		}
		if c := row.Upstream; c != nil {
			c.Expected = c.PerGroup * int64(row.Sent)
		}
	}
	return res
}

// concurrentWindow runs one window of a throughput phase, warm then dur, adding its counts to row and its
// latencies to lat.
func concurrentWindow(ctx context.Context, row *phaseResult, clients int, warm, dur time.Duration, o op, lat []time.Duration) []time.Duration {
	type worker struct {
		lat                  []time.Duration
		sent, done, warmDone int
		errs                 int
		firstErr             error
		aborted              bool
	}
	ws := make([]worker, clients)
	begin := time.Now()
	measureFrom := begin.Add(warm)
	end := measureFrom.Add(dur)
	var wg sync.WaitGroup
	for w := range ws {
		wg.Go(func() {
			me := &ws[w]
			for range maxOpsPerClient {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				if ctx.Err() != nil {
					me.aborted = true
					return
				}
				d, err := o(ctx)
				t1 := time.Now()
				me.sent++
				if err != nil {
					if ctx.Err() != nil {
						me.aborted = true
						return
					}
					me.errs++
					if me.firstErr == nil {
						me.firstErr = err
					}
					continue
				}
				if t1.Before(measureFrom) {
					me.warmDone++
					continue
				}
				if !t1.After(end) {
					me.done++
					if !t0.Before(measureFrom) {
						me.lat = append(me.lat, d)
					}
				}
			}
		})
	}
	wg.Wait()
	aborted := false
	for _, w := range ws {
		lat = append(lat, w.lat...)
		row.Sent += w.sent
		row.Measured += w.done
		row.Warmup += w.warmDone
		row.Errors += w.errs
		if w.firstErr != nil && row.FirstError == "" {
			row.FirstError = w.firstErr.Error()
		}
		aborted = aborted || w.aborted
	}
	row.Aborted = row.Aborted || aborted
	if aborted {
		row.Elapsed += max(time.Since(measureFrom), time.Millisecond)
	} else {
		row.Elapsed += dur
	}
	return lat
}

// batchdOp sends the batch body to batchd's /v1/batch and checks the answer.
func batchdOp(c *http.Client, base string, spec batchSpec) op {
	body := spec.body()
	url := base + "/v1/batch"
	return func(ctx context.Context) (time.Duration, error) {
		t0 := time.Now()
		status, b, err := post(ctx, c, url, body)
		d := time.Since(t0)
		if err != nil {
			return d, err
		}
		return d, checkBatch(spec, status, b)
	}
}

// seqOp makes the batch's calls directly, one by one; a chain feeds each new_id into the next call's path.
func seqOp(c *http.Client, upURL string, spec batchSpec) op {
	bodies := make([][]byte, spec.steps)
	for i := range bodies {
		bodies[i] = spec.directBody(i)
	}
	return func(ctx context.Context) (time.Duration, error) {
		answers := make([][]byte, spec.steps)
		var prev int64
		t0 := time.Now()
		for i := range spec.steps {
			path := addPath(spec.prefix)
			if spec.kind == batchChain && i > 0 {
				path = getPath(spec.prefix, strconv.FormatInt(prev, 10))
			}
			status, b, err := post(ctx, c, upURL+path, bodies[i])
			if err != nil {
				return time.Since(t0), err
			}
			if status != http.StatusOK {
				return time.Since(t0), errStatus(status, b)
			}
			if spec.kind == batchChain {
				if prev, err = checkNewID(b); err != nil {
					return time.Since(t0), err
				}
			}
			answers[i] = b
		}
		d := time.Since(t0)
		for _, b := range answers {
			if _, err := checkNewID(b); err != nil {
				return d, err
			}
		}
		return d, nil
	}
}

// parOp makes the batch's independent calls directly, all at once, one goroutine each.
func parOp(c *http.Client, upURL string, spec batchSpec) op {
	url := upURL + addPath(spec.prefix)
	bodies := make([][]byte, spec.steps)
	for i := range bodies {
		bodies[i] = spec.directBody(i)
	}
	return func(ctx context.Context) (time.Duration, error) {
		ends := make([]time.Time, spec.steps)
		errs := make([]error, spec.steps)
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range spec.steps {
			wg.Go(func() {
				status, b, err := post(ctx, c, url, bodies[i])
				ends[i] = time.Now()
				switch {
				case err != nil:
					errs[i] = err
				case status != http.StatusOK:
					errs[i] = errStatus(status, b)
				default:
					_, errs[i] = checkNewID(b)
				}
			})
		}
		wg.Wait()
		last := t0
		for _, e := range ends {
			if e.After(last) {
				last = e
			}
		}
		d := last.Sub(t0)
		for _, err := range errs {
			if err != nil {
				return d, err
			}
		}
		return d, nil
	}
}

// directDemoOp calls one demo method on its own endpoint, POST /v1/Demo/Echo.
func directDemoOp(c *http.Client, base string) op {
	spec := batchSpec{kind: batchEcho, steps: 1}
	body := spec.directBody(0)
	url := base + "/v1/" + echoPath
	return func(ctx context.Context) (time.Duration, error) {
		t0 := time.Now()
		status, b, err := post(ctx, c, url, body)
		d := time.Since(t0)
		if err != nil {
			return d, err
		}
		if status != http.StatusOK {
			return d, errStatus(status, b)
		}
		return d, checkEcho(b, 0)
	}
}

package main

import (
	"context"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

var (
	// errCheckFailed: a run's results are not valid (errors, wrong upstream call count, cut short).
	errCheckFailed = errors.New("check failed")
	// errTargetMissed: every check passed but a scenario's target was missed.
	errTargetMissed = errors.New("target missed")
)

// scenarioResult is one scenario's table, targets and verdict.
type scenarioResult struct {
	Name     string        `json:"name"`
	Title    string        `json:"title"`
	Rows     []phaseResult `json:"rows"`
	Targets  []target      `json:"targets"`
	Notes    []string      `json:"notes,omitempty"`
	Failures []string      `json:"failures,omitempty"` // checks that failed: the measurement is not valid
}

// runInfo describes the run for the report's header.
type runInfo struct {
	Date      string   `json:"date"`
	Command   string   `json:"command"`
	Commit    string   `json:"commit"`
	Batchd    string   `json:"batchd"`
	NProc     int      `json:"nproc"`
	GoMaxProc int      `json:"gomaxprocs"`
	GoVersion string   `json:"go_version"`
	Platform  string   `json:"platform"`
	LoadAvg   string   `json:"loadavg,omitempty"` // 1, 5, 15 min at the start (Linux): other work on a shared machine
	Settings  []string `json:"settings"`
}

// run is the whole tool; main only adds the signal context and the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		args = []string{"batchload"}
	}
	cfg, err := parseConfig(args[1:], stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.maxTime, fmt.Errorf("-max-time %v reached", cfg.maxTime))
	defer cancel()

	// The widest fan-out is the par baseline of d10: concurrency clients × 10 calls at once.
	client := newHTTPClient(max(256, cfg.concurrency*10+cfg.concurrency))
	defer client.CloseIdleConnections()

	r := &runner{cfg: cfg, client: client, log: stderr}
	info := describeRun(ctx, args, cfg)
	rep := newReporter(cfg.format, stdout)
	rep.header(info)

	proxyScenarios := slices.DeleteFunc(slices.Clone(cfg.scenarios), func(s string) bool { return s == "demo10" })
	var results []scenarioResult
	if len(proxyScenarios) > 0 {
		rs, err := r.runProxyScenarios(ctx, proxyScenarios, rep)
		results = append(results, rs...)
		if err != nil {
			rep.footer(results)
			return err
		}
	}
	if slices.Contains(cfg.scenarios, "demo10") {
		res, err := r.runDemo(ctx)
		if err != nil {
			rep.footer(results)
			return err
		}
		rep.scenario(res)
		results = append(results, res)
	}
	rep.footer(results)
	return verdict(ctx, results)
}

// verdict turns the results into run's error: failed checks first, then missed targets.
func verdict(ctx context.Context, results []scenarioResult) error {
	var failed, missed []string
	for _, res := range results {
		failed = append(failed, res.Failures...)
		for _, t := range res.Targets {
			if !t.Pass {
				missed = append(missed, res.Name+": "+t.Desc)
			}
		}
	}
	if ctx.Err() != nil {
		failed = append(failed, "run cut short: "+context.Cause(ctx).Error())
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %s", errCheckFailed, strings.Join(failed, "; "))
	}
	if len(missed) > 0 {
		return fmt.Errorf("%w: %s", errTargetMissed, strings.Join(missed, "; "))
	}
	return nil
}

// runner holds what the scenarios share.
type runner struct {
	cfg    config
	client *http.Client
	log    io.Writer
}

func (r *runner) progress(format string, a ...any) {
	fmt.Fprintf(r.log, "batchload: "+format+"\n", a...)
}

// runProxyScenarios starts the counting upstream and a proxy-mode batchd in front of it (or uses -target), checks
// that batchd really calls this upstream, and runs the scenarios.
func (r *runner) runProxyScenarios(ctx context.Context, names []string, rep reporter) ([]scenarioResult, error) {
	var (
		up    callCounter
		upURL string
	)
	if r.cfg.upstreamProcess {
		child, err := startChildUpstream(ctx, r.client, r.cfg.upstreamListen, r.cfg.delay)
		if err != nil {
			return nil, err
		}
		defer child.close()
		up, upURL = child, child.url
	} else {
		inproc, err := startUpstream(r.cfg.upstreamListen, r.cfg.delay)
		if err != nil {
			return nil, err
		}
		defer inproc.close()
		up, upURL = inproc, inproc.url
	}
	base, pid := r.cfg.target, 0
	if base == "" {
		r.progress("starting %s -upstream %s", r.cfg.batchd, upURL)
		p, err := startBatchd(ctx, r.client, r.cfg.batchd, upURL, r.cfg.maxParallel, r.cfg.jobArgs()...)
		if err != nil {
			return nil, err
		}
		defer p.stop()
		base, pid = p.base, p.cmd.Process.Pid
	}
	if err := probe(ctx, r.client, base, up, upURL); err != nil {
		return nil, err
	}
	compare, comparePID := "", 0
	if r.cfg.compare != "" {
		r.progress("starting %s -upstream %s (-compare)", r.cfg.compare, upURL)
		p, err := startBatchd(ctx, r.client, r.cfg.compare, upURL, r.cfg.maxParallel)
		if err != nil {
			return nil, err
		}
		defer p.stop()
		compare, comparePID = p.base, p.cmd.Process.Pid
		if err := probe(ctx, r.client, compare, up, upURL); err != nil {
			return nil, err
		}
	}
	var results []scenarioResult
	for _, name := range names {
		var res scenarioResult
		if name == jobScenario {
			res = r.runJob(ctx, base, up, pid)
		} else {
			res = r.runProxyScenario(ctx, name, base, compare, pid, comparePID, up, upURL)
		}
		rep.scenario(res)
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	return results, nil
}

// probe sends one one-step batch and checks that the upstream saw exactly that call: it tells a batchd that is not
// wired to this upstream (a wrong -target) from a slow one, before any scenario runs.
func probe(ctx context.Context, c *http.Client, base string, up callCounter, upURL string) error {
	spec := batchSpec{kind: batchIndependent, steps: 1, prefix: fastPrefix}
	before := up.stats()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	status, body, err := post(ctx, c, base+"/v1/batch", spec.body())
	if err != nil {
		return fmt.Errorf("probe batch to %s: %w", base, err)
	}
	if err := checkBatch(spec, status, body); err != nil {
		return fmt.Errorf("probe batch to %s: %w", base, err)
	}
	if d := up.stats().sub(before); d.Calls != 1 || d.Bad != 0 {
		return fmt.Errorf("probe batch to %s: the upstream at %s saw %d calls (%d unexpected), want 1: is batchd started with -upstream %s?", base, upURL, d.Calls, d.Bad, upURL)
	}
	return nil
}

// runProxyScenario runs one proxy scenario against the batchd at base, and, when compare is set, the same batches
// against the -compare batchd there as the row batchd-base, interleaved with the others.
// pid and comparePID are the processes of the batchd at base and compare (0 when the tool did not start it: no CPU
// figure for it).
func (r *runner) runProxyScenario(ctx context.Context, name, base, compare string, pid, comparePID int, up callCounter, upURL string) scenarioResult {
	cfg := r.cfg
	res := scenarioResult{Name: name}
	latency := func(spec batchSpec, phases ...seqPhase) {
		if compare != "" { // beside the batchd row, the same batches to the -compare batchd
			b := phases[0]
			b.mode, b.op = modeBase, batchdOp(r.client, compare, spec)
			phases = append(phases[:1], append([]seqPhase{b}, phases[1:]...)...)
		}
		for i := range phases {
			phases[i].warmup = cfg.warmupFor(phases[i].count)
			r.progress("%s %s: %d groups + %d warm-up", name, phases[i].mode, phases[i].count, phases[i].warmup)
		}
		res.Rows = append(res.Rows, runInterleaved(ctx, up, phases)...)
	}
	conc := func(spec batchSpec, phases ...concPhase) {
		if compare != "" {
			b := phases[0]
			b.mode, b.op, b.server = modeBase, batchdOp(r.client, compare, spec), comparePID
			phases = append(phases[:1], append([]concPhase{b}, phases[1:]...)...)
		}
		for _, ph := range phases {
			r.progress("%s %s: %d clients for %v + %v warm-up, in %d windows taking turns", name, ph.mode, cfg.concurrency, cfg.duration, cfg.warmWindow(), cfg.rounds)
		}
		res.Rows = append(res.Rows, runConcurrent(ctx, phases, cfg.concurrency, cfg.rounds, cfg.warmWindow(), cfg.duration, up)...)
	}
	latencyNote := "latency: from sending the batch (or the group's first call) to the last byte of the last answer; warm-up groups excluded; the rows' groups are interleaved (one of each in turn)"
	delay := fmtMS(cfg.delay)
	switch name {
	case "a50":
		spec := batchSpec{kind: batchIndependent, steps: 50, prefix: fastPrefix}
		n := cfg.latencyCount(false)
		res.Title = "50 independent steps, upstream 0 ms, batches one after another"
		latency(spec,
			seqPhase{mode: modeBatchd, steps: 50, count: n, op: batchdOp(r.client, base, spec)},
			seqPhase{mode: modeSeq, steps: 50, count: n, op: seqOp(r.client, upURL, spec)},
			seqPhase{mode: modePar, steps: 50, count: n, op: parOp(r.client, upURL, spec)},
		)
		res.Notes = append(res.Notes, latencyNote)
	case "b50":
		spec := batchSpec{kind: batchIndependent, steps: 50, prefix: slowPrefix}
		n := cfg.latencyCount(true)
		ns := cfg.seqRequests
		if ns == 0 {
			ns = min(n, 20)
		}
		res.Title = "50 independent steps, upstream " + delay + ", batches one after another"
		latency(spec,
			seqPhase{mode: modeBatchd, steps: 50, count: n, op: batchdOp(r.client, base, spec)},
			seqPhase{mode: modeSeq, steps: 50, count: ns, op: seqOp(r.client, upURL, spec)},
			seqPhase{mode: modePar, steps: 50, count: n, op: parOp(r.client, upURL, spec)},
		)
		res.Notes = append(res.Notes, latencyNote, fmt.Sprintf("seq measures %d groups: each takes 50 × %s", ns, delay))
	case "c10":
		spec := batchSpec{kind: batchChain, steps: 10, prefix: slowPrefix}
		n := cfg.latencyCount(true)
		res.Title = "chain of 10 steps, each using the previous step's new_id in its path, upstream " + delay
		latency(spec,
			seqPhase{mode: modeBatchd, steps: 10, count: n, op: batchdOp(r.client, base, spec)},
			seqPhase{mode: modeSeq, steps: 10, count: n, op: seqOp(r.client, upURL, spec)},
		)
		res.Notes = append(res.Notes, latencyNote, "no par row: a chain cannot run in parallel, seq is its floor")
	case "d10":
		spec := batchSpec{kind: batchIndependent, steps: 10, prefix: fastPrefix}
		res.Title = fmt.Sprintf("10 independent steps, upstream 0 ms, %d concurrent clients for %v", cfg.concurrency, cfg.duration)
		conc(spec,
			concPhase{mode: modeBatchd, steps: spec.steps, op: batchdOp(r.client, base, spec), server: pid},
			concPhase{mode: modeSeq, steps: spec.steps, op: seqOp(r.client, upURL, spec)},
			concPhase{mode: modePar, steps: spec.steps, op: parOp(r.client, upURL, spec)},
		)
		res.Notes = append(res.Notes, throughputNote(cfg))
	}
	r.judge(&res)
	return res
}

// runDemo runs demo10 against a demo-mode batchd: 10-step Demo/Echo batches against the same calls made one by
// one on batchd's own POST /v1/Demo/Echo, from one client (added latency) and from -concurrency clients
// (throughput).
func (r *runner) runDemo(ctx context.Context) (scenarioResult, error) {
	cfg := r.cfg
	base := cfg.demoTarget
	if base == "" {
		r.progress("starting %s in demo mode", cfg.batchd)
		p, err := startBatchd(ctx, r.client, cfg.batchd, "", cfg.maxParallel)
		if err != nil {
			return scenarioResult{}, err
		}
		defer p.stop()
		base = p.base
	}
	spec := batchSpec{kind: batchEcho, steps: 10}
	res := scenarioResult{Name: "demo10", Title: fmt.Sprintf("demo mode: 10-step %s batches vs the same calls one by one on POST /v1/%s", echoPath, echoPath)}
	n := cfg.latencyCount(false)
	w := cfg.warmupFor(n)
	r.progress("demo10 %s and %s: %d groups + %d warm-up each", modeBatch1, modeSingle1, n, w)
	res.Rows = append(res.Rows, runInterleaved(ctx, nil, []seqPhase{
		{mode: modeBatch1, steps: 10, count: n, warmup: w, op: batchdOp(r.client, base, spec)},
		{mode: modeSingle1, steps: 1, count: n, warmup: w, op: directDemoOp(r.client, base)},
	})...)
	r.progress("demo10 %s and %s: %d clients for %v + %v warm-up each, in %d windows taking turns", modeBatchC, modeSingleC,
		cfg.concurrency, cfg.duration, cfg.warmWindow(), cfg.rounds)
	res.Rows = append(res.Rows, runConcurrent(ctx, []concPhase{
		{mode: modeBatchC, steps: 10, op: batchdOp(r.client, base, spec)},
		{mode: modeSingleC, steps: 1, op: directDemoOp(r.client, base)},
	}, cfg.concurrency, cfg.rounds, cfg.warmWindow(), cfg.duration, nil)...)
	res.Notes = append(res.Notes, throughputNote(cfg),
		"no upstream: steps run in batchd's embedded demo API, so calls are not counted; every answer is checked (status 200, ok, the echoed payload)",
		"added latency: p50 of a 10-step batch minus p50 of one call, both from one client, interleaved")
	r.judge(&res)
	return res, nil
}

// throughputNote says how throughput rows were measured.
func throughputNote(cfg config) string {
	return fmt.Sprintf("throughput: groups completed in the measured windows / their length; the rows took turns in %d windows of %v each (after a warm-up of %v, then %v per window); latency of the groups started in them",
		cfg.rounds, cfg.duration/time.Duration(cfg.rounds), cfg.warmWindow(), min(cfg.warmWindow(), cfg.duration/time.Duration(cfg.rounds)/5))
}

// judge records the scenario's failed checks and evaluates its targets.
func (r *runner) judge(res *scenarioResult) {
	rows := map[string]phaseResult{}
	for _, row := range res.Rows {
		rows[row.Mode] = row
		prefix := res.Name + " " + row.Mode + ": "
		if row.Aborted {
			res.Failures = append(res.Failures, prefix+"cut short")
		}
		if row.Measured == 0 {
			res.Failures = append(res.Failures, prefix+"nothing measured")
		}
		if row.Errors > 0 {
			res.Failures = append(res.Failures, fmt.Sprintf("%s%d errors (first: %s)", prefix, row.Errors, row.FirstError))
		}
		if !row.Upstream.OK() {
			res.Failures = append(res.Failures, prefix+"upstream calls "+describeCalls(row.Upstream))
		}
	}
	res.Targets = evalTargets(res.Name, rows)
	res.Notes = append(res.Notes, contextNotes(res.Name, rows)...)
}

// describeRun gathers the header: command, commits, machine.
func describeRun(ctx context.Context, args []string, cfg config) runInfo {
	info := runInfo{
		Date:      time.Now().UTC().Format(time.RFC3339),
		Command:   commandLine(args),
		Commit:    gitCommit(ctx),
		NProc:     runtime.NumCPU(),
		GoMaxProc: runtime.GOMAXPROCS(0),
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
		LoadAvg:   loadAvg(),
	}
	switch {
	case cfg.target != "" && (cfg.demoTarget != "" || !slices.Contains(cfg.scenarios, "demo10")):
		info.Batchd = "running at " + cfg.target + " (version unknown)"
	default:
		info.Batchd = binaryVersion(cfg.batchd)
		if cfg.target != "" {
			info.Batchd = "running at " + cfg.target + "; demo mode: " + info.Batchd
		}
	}
	info.Settings = []string{
		fmt.Sprintf("batchd -max-parallel %d", cfg.maxParallel),
		"upstream delays 0 ms and " + fmtMS(cfg.delay),
		fmt.Sprintf("throughput phases: %d clients, %v measured after %v warm-up", cfg.concurrency, cfg.duration, cfg.warmWindow()),
		"client, upstream and batchd share this machine, on loopback",
	}
	if cfg.upstreamProcess {
		info.Settings = append(info.Settings, "upstream in a child process (-upstream-process)")
	} else {
		info.Settings = append(info.Settings, "upstream in the client's process (-upstream-process=false)")
	}
	return info
}

// loadAvg reads the 1, 5 and 15 minute load averages where the system has them.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// commandLine renders the command as one would type it again; under `go run` the binary's name is a temporary
// path, so it is shown as `go run ./cmd/batchload`.
func commandLine(args []string) string {
	prog := args[0]
	if strings.Contains(prog, "go-build") || strings.Contains(filepath.Dir(prog), os.TempDir()+"/go-") {
		prog = "go run ./cmd/batchload"
	}
	parts := []string{prog}
	for _, a := range args[1:] {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@%+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// gitCommit is the working tree's HEAD, marked when the tree has uncommitted changes to tracked files.
func gitCommit(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	commit := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		commit += " (working tree has uncommitted changes)"
	}
	return commit
}

// binaryVersion reads the VCS stamp go build put in the batchd binary: the commit it was built from, which may
// differ from the checkout's HEAD.
func binaryVersion(path string) string {
	built := ""
	if st, err := os.Stat(path); err == nil {
		built = ", file written " + st.ModTime().UTC().Format(time.RFC3339)
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return path + " (no build info: " + err.Error() + built + ")"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return path + " (built without VCS information, e.g. GOFLAGS=-buildvcs=false" + built + ")"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	out := path + " built from " + rev
	if modified == "true" {
		out += " with uncommitted changes"
	}
	return out + " (" + strings.TrimPrefix(built, ", ") + ")"
}

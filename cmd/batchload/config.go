package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"
)

// config is the tool's command line.
type config struct {
	scenarios       []string
	batchd          string
	compare         string // a second batchd binary measured beside the first, as the row batchd-base
	target          string
	demoTarget      string
	upstreamListen  string
	upstreamProcess bool
	delay           time.Duration
	requests        int
	seqRequests     int
	warmup          int
	duration        time.Duration
	concurrency     int
	rounds          int
	maxParallel     int
	format          string
	maxTime         time.Duration
	// The job scenario (job.go).
	jobLines    int
	jobRSSSteps []int
	jobsRedis   string // -jobs-redis for the batchd the tool starts
	jobWorkers  int    // -job-workers for it; 0: batchd's default
}

// scenarioNames lists the scenarios in the order "all" runs them.
func scenarioNames() []string { return []string{"a50", "b50", "c10", "d10", "demo10"} }

// jobScenario runs only when named: it takes minutes (a job of a million steps).
const jobScenario = "job"

// Bounds on the flags: the tool always ends by itself, in reasonable time.
const (
	maxRequests    = 100_000
	maxDuration    = 60 * time.Second
	maxConcurrency = 256
	maxWarmup      = 1_000
	maxMaxTime     = time.Hour
)

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("batchload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenario", "all", "scenarios to run, comma-separated: a50, b50, c10, d10, demo10, or all (all but job), and job")
	fs.StringVar(&cfg.batchd, "batchd", "bin/batchd", "batchd binary the tool starts (unless -target / -demo-target)")
	fs.StringVar(&cfg.compare, "compare", "", "a second batchd binary (an earlier build, say) started beside -batchd against the same upstream and measured in the same interleaved rounds, as the row batchd-base of every proxy scenario; the notes give batchd ÷ batchd-base")
	fs.StringVar(&cfg.target, "target", "", "URL of a running proxy-mode batchd (loopback only) instead of starting one; it must use this tool's upstream: start it with -upstream http://ADDR/ and pass -upstream-listen ADDR")
	fs.StringVar(&cfg.demoTarget, "demo-target", "", "URL of a running demo-mode batchd (loopback only) for demo10 instead of starting one")
	fs.StringVar(&cfg.upstreamListen, "upstream-listen", "127.0.0.1:0", "loopback address of the tool's counting upstream")
	fs.BoolVar(&cfg.upstreamProcess, "upstream-process", true, "run the counting upstream in a child process, so that the baselines' calls cross processes as batchd's do and as calls to a real upstream do; -upstream-process=false keeps it in the tool's process")
	fs.DurationVar(&cfg.delay, "delay", 10*time.Millisecond, "the slow upstream delay (b50, c10)")
	fs.IntVar(&cfg.requests, "requests", 0, "measured batches per latency phase (0: 200 for 0 ms scenarios, 100 for 10 ms ones)")
	fs.IntVar(&cfg.seqRequests, "seq-requests", 0, "measured groups for the seq baseline of b50 (0: min(requests, 20): each takes 50 × delay)")
	fs.IntVar(&cfg.warmup, "warmup", 20, "warm-up groups per latency phase, sent and checked but not measured (at most a fifth of the measured count)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time of each throughput phase (d10, demo10), after a warm-up of min(1s, duration/5)")
	fs.IntVar(&cfg.concurrency, "concurrency", 32, "concurrent clients in throughput phases")
	fs.IntVar(&cfg.rounds, "rounds", 5, "windows each throughput phase's -duration is cut into; the phases of a scenario take turns window by window")
	fs.IntVar(&cfg.maxParallel, "max-parallel", 50, "-max-parallel given to the batchd the tool starts")
	fs.StringVar(&cfg.format, "format", "text", "output: text, markdown (for BENCHMARKS.md) or json")
	fs.DurationVar(&cfg.maxTime, "max-time", 5*time.Minute, "overall time limit")
	fs.IntVar(&cfg.jobLines, "job-lines", 10_000, "job scenario: lines (10-step batches) of the job, and interactive batches sent to compare")
	rssSteps := fs.String("job-rss-steps", "10000,100000,1000000", "job scenario: sizes in steps of the jobs during which batchd's RSS is read, comma-separated; empty: none")
	fs.StringVar(&cfg.jobsRedis, "jobs-redis", "", "job scenario: -jobs-redis URL given to the batchd the tool starts (a running redis-server on loopback); empty: jobs in memory")
	fs.IntVar(&cfg.jobWorkers, "job-workers", 0, "job scenario: -job-workers given to the batchd the tool starts; 0: its default")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	var errs []error
	names := scenarioNames()
	for s := range strings.SplitSeq(*scen, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "all":
			cfg.scenarios = append(cfg.scenarios, names...)
		case slices.Contains(names, s) || s == jobScenario:
			cfg.scenarios = append(cfg.scenarios, s)
		default:
			errs = append(errs, fmt.Errorf("-scenario: unknown %q (want %s or all)", s, strings.Join(names, ", ")))
		}
	}
	// Keep the canonical order, each scenario once.
	cfg.scenarios = slices.DeleteFunc(append(names, jobScenario), func(s string) bool { return !slices.Contains(cfg.scenarios, s) })

	bound := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("-%s %d: want %d to %d", name, v, lo, hi))
		}
	}
	boundD := func(name string, v, lo, hi time.Duration) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("-%s %v: want %v to %v", name, v, lo, hi))
		}
	}
	bound("requests", cfg.requests, 0, maxRequests)
	bound("seq-requests", cfg.seqRequests, 0, maxRequests)
	bound("warmup", cfg.warmup, 0, maxWarmup)
	bound("concurrency", cfg.concurrency, 1, maxConcurrency)
	bound("rounds", cfg.rounds, 1, 100)
	bound("max-parallel", cfg.maxParallel, 1, 1000)
	bound("job-lines", cfg.jobLines, 1, 1_000_000)
	bound("job-workers", cfg.jobWorkers, 0, 1024)
	if steps, err := parseSteps(*rssSteps); err != nil {
		errs = append(errs, err)
	} else {
		cfg.jobRSSSteps = steps
	}
	if cfg.jobsRedis != "" {
		if u, err := url.Parse(cfg.jobsRedis); err != nil || u.Scheme != "redis" || requireLoopbackAddr(u.Host) != nil {
			errs = append(errs, fmt.Errorf("-jobs-redis %q: want redis://HOST:PORT/DB on loopback", cfg.jobsRedis))
		}
	}
	boundD("duration", cfg.duration, 100*time.Millisecond, maxDuration)
	boundD("delay", cfg.delay, 0, time.Second)
	boundD("max-time", cfg.maxTime, time.Second, maxMaxTime)
	switch cfg.format {
	case "text", "markdown", "json":
	default:
		errs = append(errs, fmt.Errorf("-format %q: want text, markdown or json", cfg.format))
	}
	if err := requireLoopbackAddr(cfg.upstreamListen); err != nil {
		errs = append(errs, fmt.Errorf("-upstream-listen: %w", err))
	}
	for name, v := range map[string]*string{"target": &cfg.target, "demo-target": &cfg.demoTarget} {
		if *v == "" {
			continue
		}
		u, err := checkLoopbackURL(*v)
		if err != nil {
			errs = append(errs, fmt.Errorf("-%s: %w", name, err))
			continue
		}
		*v = u.String()
	}
	if cfg.compare != "" && cfg.target != "" {
		errs = append(errs, errors.New("-compare starts its own batchd beside the one the tool starts: it cannot be used with -target"))
	}
	if cfg.target != "" && strings.HasSuffix(cfg.upstreamListen, ":0") {
		errs = append(errs, errors.New("-target needs -upstream-listen ADDR: the running batchd must call this tool's upstream (start it with -upstream http://ADDR/) so that every call can be counted"))
	}
	return cfg, errors.Join(errs...)
}

// latencyCount is the number of measured groups of a latency phase.
func (c config) latencyCount(slow bool) int {
	switch {
	case c.requests > 0:
		return c.requests
	case slow:
		return 100
	default:
		return 200
	}
}

// warmupFor is the number of warm-up groups before count measured ones: -warmup, at most a fifth of count (so that
// a short run stays short), at least one when -warmup is not 0.
func (c config) warmupFor(count int) int {
	if c.warmup == 0 {
		return 0
	}
	return min(c.warmup, max(1, count/5))
}

// warmWindow is the warm-up of a throughput phase.
func (c config) warmWindow() time.Duration { return min(time.Second, c.duration/5) }

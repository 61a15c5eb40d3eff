package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"path"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batchd/batchd/planner"
)

// config is the whole configuration surface: every flag, each with an environment fallback.
type config struct {
	addr           string
	upstream       string
	maxSteps       int
	maxCalls       int
	stepTimeout    time.Duration
	batchTimeout   time.Duration
	maxParallel    int
	blocked        string
	maxBody        byteSize
	maxResponse    byteSize
	maxInflight    int
	rateLimit      float64 // steps per second per caller; 0: off
	rateBurst      int     // 0: max(50, rateLimit)
	forwardHeaders string
	metricMethods  string
	logFormat      string
	gcHeapFloor    byteSize // heapfloor.Start's floor; 0: Go's default GC pacing
	// requireRollback refuses atomic batches in which a step other than GET, HEAD or OPTIONS has no rollback.
	requireRollback bool

	idempotencyTTL        time.Duration
	idempotencyMaxEntries int
	idempotencyMaxBytes   byteSize
	idempotencyMaxAnswer  byteSize
	redisURL              string // empty: Idempotency-Key answers are kept in memory

	// Budgets (README "Limits and guarantees").
	maxCallPath    byteSize
	maxCallHeader  byteSize
	maxCallBody    byteSize
	maxBatchBytes  byteSize
	memoryBudget   byteSize // 0: none
	rateLimitKey   string   // address or authorization
	trustedProxies string   // comma-separated CIDRs or addresses

	// Operations.
	metricsAddr  string        // empty: /metrics on the public listener, and no pprof
	drainDelay   time.Duration // how long /readyz answers 503 before the listener closes
	learnMethods int           // most method labels learned from the upstream's routes (metrics.Config.LearnMethods)
	showVersion  bool          // -version: print the version and exit

	// effective is every flag's value once flags, environment and defaults are applied, secrets redacted: what
	// the start-up log line says.
	effective []slog.Attr
	jobs      jobsConfig // jobs.go
}

// usageError is a bad flag or environment value: the process exits 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// parseConfig reads flags from args with environment fallbacks from getenv; a flag wins over its variable.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := config{
		addr: ":8080", maxSteps: 50, maxCalls: 1000, stepTimeout: 10 * time.Second, batchTimeout: 60 * time.Second,
		maxParallel: 16, blocked: "Item/Import", maxBody: 1 << 20, maxResponse: 8 << 20, logFormat: "auto",
		gcHeapFloor: 32 << 20, idempotencyTTL: 24 * time.Hour, idempotencyMaxEntries: 10000,
		idempotencyMaxBytes: 64 << 20, idempotencyMaxAnswer: 4 << 20,
		maxCallPath: 8 << 10, maxCallHeader: 8 << 10, maxCallBody: 8 << 20, maxBatchBytes: 64 << 20,
		memoryBudget: byteSize(defaultMemoryBudget()), rateLimitKey: "address",
		drainDelay: 5 * time.Second, learnMethods: 20,
		jobs: defaultJobsConfig(),
	}
	fs := flag.NewFlagSet("batchd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(fs) }
	var envErrs []error
	// bind registers a flag whose default comes from the environment when the variable is set.
	bind := func(v flag.Value, name, env, usage string) {
		if s := getenv(env); s != "" {
			if err := v.Set(s); err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s=%q: %w", env, s, err))
			}
		}
		fs.Var(v, name, usage+" (env "+env+")")
	}
	// Each usage text gives an example; a word in back quotes names the value's type in -h where the flag's own
	// type (typedValue) would say less.
	bind((*stringValue)(&c.addr), "addr", "BATCHD_ADDR", "listen `address`, e.g. :8080 or 127.0.0.1:8080")
	bind((*stringValue)(&c.upstream), "upstream", "BATCHD_UPSTREAM", "base `URL` of the API that steps call, e.g. https://api.example.com/v1/; empty: the embedded demo API")
	bind((*intValue)(&c.maxSteps), "max-steps", "BATCHD_MAX_STEPS", "most steps in one batch, e.g. 50")
	bind((*intValue)(&c.maxCalls), "max-calls", "BATCHD_MAX_CALLS", "most upstream calls one batch makes, each for_each element counting one, e.g. 1000; a for_each over it fails its step unsent with 413")
	bind((*durationValue)(&c.stepTimeout), "step-timeout", "BATCHD_STEP_TIMEOUT", "one step's time limit, e.g. 10s or 500ms")
	bind((*durationValue)(&c.batchTimeout), "batch-timeout", "BATCHD_BATCH_TIMEOUT", "the whole batch's time limit, e.g. 60s; also the shutdown grace period")
	bind((*intValue)(&c.maxParallel), "max-parallel", "BATCHD_MAX_PARALLEL", "most steps of one batch running at once, e.g. 16")
	bind((*stringValue)(&c.blocked), "blocked", "BATCHD_BLOCKED", "comma-separated method `paths` a batch may not call, e.g. Item/Import,Users/Delete")
	bind(&c.maxBody, "max-body", "BATCHD_MAX_BODY", "largest batch request body, e.g. 1MiB; larger gets 413")
	bind(&c.maxResponse, "max-response", "BATCHD_MAX_RESPONSE", "largest step response read from the upstream, e.g. 8MiB; larger fails the step with 502")
	bind((*intValue)(&c.maxInflight), "max-upstream-inflight", "BATCHD_MAX_UPSTREAM_INFLIGHT", "most upstream calls in flight across all batches, e.g. 64; 0: no limit")
	bind((*floatValue)(&c.rateLimit), "rate-limit", "BATCHD_RATE_LIMIT", "steps per second each caller (see -rate-limit-key) may run, e.g. 100 or 0.5, a batch costing its step count; over it: 429 with Retry-After; 0: no limit")
	bind((*intValue)(&c.rateBurst), "rate-burst", "BATCHD_RATE_BURST", "most steps a caller may run at once under -rate-limit (and the largest batch it accepts), e.g. 200; 0: max(50, -rate-limit)")
	bind((*stringValue)(&c.forwardHeaders), "forward-headers", "BATCHD_FORWARD_HEADERS", "comma-separated extra request `headers` forwarded to every step, e.g. X-Tenant,X-Api-Version")
	bind((*stringValue)(&c.metricMethods), "metric-methods", "BATCHD_METRIC_METHODS", "comma-separated known method `patterns` for the metrics method label, '*' wildcards, e.g. Producer/*,Users/:id/Orders")
	bind((*intValue)(&c.learnMethods), "metric-learn-methods", "BATCHD_METRIC_LEARN_METHODS", "most method labels learned from steps that match no -metric-methods pattern: a step's first path segment (Producer/*) once the upstream answered one below 400, e.g. 20; 0: such steps are 'other'")
	bind((*stringValue)(&c.logFormat), "log-format", "BATCHD_LOG_FORMAT", "log format, one of `auto|json|text`: auto is text on a terminal, JSON otherwise")
	bind(&c.gcHeapFloor, "gc-heap-floor", "BATCHD_GC_HEAP_FLOOR", "the Go heap may grow to this before a collection while the live heap is under half of it (fewer collections under load), e.g. 32MiB; 0: Go's default; ignored when GOGC is set")
	bind((*boolValue)(&c.requireRollback), "atomic-require-rollback", "BATCHD_ATOMIC_REQUIRE_ROLLBACK", "refuse an atomic batch in which a step other than GET, HEAD or OPTIONS has no rollback")
	bind((*durationValue)(&c.idempotencyTTL), "idempotency-ttl", "BATCHD_IDEMPOTENCY_TTL", "how long the answer of a batch sent with an Idempotency-Key is replayed, e.g. 24h")
	bind((*intValue)(&c.idempotencyMaxEntries), "idempotency-max-entries", "BATCHD_IDEMPOTENCY_MAX_ENTRIES", "most Idempotency-Key answers kept in memory (without -redis-url), e.g. 10000; the oldest is evicted")
	bind((*redactedURL)(&c.redisURL), "redis-url", "BATCHD_REDIS_URL", "Redis for Idempotency-Key answers shared by every replica, e.g. redis://127.0.0.1:6379/0 or rediss://:password@redis:6380/0; empty: in memory")
	bind(&c.idempotencyMaxBytes, "idempotency-max-bytes", "BATCHD_IDEMPOTENCY_MAX_BYTES", "most bytes of Idempotency-Key answers kept in memory (without -redis-url), e.g. 64MiB; the oldest are evicted")
	bind(&c.idempotencyMaxAnswer, "idempotency-max-answer", "BATCHD_IDEMPOTENCY_MAX_ANSWER", "largest answer stored for an Idempotency-Key, e.g. 4MiB; a larger one is not stored, and a retry gets 409 (the batch never runs twice)")
	bind(&c.maxCallPath, "max-call-path", "BATCHD_MAX_CALL_PATH", "largest path of one call once its placeholders are resolved, e.g. 8KiB; larger fails the step unsent with 413")
	bind(&c.maxCallHeader, "max-call-header", "BATCHD_MAX_CALL_HEADER", "largest header value of one call once resolved, e.g. 8KiB; larger fails the step unsent with 413")
	bind(&c.maxCallBody, "max-call-body", "BATCHD_MAX_CALL_BODY", "largest body of one call once resolved, e.g. 8MiB; larger fails the step unsent with 413")
	bind(&c.maxBatchBytes, "max-batch-bytes", "BATCHD_MAX_BATCH_BYTES", "most bytes one batch may hold (request, responses kept, calls built, answer), e.g. 64MiB; the step that would cross it fails with 507")
	bind(&c.memoryBudget, "memory-budget", "BATCHD_MEMORY_BUDGET", "most bytes all batches in flight may hold, e.g. 600MiB; a batch that cannot be admitted gets 503 with Retry-After, a step that cannot reserve its response 507 (default: 60% of GOMEMLIMIT or of the cgroup memory limit, else 1GiB); 0: no limit")
	bind((*stringValue)(&c.rateLimitKey), "rate-limit-key", "BATCHD_RATE_LIMIT_KEY", "what identifies a caller under -rate-limit and in the log, one of `address|authorization`: its client address, or a digest of its Authorization, else its address (only safe behind a gateway that verifies it)")
	bind((*stringValue)(&c.trustedProxies), "trusted-proxies", "BATCHD_TRUSTED_PROXIES", "comma-separated `CIDRs` or addresses of proxies whose X-Forwarded-For is believed, e.g. 10.0.0.0/8,192.0.2.7: behind one, a client's address is the last untrusted hop")
	bind((*stringValue)(&c.metricsAddr), "metrics-addr", "BATCHD_METRICS_ADDR", "internal listen `address` for /metrics and /debug/pprof/, e.g. :8081; when set, the public listener no longer serves /metrics; empty: /metrics on -addr and no pprof")
	bind((*durationValue)(&c.drainDelay), "drain-delay", "BATCHD_DRAIN_DELAY", "on SIGTERM, how long /readyz answers 503 while batches are still served before the listener closes, so that load balancers stop sending traffic first, e.g. 5s; 0: close at once")
	bindJobs(&c.jobs, bind)
	fs.BoolVar(&c.showVersion, "version", false, "print the version, VCS revision and Go version, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, &usageError{err}
	}
	if c.showVersion {
		return c, nil // whatever else the flags and environment say
	}
	if len(envErrs) > 0 {
		return c, &usageError{errors.Join(envErrs...)}
	}
	if fs.NArg() > 0 {
		return c, &usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	c.effective = effectiveConfig(fs)
	return c, c.validate()
}

// printUsage is -h: every flag with the type of its value ("-max-body size", where Go's flag package would say
// "value"), its description with an example, its environment variable and its default.
func printUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, "Usage: batchd [flags]\n\nEvery flag but -version also reads the environment variable named after it; the flag wins.\n\n")
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		if tv, ok := f.Value.(typedValue); ok && name == "value" {
			name = tv.typeName()
		}
		fmt.Fprintf(w, "  -%s", f.Name)
		if name != "" {
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintf(w, "\n    \t%s", text)
		if f.DefValue != "" && !(name == "" && f.DefValue == "false") {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// effectiveConfig is every flag's value, as the flags, the environment and the defaults left it, for the start-up
// log line; a flag value redacts what is secret (redactedURL).
func effectiveConfig(fs *flag.FlagSet) []slog.Attr {
	var out []slog.Attr
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "version" {
			out = append(out, slog.String(f.Name, f.Value.String()))
		}
	})
	return out
}

func (c config) validate() error {
	var errs []error
	check := func(ok bool, format string, a ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, a...))
		}
	}
	check(c.maxSteps >= 1, "-max-steps must be at least 1")
	check(c.maxCalls >= c.maxSteps, "-max-calls must be at least -max-steps (every step makes a call)")
	check(c.maxParallel >= 1, "-max-parallel must be at least 1")
	check(c.stepTimeout > 0, "-step-timeout must be positive")
	check(c.batchTimeout > 0, "-batch-timeout must be positive")
	check(c.maxBody > 0, "-max-body must be positive")
	check(c.maxResponse > 0, "-max-response must be positive")
	check(c.maxInflight >= 0, "-max-upstream-inflight must not be negative")
	check(c.rateLimit >= 0 && !math.IsInf(c.rateLimit, 0), "-rate-limit must be a finite number of steps per second, 0 or more")
	check(c.rateBurst >= 0, "-rate-burst must not be negative")
	check(c.idempotencyTTL > 0, "-idempotency-ttl must be positive")
	check(c.idempotencyMaxEntries >= 1, "-idempotency-max-entries must be at least 1")
	check(c.idempotencyMaxAnswer > 0, "-idempotency-max-answer must be positive")
	check(c.idempotencyMaxBytes >= c.idempotencyMaxAnswer, "-idempotency-max-bytes must be at least -idempotency-max-answer")
	check(c.maxCallPath > 0 && c.maxCallHeader > 0 && c.maxCallBody > 0, "-max-call-path, -max-call-header and -max-call-body must be positive")
	check(c.maxBatchBytes > 0, "-max-batch-bytes must be positive")
	check(c.rateLimitKey == "address" || c.rateLimitKey == "authorization", "-rate-limit-key must be address or authorization")
	check(c.drainDelay >= 0, "-drain-delay must not be negative")
	check(c.learnMethods >= 0 && c.learnMethods <= maxLearnMethods, "-metric-learn-methods must be from 0 to %d (each label is a few dozen series)", maxLearnMethods)
	if c.metricsAddr != "" {
		_, port, err := net.SplitHostPort(c.metricsAddr)
		check(err == nil && (c.metricsAddr != c.addr || port == "0"),
			"-metrics-addr must be a host:port or :port other than -addr, e.g. :8081: %q", c.metricsAddr)
	}
	for _, h := range list(c.forwardHeaders) {
		name := textproto.CanonicalMIMEHeaderKey(h)
		check(!planner.RefusedHeader(name), "-forward-headers: %s may not be forwarded to a step (a hop-by-hop, framing or client-address header)", name)
	}
	errs = append(errs, c.jobs.validate()...)
	if _, err := c.proxies(); err != nil {
		errs = append(errs, err)
	}
	if c.redisURL != "" {
		_, err := redis.ParseURL(c.redisURL)
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a password
		}
		check(err == nil, "-redis-url must be a redis://, rediss:// or unix:// URL: %v", err)
	}
	check(c.logFormat == "auto" || c.logFormat == "json" || c.logFormat == "text", "-log-format must be auto, json or text")
	if c.upstream != "" {
		u, err := url.Parse(c.upstream)
		check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil,
			"-upstream must be an absolute http(s) URL with a host and no query, fragment or user info: %q", c.upstream)
	}
	if len(errs) > 0 {
		return &usageError{errors.Join(errs...)}
	}
	return nil
}

// proxies parses -trusted-proxies: CIDRs, or single addresses.
func (c config) proxies() ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range list(c.trustedProxies) {
		if ip := net.ParseIP(s); ip != nil {
			bits := 8 * len(ip.To16())
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("-trusted-proxies: %q is neither an address nor a CIDR such as 10.0.0.0/8", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// defaultMemoryBudget is -memory-budget's default: 60 % of the Go memory limit (GOMEMLIMIT) when one is set, else
// of the memory limit of the process's cgroup when it has one, else 1 GiB. The rest of the limit is left to what
// the budget does not count: the runtime, the garbage between collections, the idempotency store.
func defaultMemoryBudget() int64 {
	limit := debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 {
		limit = cgroupMemoryLimit(os.ReadFile)
	}
	if limit <= 0 || limit == math.MaxInt64 {
		return 1 << 30
	}
	return limit / 10 * 6
}

// cgroupMemoryLimit reads the memory limit of the process's cgroup, v2 or v1, found through /proc/self/cgroup, and
// the smallest limit on the way up to the root (a parent's limit holds its children too); 0 when there is none.
func cgroupMemoryLimit(readFile func(string) ([]byte, error)) int64 {
	self, err := readFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	var files []string // the limit files from the process's cgroup up to the root
	for line := range strings.SplitSeq(strings.TrimSpace(string(self)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, name string
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			dir, name = "/sys/fs/cgroup", "memory.max"
		case slices.Contains(strings.Split(parts[1], ","), "memory"): // v1
			dir, name = "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
		default:
			continue
		}
		for p := path.Clean("/" + parts[2]); ; p = path.Dir(p) {
			files = append(files, path.Join(dir, p, name))
			if p == "/" {
				break
			}
		}
	}
	limit := int64(0)
	for _, f := range files {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // "max", or v1's "no limit" (a page-rounded MaxInt64)
			continue
		}
		if limit == 0 || n < limit {
			limit = n
		}
	}
	return limit
}

// list splits a comma-separated flag value, dropping blanks.
func list(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// maxLearnMethods bounds -metric-learn-methods: the method labels, and so the series, a process may create.
const maxLearnMethods = 200

// typedValue is a flag value that names its type for -h.
type typedValue interface {
	flag.Value
	typeName() string
}

type stringValue string

func (*stringValue) typeName() string { return "string" }

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

// redactedURL is a URL flag whose value, as -h and the log show it, hides a password.
type redactedURL string

func (*redactedURL) typeName() string     { return "URL" }
func (v *redactedURL) Set(s string) error { *v = redactedURL(s); return nil }
func (v *redactedURL) String() string {
	u, err := url.Parse(string(*v))
	if err != nil {
		return "(not a URL)" // validate refuses it, without repeating it either
	}
	return u.Redacted()
}

type boolValue bool

func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true } // -atomic-require-rollback alone means true
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("not a boolean such as true or false")
	}
	*v = boolValue(b)
	return nil
}

type intValue int

func (*intValue) typeName() string { return "int" }

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a whole number")
	}
	*v = intValue(n)
	return nil
}

type floatValue float64

func (*floatValue) typeName() string { return "number" }

func (v *floatValue) String() string { return strconv.FormatFloat(float64(*v), 'g', -1, 64) }
func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) {
		return errors.New("not a number")
	}
	*v = floatValue(f)
	return nil
}

type durationValue time.Duration

func (*durationValue) typeName() string { return "duration" }

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a Go duration such as 10s or 500ms")
	}
	*v = durationValue(d)
	return nil
}

// byteSize is a size such as 1MiB, 512KiB, 2MB or 1048576.
type byteSize int64

func (*byteSize) typeName() string { return "size" }

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}

func (v *byteSize) String() string {
	n := int64(*v)
	for _, u := range sizeUnits[:3] {
		if n >= u.mult && n%u.mult == 0 && (n/u.mult < 1024 || u.suffix == "GiB") {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (v *byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(strings.ToUpper(s), strings.ToUpper(u.suffix)) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return errors.New("not a size such as 1MiB, 512KiB or 1048576")
	}
	*v = byteSize(n * mult)
	return nil
}

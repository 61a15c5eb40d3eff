package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/heapfloor"
	"github.com/batchd/batchd/internal/idempotency"
	"github.com/batchd/batchd/internal/ratelimit"
	"github.com/batchd/batchd/internal/tracing"
	"github.com/batchd/batchd/metrics"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// run wires batchd in dependency order and serves until ctx is cancelled, then drains: readiness turns 503 while
// batches are still served for -drain-delay, then new batches are refused, the listener closes, and the batches in
// flight finish (bounded by -batch-timeout) before run returns nil.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	build := buildInfo()
	if cfg.showVersion {
		printVersion(stdout, build)
		return nil
	}
	log := newLogger(cfg.logFormat, stderr)
	gcFloor := "off"
	switch {
	case getenv("GOGC") != "":
		gcFloor = "GOGC=" + getenv("GOGC") // the operator's own GC setting wins
	case cfg.gcHeapFloor > 0:
		defer heapfloor.Start(uint64(cfg.gcHeapFloor))()
		gcFloor = cfg.gcHeapFloor.String()
	}

	reg := metrics.NewRegistry()
	known := list(cfg.metricMethods)
	var (
		inv          runner.Invoker
		demo         http.Handler
		mode         = "proxy"
		upstreamHost string
	)
	// Step paths are relative to base; a URL reference a step takes from a response is resolved against it.
	base := &url.URL{Path: "/v1/"} // the demo API's route on this server
	if cfg.upstream == "" {
		api := demoapi.New(demoapi.Config{})
		demo, mode = api, "demo"
		known = append(known, demoapi.Methods()...)
		inv = transport.NewInProcessInvoker(api, int64(cfg.maxResponse))
	} else {
		base, _ = url.Parse(cfg.upstream) // validated by parseConfig
		hi, err := transport.NewHTTPInvoker(transport.HTTPConfig{
			Base: base,
			// Keep-alive pool sized for the fan-out of many batches at once, not one: with too few idle slots
			// every burst opens and closes connections. A global in-flight cap is the natural bound when set.
			Transport:        transport.NewUpstreamTransport(max(cfg.maxInflight, transport.DefaultMaxIdlePerHost)),
			MaxResponseBytes: int64(cfg.maxResponse),
		})
		if err != nil {
			return &usageError{err}
		}
		inv, upstreamHost = hi, base.Host
	}
	// Tracing exists only when an OTLP endpoint is configured: otherwise no decorator, middleware or provider at all.
	tcfg, err := tracing.ConfigFromEnv(getenv)
	if err != nil {
		return &usageError{err}
	}
	var batchMW []echo.MiddlewareFunc
	if tcfg.Endpoint != "" {
		tp, err := tracing.NewProvider(ctx, tcfg)
		if err != nil {
			return err
		}
		defer func() { // after the drain, so the last batches' spans are flushed; bounded like the drain
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(fctx); err != nil {
				log.Warn("tracing: flushing spans on exit failed", "err", err)
			}
		}()
		inv = tracing.Invoker(inv, tp)
		batchMW = append(batchMW, tracing.Middleware(tp))
		log.Info("tracing", "endpoint", tcfg.Endpoint, "service", tcfg.ServiceName)
	}
	memory := budget.NewPool(int64(cfg.memoryBudget))
	reasons := transport.RefusalReasons()
	for _, r := range planner.Reasons() {
		reasons = append(reasons, string(r))
	}
	m, err := metrics.New(reg, metrics.Config{Methods: known, LearnMethods: cfg.learnMethods, RejectReasons: reasons,
		IdempotencyResults: idempotency.Results(), MemoryInUse: memory.InUse, MemoryLimit: memory.Limit(), Build: build})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var limit *semaphore.Weighted
	if cfg.maxInflight > 0 {
		limit = semaphore.NewWeighted(int64(cfg.maxInflight))
	}
	rn := runner.New(inv, runner.Config{
		MaxParallel:   cfg.maxParallel,
		StepTimeout:   cfg.stepTimeout,
		BatchTimeout:  cfg.batchTimeout,
		Recorder:      m,
		Limit:         limit,
		Logger:        log,
		MaxCallPath:   int(cfg.maxCallPath),
		MaxCallHeader: int(cfg.maxCallHeader),
		MaxCallBody:   int64(cfg.maxCallBody),
		MaxCalls:      cfg.maxCalls,
	})
	var rateLimiter transport.RateLimiter // nil interface when off
	if cfg.rateLimit > 0 {
		rl, err := ratelimit.New(ratelimit.Config{Rate: cfg.rateLimit, Burst: cfg.rateBurst})
		if err != nil {
			return &usageError{err}
		}
		rateLimiter = rl
	}
	proxies, _ := cfg.proxies() // validated by parseConfig
	idem, closeIdem, err := idempotencyGuard(ctx, cfg, m, log)
	if err != nil {
		return err
	}
	defer closeIdem() // after the drain: the last batches store their answers first
	jobEng, closeJobs, err := jobEngine(ctx, cfg.jobs, m, log)
	if err != nil {
		return err
	}
	defer closeJobs() // after the drain: the last job batches store their answers first
	// With -metrics-addr, /metrics moves to the internal listener, beside the profiler; else it stays public.
	var publicMetrics http.Handler
	if cfg.metricsAddr == "" {
		publicMetrics = metrics.Handler(reg)
	}
	srv := transport.New(transport.Config{
		Planner: planner.Config{
			Base:            base,
			MaxSteps:        cfg.maxSteps,
			Blocked:         list(cfg.blocked),
			RequireRollback: cfg.requireRollback,
		},
		Runner:         rn,
		MaxBody:        int64(cfg.maxBody),
		Memory:         memory,
		MaxBatchBytes:  int64(cfg.maxBatchBytes),
		RateLimiter:    rateLimiter,
		RateLimitKey:   cfg.rateLimitKey,
		TrustedProxies: proxies,
		Idempotency:    idem,
		ForwardHeaders: list(cfg.forwardHeaders),
		Observer:       m,
		Metrics:        publicMetrics,
		Demo:           demo,
		Logger:         log,
		UpstreamHost:   upstreamHost,

		BatchMiddleware: batchMW, // nil unless tracing is on
		Jobs: transport.JobsConfig{Engine: jobEng, MaxBatches: int64(cfg.jobs.maxBatches),
			MaxBody: int64(cfg.jobs.maxBody)},
	})

	metricsAddr := ""
	if cfg.metricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.metricsAddr)
		if err != nil {
			return fmt.Errorf("listen on -metrics-addr: %w", err)
		}
		ms := internalServer(metrics.Handler(reg), log)
		go func() {
			if err := ms.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener failed", "addr", cfg.metricsAddr, "err", err)
			}
		}()
		defer func() { // after the drain, so that Prometheus scrapes a draining replica to its end
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = ms.Shutdown(sctx)
		}()
		metricsAddr = mln.Addr().String()
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	jobEng.Start(srv.RunJobBatch) // stopped by the drain below
	hs := srv.HTTPServer(cfg.addr, cfg.batchTimeout+10*time.Second)
	conns := trackConns(hs)
	log.LogAttrs(ctx, slog.LevelInfo, "listening", slog.String("addr", ln.Addr().String()),
		slog.String("metrics_addr", metricsAddr), slog.String("mode", mode),
		slog.String("version", build.Version), slog.String("revision", build.Revision), slog.String("go", build.GoVersion),
		slog.String("upstream", cfg.upstream), slog.String("gc_heap_floor", gcFloor),
		slog.String("memory_budget", cfg.memoryBudget.String()), slog.Any("config", slog.GroupValue(cfg.effective...)))
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if cfg.drainDelay > 0 {
		// Readiness fails first while batches are still served, so that load balancers stop sending traffic
		// before the listener closes rather than find it closed.
		log.Info("not ready: draining after the delay", "drain_delay", cfg.drainDelay.String())
		srv.Unready()
		select {
		case <-time.After(cfg.drainDelay):
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		}
	}
	log.Info("draining", "grace", cfg.batchTimeout.String())
	srv.Drain()
	jobEng.Drain() // no further job batch starts here; with Redis, others take the rest
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.batchTimeout+5*time.Second)
	defer cancel()
	defer func() { // within the same grace: running job batches finish, or are handed back
		if err := jobEng.Shutdown(sctx); err != nil {
			log.Warn("drain deadline reached: job batches handed back", "err", err)
		}
	}()
	if err := hs.Shutdown(sctx); err != nil {
		// The grace is over: what is left (a client that never reads its answer, say) is cut, and that is the
		// drain's end, not a failure.
		cut := conns.active()
		_ = hs.Close()
		log.Warn("drain deadline reached: connections cut", "connections", cut, "grace", cfg.batchTimeout.String())
	}
	log.Info("stopped")
	return nil
}

// internalServer serves what only operators may reach, on -metrics-addr: GET /metrics and the Go profiler under
// /debug/pprof/ (heap, goroutine, profile?seconds=30, trace, …). Its write timeout leaves room for a 60-second CPU
// profile.
func internalServer(metricsHandler http.Handler, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// connCounter counts a server's connections that are not idle: those Shutdown waits for.
type connCounter struct {
	mu    sync.Mutex
	state map[net.Conn]http.ConnState
}

// trackConns makes hs report its connections' states to a counter.
func trackConns(hs *http.Server) *connCounter {
	c := &connCounter{state: make(map[net.Conn]http.ConnState)}
	hs.ConnState = func(conn net.Conn, s http.ConnState) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch s {
		case http.StateClosed, http.StateHijacked:
			delete(c.state, conn)
		default:
			c.state[conn] = s
		}
	}
	return c
}

// active is the number of connections that are neither idle nor closed.
func (c *connCounter) active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.state {
		if s == http.StateActive || s == http.StateNew {
			n++
		}
	}
	return n
}

// newLogger logs JSON unless told otherwise or writing to a terminal.
func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// idempotencyGuard builds the Idempotency-Key guard: on Redis when -redis-url is set, so that every replica sees
// every key, else in memory. Redis must answer a PING within 5s: a wrong address fails the start (exit 1) rather
// than every keyed batch later. closeStore closes the Redis client.
func idempotencyGuard(ctx context.Context, cfg config, rec idempotency.Recorder, log *slog.Logger) (g *idempotency.Guard, closeStore func(), err error) {
	var store idempotency.Store = idempotency.NewMemory(idempotency.MemoryConfig{
		MaxEntries: cfg.idempotencyMaxEntries,
		MaxBytes:   int64(cfg.idempotencyMaxBytes),
	})
	closeStore, where := func() {}, "memory"
	if cfg.redisURL != "" {
		opt, err := redis.ParseURL(cfg.redisURL) // validated by parseConfig
		if err != nil {
			return nil, nil, &usageError{err}
		}
		where = opt.Addr
		client := redis.NewClient(opt)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := client.Ping(pctx).Err(); err != nil {
			_ = client.Close()
			return nil, nil, fmt.Errorf("redis at %s (-redis-url) unreachable: %w", where, err)
		}
		store, closeStore = idempotency.NewRedis(client, ""), func() { _ = client.Close() }
	}
	log.Info("idempotency", "store", where, "ttl", cfg.idempotencyTTL.String())
	return idempotency.New(idempotency.Config{
		Store: store,
		TTL:   cfg.idempotencyTTL,
		// A claim outlives the longest batch (the runner stops it at -batch-timeout) with room to store its answer.
		Lease:     cfg.batchTimeout + 30*time.Second,
		MaxAnswer: int64(cfg.idempotencyMaxAnswer),
		Recorder:  rec,
		Logger:    log,
	}), closeStore, nil
}

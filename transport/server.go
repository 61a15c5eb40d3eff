// Package transport is batchd's HTTP face: the echo server and its routes, the error → status table for batch-level
// refusals, and the invokers that carry a step to an upstream API (HTTPInvoker) or to an in-process handler
// (InProcessInvoker).
//
// Contract (CONTRACT.md §2, §3, §6):
//   - POST /v1/batch answers 200 whenever the batch was accepted, whatever its steps did, with every step's result in
//     request order; a refused batch gets 400 (plan problems), 413 (body over MaxBody), 415 (not JSON) or 503
//     (draining), each an ErrorResult whose result.details lists the problems.
//   - Batch-level pass-through headers (Authorization, X-Request-ID, Accept-Language, traceparent, tracestate and
//     Config.ForwardHeaders) reach every step unless the step sets its own.
//   - If the client goes away, the batch's context is cancelled: no new step starts and running ones are cancelled.
//   - With Accept: application/x-ndjson (WantsStream) an accepted batch is answered as a stream, one line per step
//     as it finishes, then a summary line (CONTRACT.md §9); refusals stay JSON ErrorResults with their status.
//   - Internals never reach a client: unexpected errors and panics are logged and answered with a bare 500.
package transport

import (
	"context"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/batchd/batchd/errcode"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// Observer receives batch-level events; the metrics package implements it.
type Observer interface {
	BatchStarted()
	BatchFinished()
	BatchRejected(reason string, d time.Duration)
}

// Batcher runs a plan; *runner.Runner implements it.
type Batcher interface {
	Run(ctx context.Context, p *planner.Plan, opt runner.Options) []runner.Result
}

// Idempotency makes a retried batch run once (CONTRACT.md §9, Idempotency-Key); *idempotency.Guard implements it.
// Begin sees the request once its body is read, before planning, with the form the handler will answer in (stream:
// NDJSON, as WantsStream decided), which is part of what a retry must repeat: the handler decides it once, so the
// key's fingerprint is always the form of the answer sent. When Begin answered the request itself (a replay, a
// conflict, a refusal) the handler stops. Otherwise the handler calls finish with the answer it gives (only the
// first call counts): a 2xx answer is stored, any other status, or none (a refused plan, a panic), frees the key.
type Idempotency interface {
	Begin(w http.ResponseWriter, r *http.Request, body []byte, stream bool) (finish func(status int, contentType string, body []byte), answered bool)
}

// Config is the server's wiring. Zero values mean defaults or "absent".
type Config struct {
	Planner planner.Config
	Runner  Batcher
	// MaxBody is the largest batch request body in bytes; default 1 MiB.
	MaxBody int64
	// RateLimiter, optional, charges each caller a batch's step count after planning and before anything runs; a
	// caller over its limit gets 429 with Retry-After.
	RateLimiter RateLimiter
	// Idempotency, optional, guards batches sent with an Idempotency-Key header.
	Idempotency Idempotency
	// ForwardHeaders are batch-level request headers forwarded to every step in addition to the defaults.
	ForwardHeaders []string
	Observer       Observer     // optional
	Metrics        http.Handler // optional: served at GET /metrics
	Demo           http.Handler // optional: the demo API, served at POST /v1/<Method>
	OpenAPI        []byte       // optional: served at GET /openapi.yaml
	Logger         *slog.Logger // optional
	// BatchMiddleware wraps POST /v1/batch only, first entry outermost, inside the server-wide Recover (e.g.
	// tracing.Middleware, whose span the handler's request context then carries to every step). Optional.
	BatchMiddleware []echo.MiddlewareFunc
}

// DefaultForwardHeaders reach every step of a batch unless the step sets its own.
var defaultForwardHeaders = []string{"Authorization", "X-Request-Id", "Accept-Language", "Traceparent", "Tracestate"}

// Server serves batchd's routes.
type Server struct {
	cfg      Config
	e        *echo.Echo
	forward  []string
	log      *slog.Logger
	obs      Observer
	draining atomic.Bool
}

// New builds the server and mounts every route.
func New(cfg Config) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	s := &Server{cfg: cfg, log: cfg.Logger, obs: cfg.Observer}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	s.forward = append([]string(nil), defaultForwardHeaders...)
	for _, h := range cfg.ForwardHeaders {
		s.forward = append(s.forward, http.CanonicalHeaderKey(strings.TrimSpace(h)))
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = echo.ExtractIPDirect() // the connection's address: a client cannot pick its identity by header
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("panic in handler", "path", c.Request().URL.Path, "err", err, "stack", string(stack))
			return err
		},
	}))
	s.e = e
	s.routes()
	return s
}

// routes is the one place every endpoint is mounted.
func (s *Server) routes() {
	s.e.POST("/v1/batch", s.handleBatch, s.cfg.BatchMiddleware...)
	s.e.GET("/healthz", func(c echo.Context) error { return c.JSONBlob(http.StatusOK, []byte(`{"ok":true}`)) })
	s.e.GET("/readyz", s.handleReady)
	if s.cfg.Metrics != nil {
		s.e.GET("/metrics", echo.WrapHandler(s.cfg.Metrics))
	}
	if s.cfg.OpenAPI != nil {
		s.e.GET("/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", s.cfg.OpenAPI) })
	}
	if s.cfg.Demo != nil {
		s.e.POST("/v1/*", echo.WrapHandler(http.StripPrefix("/v1", s.cfg.Demo)))
	}
}

// Handler returns the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.e }

// Drain makes readiness fail and refuses new batches with 503, so a load balancer moves traffic away while the
// batches in flight finish.
func (s *Server) Drain() { s.draining.Store(true) }

// HTTPServer wraps the handler in an http.Server with the timeouts a public listener needs. writeTimeout bounds
// a whole exchange and must exceed the batch timeout.
func (s *Server) HTTPServer(addr string, writeTimeout time.Duration) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s.e,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

func (s *Server) handleReady(c echo.Context) error {
	if s.draining.Load() {
		return c.JSONBlob(http.StatusServiceUnavailable, errcode.Body(errcode.Unavailable, "draining"))
	}
	return c.JSONBlob(http.StatusOK, []byte(`{"ok":true}`))
}

func (s *Server) handleBatch(c echo.Context) error {
	start := time.Now()
	r := c.Request()
	// The request's X-Request-Id values, or one made here (what Header.Get and Set would do, without their copies):
	// the request and the answer share the one-element slice, capped, so that an append by either copies.
	ids := r.Header["X-Request-Id"]
	if len(ids) == 0 || ids[0] == "" {
		ids = []string{newRequestID()}
		r.Header["X-Request-Id"] = ids
	}
	reqID := ids[0]
	c.Response().Header()["X-Request-Id"] = ids[:1:1]

	if s.draining.Load() {
		return s.refuse(c, start, "draining", errcode.Unavailable, "batchd is shutting down; retry on another instance", nil)
	}
	if !isJSON(r.Header.Get("Content-Type")) {
		return s.refuse(c, start, "unsupported_media_type", errcode.UnsupportedMedia,
			"Content-Type must be application/json", nil)
	}
	// Sized from Content-Length, so that a typical batch is read into one allocation; bounded, so that a length
	// announced but never sent costs little.
	buf := make([]byte, 0, min(initialBufSize(r.ContentLength, s.cfg.MaxBody), maxBodyPresize))
	body, err := readAll(http.MaxBytesReader(c.Response(), r.Body, s.cfg.MaxBody), buf)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return s.refuse(c, start, "body_too_large", errcode.BodyTooLarge,
				"request body exceeds "+strconv.FormatInt(s.cfg.MaxBody, 10)+" bytes", nil)
		}
		s.log.Info("batch body not read", "request_id", reqID, "err", err)
		return nil // the client is gone or broke the stream; nobody reads an answer
	}
	// Decided once: the form of the answer is also part of an Idempotency-Key's fingerprint.
	stream := WantsStream(r.Header.Values("Accept"))
	finish := func(int, string, []byte) {}
	if s.cfg.Idempotency != nil {
		var answered bool
		if finish, answered = s.cfg.Idempotency.Begin(c.Response(), r, body, stream); answered {
			return nil
		}
		defer finish(0, "", nil) // a no-op once the answer below was recorded; else (refused, panic) frees the key
	}
	plan, err := planner.Parse(body, s.cfg.Planner)
	if err != nil {
		var pe *planner.Error
		if !errors.As(err, &pe) {
			return err
		}
		reason := "invalid_json"
		if len(pe.Problems) > 0 {
			reason = string(pe.Problems[0].Reason)
		}
		return s.refuse(c, start, reason, errcode.InvalidBatch, describe(pe), pe.Problems)
	}
	if limited, err := s.rateLimit(c, start, plan); limited {
		return err
	}

	if stream {
		return s.stream(c, start, plan, finish)
	}
	s.obs.BatchStarted()
	results := s.cfg.Runner.Run(r.Context(), plan, runner.Options{Header: s.forwarded(r.Header)})
	s.obs.BatchFinished()

	failed := 0
	for i := range results {
		if results[i].Failed {
			failed++
		}
	}
	dur := msSince(start)
	s.logRollbackFailures(reqID, plan, results)
	out := runner.AppendAnswer(nil, plan, results)       // sizes its one allocation from the results
	finish(http.StatusOK, echo.MIMEApplicationJSON, out) // also when the client left: its retry sees what ran
	if r.Context().Err() != nil {
		s.logBatch("batch abandoned: client closed", reqID, len(results), failed, dur, false)
		s.abandoned()
		return nil
	}
	s.logBatch("batch", reqID, len(results), failed, dur, false)
	return c.JSONBlob(http.StatusOK, out)
}

// logBatch writes a batch's access line at Info, with "stream": true for a streamed answer: typed attributes, and
// nothing built when Info is off.
func (s *Server) logBatch(msg, reqID string, steps, failed int, durationMS float64, stream bool) {
	ctx := context.Background() // what Logger.Info uses
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	id, st, fl, dur := slog.String("request_id", reqID), slog.Int("steps", steps), slog.Int("failed", failed),
		slog.Float64("duration_ms", durationMS)
	if stream {
		s.log.LogAttrs(ctx, slog.LevelInfo, msg, id, st, fl, dur, slog.Bool("stream", true))
		return
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, msg, id, st, fl, dur)
}

// refuse answers a batch that was not accepted, counting it under reason.
func (s *Server) refuse(c echo.Context, start time.Time, reason string, code errcode.Code, description string, problems []planner.Problem) error {
	s.obs.BatchRejected(reason, time.Since(start))
	s.log.Info("batch refused", "request_id", c.Response().Header().Get("X-Request-Id"), "reason", reason,
		"problems", len(problems), "duration_ms", msSince(start))
	details := make([]errcode.Detail, len(problems))
	for i, p := range problems {
		details[i] = errcode.Detail{Key: p.Key, Reason: string(p.Reason), Problem: p.Detail}
	}
	b := errcode.BatchBody(code, reason, description, details)
	return c.JSONBlob(code.Status(), b)
}

// handleError is echo's error handler: known HTTP errors become ErrorResults, everything else a bare 500 whose
// cause is logged and never shown.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := errcode.Internal, "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			code, msg = errcode.NotFound, "no such route: "+c.Request().URL.Path
		case http.StatusMethodNotAllowed:
			code, msg = errcode.MethodNotAllowed, "method not allowed"
		case http.StatusRequestEntityTooLarge:
			code, msg = errcode.BodyTooLarge, "request body too large"
		default:
			if he.Code < 500 {
				code, msg = errcode.Code(he.Code*10), http.StatusText(he.Code)
			}
		}
	}
	if code == errcode.Internal {
		s.log.Error("request failed", "path", c.Request().URL.Path, "err", err)
	}
	if werr := c.JSONBlob(code.Status(), errcode.Body(code, msg)); werr != nil {
		s.log.Info("error answer not written", "err", werr)
	}
}

// forwarded picks the batch-level headers that every step inherits: nil when the request has none of them (the
// runner and the invokers take a nil header as an empty one).
func (s *Server) forwarded(h http.Header) http.Header {
	var out http.Header
	for _, name := range s.forward {
		if v, ok := h[name]; ok {
			if out == nil {
				out = make(http.Header, len(s.forward))
			}
			out[name] = v
		}
	}
	return out
}

// isJSON accepts application/json, any +json type, and an absent Content-Type (curl -d without -H sends a form
// type, which is refused, so a client that names a type must name the right one).
func isJSON(ct string) bool {
	if ct == "" || ct == "application/json" { // the usual case, exactly as ParseMediaType would judge it
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// describe is the top-level description of a refused plan.
func describe(pe *planner.Error) string {
	if n := len(pe.Problems); n != 1 {
		return "batch refused: " + strconv.Itoa(n) + " problems; nothing was executed"
	}
	return "batch refused: " + pe.Problems[0].Detail + "; nothing was executed"
}

// maxBodyPresize bounds the buffer a batch body is read into before any of it arrived.
const maxBodyPresize = 64 << 10

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

type nopObserver struct{}

func (nopObserver) BatchStarted()                       {}
func (nopObserver) BatchFinished()                      {}
func (nopObserver) BatchRejected(string, time.Duration) {}

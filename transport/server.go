// Package transport is batchd's HTTP face: the echo server and its routes, the error → status table for batch-level
// refusals, and the invokers that carry a step to an upstream API (HTTPInvoker) or to an in-process handler
// (InProcessInvoker).
//
// Contract (README "Configuration", "Requests", "Responses"):
//   - POST /v1/batch answers 200 whenever the batch was accepted, whatever its steps did, with every step's result in
//     request order; a refused batch gets 400 (plan problems), 413 (body over MaxBody), 415 (not JSON) or 503
//     (draining), each an ErrorResult whose result.details lists the problems.
//   - Batch-level pass-through headers (Authorization, X-Request-ID, Accept-Language, traceparent, tracestate and
//     Config.ForwardHeaders) reach every step unless the step sets its own.
//   - If the client goes away, the batch's context is cancelled: no new step starts and running ones are cancelled.
//   - With Accept: application/x-ndjson (WantsStream) an accepted batch is answered as a stream, one line per step
//     as it finishes, then a summary line (README "Streaming results"); refusals stay JSON ErrorResults with their
//     status.
//   - Internals never reach a client: unexpected errors and panics are logged and answered with a bare 500.
package transport

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/ratelimit"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport/ui"
)

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI 3.0.3 description of the server's HTTP interface, as served at GET /openapi.yaml. Each
// call returns a fresh copy, so no caller can change what another one sees.
func OpenAPI() []byte { return slices.Clone(openAPI) }

// Observer receives batch-level events; *metrics.Metrics implements it.
type Observer interface {
	BatchStarted()  // a batch was accepted and starts
	BatchFinished() // an accepted batch ended
	// BatchAbandoned: an accepted batch's client went away before its answer was written (once per batch).
	BatchAbandoned()
	BatchRejected(reason string, d time.Duration) // a batch was refused, for reason, after d
}

// Runner runs a plan; *runner.Runner implements it.
type Runner interface {
	Run(ctx context.Context, p *planner.Plan, opt runner.Options) []runner.Result
}

// Idempotency makes a retried batch run once (README "Idempotent retries"); *idempotency.Guard implements
// it. Begin sees the request once its body is read, before planning, with the form the handler will answer in
// (stream: NDJSON, as WantsStream decided), which is part of what a retry must repeat: the handler decides it once,
// so the key's fingerprint is always the form of the answer sent. When Begin answered the request itself (a replay,
// a conflict, a refusal) the handler stops. Otherwise the handler calls finish with the answer it gives (only the
// first call counts): a 2xx answer is stored, any other status, or none (a refused plan, a panic), frees the key.
// limit is the largest answer the key stores (0 for a request without a key): the handler passes a nil body with a
// 2xx status for an answer over it, which is then remembered as run but not stored.
type Idempotency interface {
	Begin(w http.ResponseWriter, r *http.Request, body []byte, stream bool) (finish func(status int, contentType string, body []byte), limit int64, answered bool)
}

// Config is the server's wiring. Zero values mean defaults or "absent".
type Config struct {
	Planner planner.Config
	Runner  Runner
	// MaxBody is the largest batch request body in bytes; default 1 MiB.
	MaxBody int64
	// RateLimiter, optional, charges each caller a batch's step count after planning and before anything runs; a
	// caller over its limit gets 429 with Retry-After.
	RateLimiter RateLimiter
	// RateLimitKey is what identifies a caller to the RateLimiter: "address" (the default: the client's address)
	// or "authorization" (a digest of its Authorization header, else its address), which a client can mint at will
	// unless a gateway in front verifies it.
	RateLimitKey string
	// TrustedProxies are the peers whose X-Forwarded-For is believed: behind one, a client's address is the last
	// address in X-Forwarded-For that is not a trusted proxy. Without any, it is the connection's peer.
	TrustedProxies []*net.IPNet
	// Idempotency, optional, guards batches sent with an Idempotency-Key header.
	Idempotency Idempotency
	// ForwardHeaders are batch-level request headers forwarded to every step in addition to the defaults.
	ForwardHeaders []string
	Observer       Observer     // optional
	Metrics        http.Handler // optional: served at GET /metrics
	Demo           http.Handler // optional: the demo API, served at POST /v1/<Method>
	Logger         *slog.Logger // optional
	// UpstreamHost, optional, names the upstream (the HTTP invoker's base URL host) in the warnings logged for step
	// timeouts and upstream errors.
	UpstreamHost string
	// BatchMiddleware wraps POST /v1/batch only, first entry outermost, inside the server-wide Recover (e.g.
	// tracing.Middleware, whose span the handler's request context then carries to every step). Optional.
	BatchMiddleware []echo.MiddlewareFunc
	// Memory, optional, is the process memory budget (-memory-budget): a batch is admitted only when it can hold
	// the batch's request and working buffers (else 503 overloaded with Retry-After), and everything the batch
	// holds then is drawn from it (README "Limits and guarantees").
	Memory *budget.Pool
	// MaxBatchBytes bounds what one batch holds (-max-batch-bytes); 0: the process budget alone.
	MaxBatchBytes int64
	// Jobs, optional, serves /v1/jobs (jobs.go).
	Jobs JobsConfig
}

// Reasons the HTTP layer refuses a batch for, besides the planner's (planner.Reason): the reason of the 4xx/503
// answer's problem and of the batches_rejected_total metric.
const (
	ReasonBodyTooLarge     = "body_too_large"
	ReasonUnsupportedMedia = "unsupported_media_type"
	ReasonDraining         = "draining"
	ReasonRateLimited      = "rate_limited"
	ReasonOverloaded       = "overloaded"
	ReasonInvalidQuery     = "invalid_query"
)

// RefusalReasons lists the reasons the HTTP layer refuses a batch for, a bounded label set for metrics.
func RefusalReasons() []string {
	return []string{ReasonBodyTooLarge, ReasonUnsupportedMedia, ReasonDraining, ReasonRateLimited, ReasonOverloaded,
		ReasonInvalidQuery}
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
	notReady atomic.Bool // readiness fails: set by Unready and Drain
}

// New builds the server and mounts every route.
func New(cfg Config) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Jobs.MaxBatches <= 0 {
		cfg.Jobs.MaxBatches = DefaultJobMaxBatches
	}
	if cfg.Jobs.MaxBody <= 0 {
		cfg.Jobs.MaxBody = DefaultJobMaxBody
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
	// The connection's address, or behind trusted proxies the last untrusted X-Forwarded-For hop: a client cannot
	// pick its identity by header.
	e.IPExtractor = echo.ExtractIPDirect()
	if len(cfg.TrustedProxies) > 0 {
		opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, n := range cfg.TrustedProxies {
			opts = append(opts, echo.TrustIPRange(n))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
	}
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
	s.e.GET("/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", openAPI) })
	// The batch inspector's pages (package transport/ui); GET /ui redirects to /ui/.
	inspector := echo.WrapHandler(http.StripPrefix("/ui", ui.Handler()))
	s.e.GET("/ui", inspector)
	s.e.GET("/ui/*", inspector)
	if s.cfg.Demo != nil {
		s.e.POST("/v1/*", echo.WrapHandler(http.StripPrefix("/v1", s.cfg.Demo)))
	}
	if s.cfg.Jobs.Engine != nil {
		s.jobRoutes()
	}
}

// Handler returns the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.e }

// Unready makes readiness fail while batches are still served: the first stage of a shutdown, which gives load
// balancers time to stop sending traffic before the listener closes.
func (s *Server) Unready() { s.notReady.Store(true) }

// Drain makes readiness fail and refuses new batches with 503, so a load balancer moves traffic away while the
// batches in flight finish.
func (s *Server) Drain() {
	s.notReady.Store(true)
	s.draining.Store(true)
}

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
	if s.notReady.Load() {
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
		return s.refuse(c, start, ReasonDraining, errcode.Unavailable, "batchd is shutting down; retry on another instance", nil)
	}
	if s.cfg.Jobs.Engine != nil {
		defer s.cfg.Jobs.Engine.Interactive()()
	}
	// An absent Content-Type counts as JSON; curl -d without -H sends a form type, which is refused, so a client
	// that names a type must name the right one.
	if !planner.JSONMediaType(r.Header.Get("Content-Type")) {
		return s.refuse(c, start, ReasonUnsupportedMedia, errcode.UnsupportedMedia,
			"Content-Type must be application/json", nil)
	}
	dryRun, problem := flagQuery(r.URL.RawQuery, "dry_run", "POST /v1/batch")
	if problem != "" {
		return s.refuse(c, start, ReasonInvalidQuery, errcode.InvalidBatch, problem, nil)
	}
	acct, err := s.admit(r.ContentLength)
	if err != nil {
		c.Response().Header().Set("Retry-After", "1")
		return s.refuse(c, start, ReasonOverloaded, errcode.Overloaded,
			"batchd is at its memory budget and cannot take this batch now; retry after 1s ("+err.Error()+")", nil)
	}
	defer acct.Close() // the batch's bytes, once its answer is written
	body, err := s.readBody(r, c.Response(), acct)
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return s.refuse(c, start, ReasonBodyTooLarge, errcode.BodyTooLarge,
				"request body exceeds "+strconv.FormatInt(s.cfg.MaxBody, 10)+" bytes (-max-body)", nil)
		case isBudget(err):
			c.Response().Header().Set("Retry-After", "1")
			return s.refuse(c, start, ReasonOverloaded, errcode.Overloaded,
				"batchd is at its memory budget and cannot take this batch now; retry after 1s ("+err.Error()+")", nil)
		}
		s.log.Info("batch body not read", "request_id", reqID, "err", err)
		return nil // the client is gone or broke the stream; nobody reads an answer
	}
	// Decided once: the form of the answer is also part of an Idempotency-Key's fingerprint.
	stream := WantsStream(r.Header.Values("Accept"))
	finish, storeLimit := func(int, string, []byte) {}, int64(0)
	if s.cfg.Idempotency != nil {
		var answered bool
		if finish, storeLimit, answered = s.cfg.Idempotency.Begin(c.Response(), r, body, stream); answered {
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
	if dryRun || plan.DryRun {
		o := wire{}
		o.plan(plan)
		finish(http.StatusOK, echo.MIMEApplicationJSON, o.buf)
		s.logBatch(c, "batch dry run", plan, nil, start, false)
		return c.JSONBlob(http.StatusOK, o.buf)
	}
	if limited, err := s.rateLimit(c, start, plan); limited {
		return err
	}

	opt := runner.Options{Header: s.forwarded(r.Header), Budget: acct}
	if stream {
		return s.stream(c, start, plan, opt, finish, storeLimit)
	}
	s.obs.BatchStarted()
	results := s.cfg.Runner.Run(r.Context(), plan, opt)
	s.obs.BatchFinished()

	s.logRollbackFailures(reqID, plan, results)
	err = s.writeAnswer(c, plan, results, acct, finish, storeLimit)
	if err != nil || r.Context().Err() != nil {
		s.logBatch(c, "batch abandoned: client closed", plan, results, start, false)
		s.obs.BatchAbandoned()
		return nil
	}
	s.logBatch(c, "batch", plan, results, start, false)
	return nil
}

// flagQuery reads a query string in which only the boolean parameter name may stand (dry_run on POST /v1/batch,
// wait on GET /v1/jobs/{id}/results; route names the endpoint in problems): its value, or the problem that
// refuses the request.
func flagQuery(raw, name, route string) (value bool, problem string) {
	if raw == "" {
		return false, ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return false, "malformed query string: " + err.Error()
	}
	for param, vs := range q {
		if param != name {
			return false, "unknown query parameter " + strconv.Quote(param) + " on " + route + "; only " + name + " is accepted"
		}
		if len(vs) != 1 {
			return false, "query parameter " + name + " given " + strconv.Itoa(len(vs)) + " times"
		}
		if value, err = strconv.ParseBool(vs[0]); err != nil {
			return false, "query parameter " + name + " must be true or false, not " + strconv.Quote(vs[0])
		}
	}
	return value, ""
}

// batchOverhead is what a batch is charged at admission besides its request: the buffers its answer is written
// through, and the plan's bookkeeping.
const batchOverhead = 64 << 10

// admit opens the account of a new batch whose request announces length bytes (-1: unknown), holding the plan's
// share of the request and the answer's buffers; an error means the process budget cannot hold them now.
func (s *Server) admit(length int64) (*budget.Account, error) {
	return s.cfg.Memory.Open(s.cfg.MaxBatchBytes, batchOverhead+max(length, 0))
}

// readBody reads the request body, at most MaxBody bytes, each buffer reserved from the batch's account first.
// The plan keeps a copy of what it needs of the body: when the request did not announce its length, that share is
// reserved now that it is known.
func (s *Server) readBody(r *http.Request, w http.ResponseWriter, acct *budget.Account) ([]byte, error) {
	buf, err := newCappedBuffer(min(r.ContentLength, maxBodyPresize), s.cfg.MaxBody+1, acct)
	if err != nil {
		return nil, err
	}
	if err := buf.readFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)); err != nil {
		buf.discard()
		return nil, err
	}
	if r.ContentLength < 0 {
		if err := acct.Reserve(int64(len(buf.buf))); err != nil {
			buf.discard()
			return nil, err
		}
	}
	return buf.buf, nil
}

// smallAnswer is the size up to which an answer is built whole and sent with a Content-Length; a larger one is
// written to the client in chunks straight from the step bodies.
const smallAnswer = 64 << 10

// writeAnswer writes the JSON answer of a batch that ran, and records it for its Idempotency-Key (finish; an
// answer over storeLimit is recorded as not stored). A small answer, or one to be stored, is built whole in a
// buffer reserved from the batch's account; any other, or one the account cannot hold, is written in chunks. It
// returns the error of writing to the client, if any.
func (s *Server) writeAnswer(c echo.Context, plan *planner.Plan, results []runner.Result, acct *budget.Account,
	finish func(int, string, []byte), storeLimit int64) error {
	size := answerBound(plan, results)
	if size > smallAnswer && size > storeLimit && storeLimit > 0 {
		size = answerSize(plan, results) // the bound is loose: whether it is stored depends on the exact size
	}
	w := c.Response()
	before := writeDeadline(w)
	if size <= max(smallAnswer, storeLimit) && acct.Reserve(size) == nil {
		o := wire{buf: make([]byte, 0, size)}
		o.answer(plan, results)
		stored := o.buf
		if int64(len(stored)) > storeLimit {
			stored = nil
		}
		finish(http.StatusOK, echo.MIMEApplicationJSON, stored) // also when the client left: its retry sees what ran
		before()
		return c.JSONBlob(http.StatusOK, o.buf)
	}
	finish(http.StatusOK, echo.MIMEApplicationJSON, nil) // ran, too large to store
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(http.StatusOK)
	o := wire{w: w, before: before, buf: make([]byte, 0, chunk+512)}
	o.answer(plan, results)
	return o.err
}

// writeIdle bounds how long one write of an answer may wait for the client to read: a client that reads keeps
// its answer coming however large it is, one that stops is cut after this long.
const writeIdle = 15 * time.Second

// writeDeadline returns what to call before each write of an answer: it moves the connection's write deadline to
// writeIdle from now (the server's WriteTimeout counts from the request, which a long batch has used up).
func writeDeadline(w http.ResponseWriter) func() {
	rc := http.NewResponseController(w)
	return func() { _ = rc.SetWriteDeadline(time.Now().Add(writeIdle)) }
}

// Bounds of what one batch writes to the log, whatever its size: the failed steps its access line lists, and the
// warnings for its step timeouts and upstream errors.
const (
	maxLoggedFailures = 10
	maxStepWarnings   = 5
)

// logBatch writes a batch's access line at Info: its request id, its caller's fingerprint, its size, its failed
// steps as "key:status" (the first maxLoggedFailures in request order, then how many more), its duration, and
// "stream": true for a streamed answer. Before it, a warning for each step that timed out or got no usable
// response from the upstream (the first maxStepWarnings; the access line counts the rest). results is nil for a dry
// run. Nothing is built when the levels are off.
func (s *Server) logBatch(c echo.Context, msg string, plan *planner.Plan, results []runner.Result, start time.Time, stream bool) {
	ctx := context.Background() // what Logger.Info uses
	reqID := c.Response().Header().Get("X-Request-Id")
	unlogged := s.warnSteps(ctx, reqID, plan, results)
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	steps := len(results)
	if results == nil {
		steps = len(plan.Steps)
	}
	failed := runner.CountFailed(results)
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs, slog.String("request_id", reqID), slog.String("caller", callerFingerprint(s.caller(c))),
		slog.Int("steps", steps), slog.Int("failed", failed))
	if failed > 0 {
		listed := make([]string, 0, min(failed, maxLoggedFailures))
		for i := range results {
			if results[i].Failed && len(listed) < maxLoggedFailures {
				listed = append(listed, results[i].Key+":"+strconv.Itoa(results[i].Status))
			}
		}
		attrs = append(attrs, slog.Any("failed_steps", listed))
		if more := failed - len(listed); more > 0 {
			attrs = append(attrs, slog.Int("failed_steps_not_listed", more))
		}
	}
	if unlogged > 0 {
		attrs = append(attrs, slog.Int("step_warnings_not_logged", unlogged))
	}
	attrs = append(attrs, slog.Float64("duration_ms", msSince(start)))
	if stream {
		attrs = append(attrs, slog.Bool("stream", true))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

// warnSteps logs a warning for each step of a batch that timed out or got no usable response from the upstream
// (connection refused, reset, a protocol error, a response over -max-response), naming the upstream host: the
// first maxStepWarnings of them. It returns how many it did not log.
func (s *Server) warnSteps(ctx context.Context, reqID string, plan *planner.Plan, results []runner.Result) (unlogged int) {
	if !s.log.Enabled(ctx, slog.LevelWarn) {
		return 0
	}
	logged := 0
	for i := range results {
		r := &results[i]
		msg := ""
		switch {
		case r.Outcome == runner.OutcomeTimeout:
			msg = "step timed out"
		case r.UpstreamError != "":
			msg = "upstream error"
		default:
			continue
		}
		if logged == maxStepWarnings {
			unlogged++
			continue
		}
		logged++
		attrs := make([]slog.Attr, 0, 9)
		attrs = append(attrs, slog.String("request_id", reqID), slog.String("key", r.Key),
			slog.String("method", plan.Steps[i].Name), slog.Int("status", r.Status), slog.Int("code", int(r.Code)))
		if r.UpstreamError != "" {
			attrs = append(attrs, slog.String("kind", r.UpstreamError))
		}
		if s.cfg.UpstreamHost != "" {
			attrs = append(attrs, slog.String("upstream", s.cfg.UpstreamHost))
		}
		attrs = append(attrs, slog.Float64("duration_ms", float64(r.Duration.Microseconds())/1000))
		s.log.LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
	}
	return unlogged
}

// caller is the identity of a request's caller, as the rate limiter keys it (Config.RateLimitKey): its client
// address, or a digest of its Authorization header.
func (s *Server) caller(c echo.Context) string {
	auth := ""
	if s.cfg.RateLimitKey == "authorization" {
		auth = c.Request().Header.Get("Authorization")
	}
	return ratelimit.Identity(auth, c.RealIP())
}

// callerFingerprint is what the log says of a caller: the first 12 hexadecimal digits of the SHA-256 of its
// identity. The same caller has the same fingerprint on every replica and across restarts, so that its lines can be
// found together; the Authorization header is never logged, only a digest of its digest. An address's fingerprint
// can be reversed by trying every address: it groups lines, it does not hide who sent them.
func callerFingerprint(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return hex.EncodeToString(sum[:6])
}

// refuse answers a batch that was not accepted, counting it under reason.
func (s *Server) refuse(c echo.Context, start time.Time, reason string, code errcode.Code, description string, problems []planner.Problem) error {
	s.obs.BatchRejected(reason, time.Since(start))
	s.log.Info("batch refused", "request_id", c.Response().Header().Get("X-Request-Id"),
		"caller", callerFingerprint(s.caller(c)), "reason", reason, "problems", len(problems), "duration_ms", msSince(start))
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
func (nopObserver) BatchAbandoned()                     {}
func (nopObserver) BatchRejected(string, time.Duration) {}

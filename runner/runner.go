package runner

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/planner"
)

// Defaults of Config; README "Configuration", "Limits and guarantees".
const (
	DefaultMaxParallel   = 16
	DefaultStepTimeout   = 10 * time.Second
	DefaultBatchTimeout  = 60 * time.Second
	DefaultMaxCallPath   = 8 << 10
	DefaultMaxCallHeader = 8 << 10
	DefaultMaxCallBody   = 8 << 20
	DefaultMaxCalls      = 1000
)

// Config is a Runner's configuration. The zero value of each field means its default.
type Config struct {
	MaxParallel  int           // most invocations of one batch in flight; default 16
	StepTimeout  time.Duration // one invocation's time limit; default 10s
	BatchTimeout time.Duration // the whole batch's time limit; default 60s
	Recorder     Recorder      // optional (nil = none)
	// Limit, optional, is shared by all batches of a process: a cap on upstream calls in flight across batches.
	Limit *semaphore.Weighted
	// Logger receives panics with their stack; nil means slog.Default().
	Logger *slog.Logger
	// MaxCallPath, MaxCallHeader and MaxCallBody cap one call once its placeholders are resolved: its path, each
	// header value, its body (README "Limits and guarantees"). A step over one fails unsent with 413. Defaults 8 KiB, 8
	// KiB, 8 MiB.
	MaxCallPath   int
	MaxCallHeader int
	MaxCallBody   int64
	// MaxCalls caps the calls one batch makes, a fan-out's included (README "REST APIs"); rollbacks are not counted.
	// A for_each list that would go over it fails its step unsent (413). Default 1000.
	MaxCalls int
}

// Options are one batch's settings.
type Options struct {
	// Header holds the batch-level pass-through headers (Authorization, X-Request-ID, …), sent with every step. It
	// is read-only for the runner and the Invoker; a step's own headers override it per name for that step only.
	Header http.Header
	// OnResult, optional, is called once per step as it ends, in completion order, from the step's goroutine
	// (for streaming). It may be called concurrently for independent steps.
	OnResult func(Result)
	// OnRollback, optional, is called once per rollback attempted in an atomic batch that did not commit, as it
	// ends (Result.Rollback is then set), after every OnResult of the batch. It may be called concurrently for
	// independent rollbacks.
	OnRollback func(Result)
	// Budget, optional, is the batch's byte budget: each call built, each response read (through Call.Budget) and
	// each index of a response read by a placeholder reserves its bytes from it first. A step whose reservation
	// fails is 507 (OutcomeOverBudget). The runner releases what it reserved for a call once the call returned;
	// the rest is the batch's until the caller closes the budget.
	Budget Budget
	// CallKeys, when set, gives every call that sets no Idempotency-Key of its own one made from it (CallKey), the
	// same each time the batch runs: a job's line runs with "<job id>:<line>", so that an upstream that honours
	// keys applies a line run again after a crash once.
	CallKeys string
}

// HeaderIdempotencyKey is the header a call carries under Options.CallKeys.
const HeaderIdempotencyKey = "Idempotency-Key"

// CallKey is the Idempotency-Key of call c under Options.CallKeys prefix: "<prefix>:<step key>". Each call of a
// fan-out step (for_each) is a call of its own, ":<element index>" after it. A rollback's call is another call
// than its step's and gets ":rollback" after it: replaying the step's key would make the upstream answer the undo
// with the step's stored answer.
func CallKey(prefix string, c *Call) string {
	k := prefix + ":" + c.Key
	if c.ForEach {
		k += ":" + strconv.Itoa(c.Index)
	}
	if c.Rollback {
		k += ":rollback"
	}
	return k
}

// Runner executes plans. It is safe for concurrent use.
type Runner struct {
	inv Invoker
	cfg Config
	log *slog.Logger
}

// New returns a Runner that sends calls through inv.
func New(inv Invoker, cfg Config) *Runner {
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = DefaultMaxParallel
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = DefaultBatchTimeout
	}
	if cfg.MaxCallPath <= 0 {
		cfg.MaxCallPath = DefaultMaxCallPath
	}
	if cfg.MaxCallHeader <= 0 {
		cfg.MaxCallHeader = DefaultMaxCallHeader
	}
	if cfg.MaxCallBody <= 0 {
		cfg.MaxCallBody = DefaultMaxCallBody
	}
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = DefaultMaxCalls
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runner{inv: inv, cfg: cfg, log: log}
}

// batch is the state of one Run. Goroutine i writes only results[i], and reads results[d] of a dependency d only
// once d's done channel is closed.
type batch struct {
	r       *Runner
	plan    *planner.Plan
	opt     Options
	start   time.Time
	ctx     context.Context // bounded by BatchTimeout
	results []Result
	resps   *planner.Responses // what templates read
	done    []chan struct{}    // closed when step i ended; nil for a step no other waits for
	started []atomic.Bool      // step i had its StepStarted (the Recorder's in-flight pairing)
	slots   chan struct{}      // the batch's concurrency slots; nil when it cannot exceed MaxParallel
	calls   atomic.Int64       // the calls the batch may still make (Config.MaxCalls)
	stopped atomic.Bool        // stop_on_error: a step failed, start nothing more
	stop    chan struct{}      // closed when stopped turns true; nil without stop_on_error
	// firstFailed is the key of the step whose failure stopped the batch, for the 412 of the steps not started.
	firstFailed atomic.Pointer[string]
}

// Run executes p and returns its results indexed by request position (len == len(p.Steps)). It returns when every
// step has ended. Cancelling ctx cancels the batch: steps not started are not started, running ones are cancelled.
func (r *Runner) Run(ctx context.Context, p *planner.Plan, opt Options) []Result {
	n := len(p.Steps)
	b := &batch{r: r, plan: p, opt: opt, start: time.Now(), results: make([]Result, n), done: make([]chan struct{}, n),
		started: make([]atomic.Bool, n)}
	b.calls.Store(int64(r.cfg.MaxCalls))
	b.resps = planner.NewResponses(n, b.response, b.reserve).WithMeta(b.meta)
	var cancel context.CancelFunc
	b.ctx, cancel = context.WithTimeoutCause(ctx, r.cfg.BatchTimeout, &BatchTimeoutError{Timeout: r.cfg.BatchTimeout})
	defer cancel()
	if n > r.cfg.MaxParallel {
		b.slots = make(chan struct{}, r.cfg.MaxParallel)
	}
	if p.StopOnError {
		b.stop = make(chan struct{})
	}
	for i := range p.Steps {
		if len(p.Steps[i].Dependents) > 0 {
			b.done[i] = make(chan struct{})
		}
	}
	// Not errgroup.WithContext: a failed step is data, it must not cancel unrelated branches; every step returns nil.
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			b.run(i)
			return nil
		})
	}
	_ = g.Wait()
	if p.Atomic {
		b.rollback(ctx)
	}
	if rec := r.cfg.Recorder; rec != nil {
		outcome := "partial"
		switch CountFailed(b.results) {
		case 0:
			outcome = "ok"
		case n:
			outcome = "failed"
		}
		r.guard("", func() {
			rec.BatchDone(BatchEvent{Steps: n, Depth: p.Depth(), Outcome: outcome, Duration: time.Since(b.start)})
		})
	}
	return b.results
}

// response is the body of a step that ended successfully, for b.resps: a template asks only for its step's
// dependencies (or, in a rollback, the step itself), which have ended before it is resolved.
func (b *batch) response(step int) []byte { return b.results[step].Body }

// meta is the status and captured headers of a step that ended, for b.resps.
func (b *batch) meta(step int) (int, http.Header) {
	return b.results[step].Status, b.results[step].Header
}

// reserve draws on the batch's budget, when it has one.
func (b *batch) reserve(n int64) error {
	if b.opt.Budget == nil {
		return nil
	}
	return b.opt.Budget.Reserve(n)
}

func (b *batch) release(n int64) {
	if b.opt.Budget != nil {
		b.opt.Budget.Release(n)
	}
}

// run runs step i on its goroutine, whatever happens to it: its result is final, and its dependents released,
// when run returns.
func (b *batch) run(i int) {
	res := &b.results[i]
	res.Index, res.Key = i, b.plan.Steps[i].Key
	defer func() {
		if v := recover(); v != nil {
			// A panic outside Invoke (which has its own recover): a template, the Recorder, the runner itself.
			b.r.logPanic(res.Key, v)
			b.decided(res, errcode.StepPanic, OutcomeError, "the step panicked; the stack is in batchd's log")
		}
		b.finish(i)
	}()
	b.exec(i, res)
}

// exec runs step i up to its final result: it waits for the step's dependencies, evaluates its condition, and
// makes its call, or its calls for a fan-out.
func (b *batch) exec(i int, res *Result) {
	step := &b.plan.Steps[i]
	for _, d := range step.Deps {
		select {
		case <-b.done[d]:
		case <-b.ctx.Done():
			b.notStarted(res)
			return
		}
	}
	if len(step.Deps) > 0 {
		res.Queued = time.Since(b.start)
	}
	switch {
	case b.ctx.Err() != nil:
		b.notStarted(res)
		return
	case b.depFailed(step, res):
		return
	case b.stopped.Load():
		b.notExecuted(res)
		return
	}
	if step.When != nil {
		ok, err := step.When.Eval(b.resps)
		if err != nil {
			b.buildFailed(b.ctx, err, res)
			return
		}
		if !ok {
			b.decided(res, errcode.ConditionFalse, OutcomeConditionFalse, `not run: "when": `+step.When.String()+" is false")
			return
		}
	}
	if step.ForEach != nil {
		b.fanOut(i, step, res)
		return
	}
	if b.takeCalls(res, 1) {
		b.send(i, step, b.resps, -1, res)
	}
}

// send makes one call of step i, its Responses being resps (the batch's, or a fan-out call's, item >= 0), and
// fills res with what came of it.
func (b *batch) send(i int, step *planner.Step, resps *planner.Responses, item int, res *Result) {
	call := Call{Key: step.Key, Method: step.Method, Name: step.Name, Capture: step.Capture, OKStatus: step.OKStatus,
		ForEach: item >= 0, Index: max(item, 0)}
	if err := b.fill(b.ctx, &call, resps, step.Path, step.Headers, step.Body, step.Text); err != nil {
		b.buildFailed(b.ctx, err, res)
		return
	}
	defer b.release(int64(len(call.Body))) // what fill reserved for it: garbage once the call returned
	if !b.acquire(res) {
		return
	}
	defer b.releaseSlot()

	if rec := b.r.cfg.Recorder; rec != nil && b.started[i].CompareAndSwap(false, true) {
		rec.StepStarted(step.Name)
	}
	sctx, cancel := context.WithTimeoutCause(b.ctx, b.r.cfg.StepTimeout,
		&StepTimeoutError{Key: step.Key, Timeout: b.r.cfg.StepTimeout})
	defer cancel()
	t0 := time.Now()
	res.Executed, res.Started = true, t0.Sub(b.start)
	resp, err, panicked := b.invoke(sctx, call)
	res.Duration = time.Since(t0)
	if panicked {
		b.decided(res, errcode.StepPanic, OutcomeError, "the step panicked; the stack is in batchd's log")
	} else {
		b.classify(sctx, call, resp, err, res)
	}
	// Still holding the slot, so that a step waiting for it sees the stop flag.
	if res.Failed {
		b.failed(step.Key)
	}
}

// takeCalls takes n calls from what the batch may still make (Config.MaxCalls); false, with res filled, when it
// cannot.
func (b *batch) takeCalls(res *Result, n int) bool {
	if b.calls.Add(-int64(n)) >= 0 {
		return true
	}
	b.calls.Add(int64(n))
	b.decided(res, errcode.TooManyCalls, OutcomeTooLarge, "not sent: the batch would make more than "+
		strconv.Itoa(b.r.cfg.MaxCalls)+" calls (-max-calls); split it, or send its steps as a job")
	return false
}

// invoke calls the Invoker, turning a panic into panicked.
func (b *batch) invoke(ctx context.Context, call Call) (resp Response, err error, panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			panicked = true
			b.r.logPanic(call.Key, v)
		}
	}()
	resp, err = b.r.inv.Invoke(ctx, call)
	return resp, err, false
}

// classify fills res from what the Invoker returned (CallOutcome), with batchd's own status and ErrorResult where
// the call gave no usable response.
func (b *batch) classify(ctx context.Context, call Call, resp Response, err error, res *Result) {
	o := CallOutcome(ctx, call, resp, err)
	switch o {
	case OutcomeOK, OutcomeError:
		if err == nil {
			res.Status, res.Body, res.Outcome, res.Failed = resp.Status, resp.Body, o, o != OutcomeOK
			res.Header = resp.Header
			if len(res.Body) == 0 {
				res.Body = nullJSON
			}
			return
		}
		var ie *InvokeError
		if !errors.As(err, &ie) {
			res.UpstreamError = "other"
			b.decided(res, errcode.UpstreamUnreachable, o, "upstream unreachable")
			return
		}
		res.UpstreamError = ie.Kind
		switch ie.Kind {
		case "reset":
			b.decided(res, errcode.UpstreamReset, o, upstreamDescription("upstream connection reset", ie))
		case "protocol":
			b.decided(res, errcode.UpstreamReset, o, upstreamDescription("upstream protocol error", ie))
		case "too_large":
			b.decided(res, errcode.UpstreamTooLarge, o, upstreamDescription("upstream response too large", ie))
		default: // "connect" and kinds this runner does not know
			b.decided(res, errcode.UpstreamUnreachable, o, upstreamDescription("upstream unreachable", ie))
		}
	case OutcomeOverBudget:
		var be *budget.Error
		errors.As(err, &be)
		res.Executed = false // the call may have been sent, but its response was not kept
		b.overBudget(res, be)
	case OutcomeTimeout:
		var ste *StepTimeoutError
		if errors.As(context.Cause(ctx), &ste) {
			b.decided(res, errcode.StepTimeout, o, "step timed out after "+b.r.cfg.StepTimeout.String())
			return
		}
		b.decided(res, errcode.BatchTimeout, o, "batch timed out after "+b.r.cfg.BatchTimeout.String())
	default: // OutcomeSkipped: the caller's context ended
		b.decided(res, errcode.Cancelled, o, cancelled)
	}
}

// upstreamDescription is what a failed call's ErrorResult says: what happened, the upstream's host and the cause
// when the Invoker told them.
func upstreamDescription(what string, ie *InvokeError) string {
	switch {
	case ie.Host != "" && ie.Cause != "":
		return what + ": " + ie.Host + ": " + ie.Cause
	case ie.Host != "":
		return what + ": " + ie.Host
	case ie.Cause != "":
		return what + ": " + ie.Cause
	}
	return what
}

const cancelled = "cancelled: the client went away or the server is shutting down"

var nullJSON = []byte("null")

// depFailed reports whether a dependency of step ended unsuccessfully or was not run and, if so, fills res. A real
// failure wins over a dependency that was merely not executed (stop_on_error), which makes this step not executed
// too. A dependency not run because of its "when" skips the step when the step reads it, and is no obstacle when
// the step only depends_on it.
func (b *batch) depFailed(step *planner.Step, res *Result) bool {
	notExec, notRun := false, ""
	for _, d := range step.Deps {
		dr := &b.results[d]
		switch {
		case dr.Outcome == OutcomeOK:
			continue
		case dr.Outcome == OutcomeConditionFalse:
			if _, reads := slices.BinarySearch(step.Reads, d); reads && notRun == "" {
				notRun = dr.Key
			}
			continue
		case dr.Code == errcode.NotExecuted:
			notExec = true
			continue
		}
		b.decided(res, errcode.DependencyFailed, OutcomeSkipped, "dependency "+dr.Key+" failed")
		return true
	}
	switch {
	case notExec:
		b.notExecuted(res)
		return true
	case notRun != "":
		b.decided(res, errcode.ConditionFalse, OutcomeConditionFalse, "not run: it reads step "+notRun+", which did not run")
		return true
	}
	return false
}

// fill resolves a call's path, headers and body (a step's, or its rollback's) against the responses so far,
// within the call caps, and reserves the body's bytes from the batch's budget. It checks ctx (the batch's, or the
// rollbacks') before each part: resolving reads responses, which can take time, and is work like any other.
func (b *batch) fill(ctx context.Context, call *Call, resps *planner.Responses, path *planner.PathTemplate,
	headers []planner.Header, body *planner.JSONTemplate, text *planner.StringTemplate) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	call.Budget = b.opt.Budget
	if call.Path, err = path.Resolve(resps, b.r.cfg.MaxCallPath); err != nil {
		return err
	}
	call.Header = b.opt.Header
	keyed := b.opt.CallKeys != "" && len(b.opt.Header[HeaderIdempotencyKey]) == 0
	if len(headers) > 0 || keyed {
		// A header map of the call's own when the step adds headers or a key; the batch's is shared read-only
		// otherwise.
		h := make(http.Header, len(b.opt.Header)+len(headers)+1)
		for k, v := range b.opt.Header {
			h[k] = v
		}
		for j := range headers {
			v, err := headers[j].Resolve(resps, b.r.cfg.MaxCallHeader)
			if err != nil {
				return err
			}
			h[headers[j].Name] = []string{v}
		}
		if keyed && len(h[HeaderIdempotencyKey]) == 0 {
			h[HeaderIdempotencyKey] = []string{CallKey(b.opt.CallKeys, call)}
		}
		call.Header = h
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case body != nil:
		call.Body, err = body.Resolve(resps, b.r.cfg.MaxCallBody, b.reserve)
	case text != nil:
		var s string
		if s, err = text.Resolve(resps, int(b.r.cfg.MaxCallBody)); err == nil {
			if err = b.reserve(int64(len(s))); err == nil {
				call.Body = []byte(s)
			}
		}
	}
	return err
}

// buildFailed fills res for a call that could not be built: a placeholder that could not be resolved (424), a
// part over its cap (413), a budget that could not hold the body or an index (507), or ctx ending meanwhile.
func (b *batch) buildFailed(ctx context.Context, err error, res *Result) {
	var tl *planner.TooLargeError
	var be *budget.Error
	var re *planner.ResolveError
	switch {
	case ctx.Err() != nil:
		b.notStarted(res)
	case errors.As(err, &tl):
		b.decided(res, errcode.CallTooLarge, OutcomeTooLarge,
			"not sent: the call's "+tl.Error()+" (-max-call-"+callFlag(tl.Part)+")")
	case errors.As(err, &be):
		b.overBudget(res, be)
	case errors.As(err, &re):
		desc := re.Detail
		if re.Placeholder != "" && !strings.Contains(desc, re.Placeholder) {
			desc = re.Placeholder + ": " + desc
		}
		b.decided(res, re.Code, OutcomeSkipped, desc)
	default:
		b.decided(res, errcode.Unresolvable, OutcomeSkipped, "placeholder could not be resolved")
	}
}

// callFlag names the flag of a call cap by the part it caps: "path", "body", or a header's.
func callFlag(part string) string {
	if part == "path" || part == "body" {
		return part
	}
	return "header"
}

// overBudget fills res for a step whose call or response a budget could not hold.
func (b *batch) overBudget(res *Result, be *budget.Error) {
	b.decided(res, errcode.OverBudget, OutcomeOverBudget, "step failed: "+be.Error())
}

// acquire takes the batch slot and the process-wide slot, in that order, and checks the stop flag before each and
// after both. It fills res and returns false when the step must not start.
func (b *batch) acquire(res *Result) bool {
	if b.stopped.Load() {
		b.notExecuted(res)
		return false
	}
	if b.slots != nil {
		select {
		case b.slots <- struct{}{}:
		case <-b.stop:
			b.notExecuted(res)
			return false
		case <-b.ctx.Done():
			b.notStarted(res)
			return false
		}
	}
	if lim := b.r.cfg.Limit; lim != nil {
		if lim.Acquire(b.ctx, 1) != nil {
			b.releaseBatchSlot()
			b.notStarted(res)
			return false
		}
	}
	if b.stopped.Load() {
		b.releaseSlot()
		b.notExecuted(res)
		return false
	}
	return true
}

// releaseSlot gives back both slots acquire took.
func (b *batch) releaseSlot() {
	if lim := b.r.cfg.Limit; lim != nil {
		lim.Release(1)
	}
	b.releaseBatchSlot()
}

func (b *batch) releaseBatchSlot() {
	if b.slots != nil {
		<-b.slots
	}
}

// failed records that step key failed: with stop_on_error no further step starts.
func (b *batch) failed(key string) {
	if b.stop != nil && b.stopped.CompareAndSwap(false, true) {
		b.firstFailed.Store(&key)
		close(b.stop)
	}
}

// notStarted fills res for a step that did not start because the batch's context ended.
func (b *batch) notStarted(res *Result) {
	var bte *BatchTimeoutError
	if errors.As(context.Cause(b.ctx), &bte) {
		b.decided(res, errcode.BatchTimeout, OutcomeSkipped, "batch timed out after "+b.r.cfg.BatchTimeout.String())
		return
	}
	b.decided(res, errcode.Cancelled, OutcomeSkipped, cancelled)
}

func (b *batch) notExecuted(res *Result) {
	why := "not executed: the batch stopped after a failed step"
	if key := b.firstFailed.Load(); key != nil {
		why = "not executed: the batch stopped after step " + *key + " failed"
	}
	b.decided(res, errcode.NotExecuted, OutcomeSkipped, why)
}

// decided fills res with an outcome batchd decided, its ErrorResult saying description.
func (b *batch) decided(res *Result, code errcode.Code, o Outcome, description string) {
	res.Status, res.Code, res.Outcome = code.Status(), code, o
	res.Body = errcode.Body(code, description)
	res.Failed = o.Failed()
}

// finish reports step i and releases its dependents. It runs whatever happened to the step.
func (b *batch) finish(i int) {
	if done := b.done[i]; done != nil {
		defer close(done)
	}
	res := &b.results[i]
	if res.Failed {
		b.failed(res.Key)
	}
	if rec := b.r.cfg.Recorder; rec != nil {
		step := &b.plan.Steps[i]
		ev := StepEvent{Name: step.Name, Method: step.Method, Outcome: res.Outcome, Status: res.Status,
			UpstreamError: res.UpstreamError, Started: b.started[i].Load(), Decided: res.Code != 0}
		if res.Executed {
			ev.Duration = res.Duration
		}
		b.r.guard(res.Key, func() { rec.StepDone(ev) })
	}
	if f := b.opt.OnResult; f != nil {
		r := *res
		b.r.guard(res.Key, func() { f(r) })
	}
}

// guard calls f, logging a panic instead of letting it end the process.
func (r *Runner) guard(key string, f func()) {
	defer func() {
		if v := recover(); v != nil {
			r.logPanic(key, v)
		}
	}()
	f()
}

func (r *Runner) logPanic(key string, v any) {
	r.log.Error("runner: step panicked", slog.String("key", key), slog.Any("panic", v),
		slog.String("stack", string(debug.Stack())))
}

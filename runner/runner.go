package runner

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/batchd/batchd/errcode"
	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/jsonscan"
	"github.com/batchd/batchd/planner"
)

// Defaults of Config; CONTRACT.md §2 and §10.
const (
	DefaultMaxParallel   = 16
	DefaultStepTimeout   = 10 * time.Second
	DefaultBatchTimeout  = 60 * time.Second
	DefaultMaxCallPath   = 8 << 10
	DefaultMaxCallHeader = 8 << 10
	DefaultMaxCallBody   = 8 << 20
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
	// header value, its body (CONTRACT.md §10). A step over one fails unsent with 413. Defaults 8 KiB, 8 KiB, 8 MiB.
	MaxCallPath   int
	MaxCallHeader int
	MaxCallBody   int64
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
}

// Result is one step's result.
type Result struct {
	Index  int
	Key    string
	Status int // HTTP status reported for the step
	// Body is a JSON value: the response body, or an ErrorResult when batchd decided the outcome. It is shared
	// read-only with the Invoker's response; do not modify it.
	Body    []byte
	Outcome Outcome
	Code    errcode.Code // non-zero when batchd decided the outcome (timeout, dependency failed, …)
	// UpstreamError is the InvokeError kind ("connect", "reset", "too_large", "protocol") or "other" when the
	// Invoker failed with an untyped error; empty otherwise.
	UpstreamError string
	Executed      bool          // Invoke was called
	Failed        bool          // the step counts as failed: anything but OutcomeOK
	Queued        time.Duration // offset from the batch start when every dependency had ended (0 if never)
	Started       time.Duration // offset from the batch start when Invoke was called (0 if never)
	Duration      time.Duration // time inside Invoke
	// Rollback is set in an atomic batch that did not commit, for a step that succeeded and has a rollback: what
	// its rollback did. The step's own Status and Body are kept.
	Rollback *RollbackResult
}

// RolledBack reports whether the step was undone: its rollback ran and succeeded.
func (r Result) RolledBack() bool { return r.Rollback != nil && r.Rollback.OK }

// StepTimeoutError is the context cause of an invocation that ran past Config.StepTimeout.
type StepTimeoutError struct {
	Key     string
	Timeout time.Duration
}

func (e *StepTimeoutError) Error() string {
	return "step " + e.Key + " timed out after " + e.Timeout.String()
}

// Is makes errors.Is(err, context.DeadlineExceeded) hold.
func (e *StepTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// BatchTimeoutError is the context cause of a batch that ran past Config.BatchTimeout.
type BatchTimeoutError struct {
	Timeout time.Duration
}

func (e *BatchTimeoutError) Error() string { return "batch timed out after " + e.Timeout.String() }

// Is makes errors.Is(err, context.DeadlineExceeded) hold.
func (e *BatchTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Runner executes plans. It is safe for concurrent use.
type Runner struct {
	inv   Invoker
	cfg   Config
	log   *slog.Logger
	rbRec RollbackRecorder // cfg.Recorder when it counts rollbacks; nil otherwise

	batchTimeout *BatchTimeoutError // every batch's timeout cause: read-only, classified by type

	// ErrorResult bodies that do not depend on the step, built once. Shared read-only by every Result.
	bodyStepTimeout  []byte
	bodyBatchTimeout []byte
	bodyCancelled    []byte
	bodyNotExecuted  []byte
	bodyUnreachable  []byte
	bodyReset        []byte
	bodyProtocol     []byte
	bodyTooLarge     []byte
	bodyPanic        []byte
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
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	body := func(c errcode.Code, desc string) []byte { return slices.Clip(errcode.Body(c, desc)) }
	rbRec, _ := cfg.Recorder.(RollbackRecorder)
	return &Runner{
		inv:              inv,
		cfg:              cfg,
		log:              log,
		rbRec:            rbRec,
		batchTimeout:     &BatchTimeoutError{Timeout: cfg.BatchTimeout},
		bodyStepTimeout:  body(errcode.StepTimeout, "step timed out after "+cfg.StepTimeout.String()),
		bodyBatchTimeout: body(errcode.BatchTimeout, "batch timed out after "+cfg.BatchTimeout.String()),
		bodyCancelled:    body(errcode.Cancelled, "cancelled: the client went away or the server is shutting down"),
		bodyNotExecuted:  body(errcode.NotExecuted, "not executed: the batch stopped after a failed step"),
		bodyUnreachable:  body(errcode.UpstreamUnreachable, "upstream unreachable"),
		bodyReset:        body(errcode.UpstreamReset, "upstream connection reset"),
		bodyProtocol:     body(errcode.UpstreamReset, "upstream protocol error"),
		bodyTooLarge:     body(errcode.UpstreamTooLarge, "upstream response too large"),
		bodyPanic:        body(errcode.StepPanic, "step panicked"),
	}
}

// batch is the state of one Run. The goroutine running step i writes only results[i] and closes only
// steps[i].done; a step reads another step's result only after that step's done channel is closed (or, for a
// prompt step's prompt dependency, after it ran on the same goroutine).
type batch struct {
	r        *Runner
	plan     *planner.Plan
	opt      Options
	start    time.Time
	ctx      context.Context // bounded by BatchTimeout
	ctxDone  <-chan struct{}
	deadline time.Time // ctx's
	results  []Result
	resps    *planner.Responses // what templates read; nil when no step depends on another and nothing rolls back
	steps    []stepState        // goroutine i's, and under tmu those of the steps in the timer's queue
	slots    chan struct{}      // per-batch concurrency slots; nil when the batch cannot exceed MaxParallel
	stopped  atomic.Bool        // stop_on_error: a step failed, start nothing more
	stop     chan struct{}      // closed when stopped turns true; nil without stop_on_error
	// g runs one goroutine per step. Not errgroup.WithContext: a failed step is data, it must not cancel
	// unrelated branches; every step returns nil.
	g errgroup.Group

	// The step timer: one per batch, for the oldest running step (steptimer.go).
	tmu          sync.Mutex
	timer        *time.Timer // nil until a step needs it
	armed        bool        // timer pending, or its func about to take tmu
	qhead, qtail int32       // the steps that started with a timeout of their own, in start order; -1: none
}

// stepState is the runner's state of one step besides its Result.
type stepState struct {
	done    chan struct{}    // closed when the step ended; nil when no step depends on it; set before any goroutine starts
	prompt  bool             // runs on Run's goroutine (runner.PromptInvoker); set before any goroutine starts
	timeout StepTimeoutError // the cause of the step's own timeout, compared by address
	ctx     stepCtx
	cancel  context.CancelCauseFunc
	next    int32       // the next step in the timer's queue; -1: none; under tmu
	running atomic.Bool // in the timer's queue and not yet returned from Invoke
}

// Run executes p and returns its results indexed by request position (len == len(p.Steps)). It returns when every
// step has ended. Cancelling ctx cancels the batch: steps not started are not started, running ones are cancelled.
func (r *Runner) Run(ctx context.Context, p *planner.Plan, opt Options) []Result {
	n := len(p.Steps)
	b := &batch{
		r:       r,
		plan:    p,
		opt:     opt,
		start:   time.Now(),
		results: make([]Result, n),
		steps:   make([]stepState, n),
		qhead:   -1,
		qtail:   -1,
	}
	if hasDeps(p) || p.Atomic { // only then can a template read a response
		b.resps = planner.NewResponses(n, b.response, b.reserve)
	}
	var cancel context.CancelFunc
	b.ctx, cancel = context.WithTimeoutCause(ctx, r.cfg.BatchTimeout, r.batchTimeout)
	defer cancel()
	b.ctxDone = b.ctx.Done()
	b.deadline, _ = b.ctx.Deadline()
	if n > r.cfg.MaxParallel {
		b.slots = make(chan struct{}, r.cfg.MaxParallel)
	}
	if p.StopOnError {
		b.stop = make(chan struct{})
	}
	prompt, _ := r.inv.(PromptInvoker)
	var memo promptMemo
	for i := range b.steps {
		st := &b.steps[i]
		if len(p.Steps[i].Dependents) > 0 { // only a dependent waits for a step to end
			st.done = make(chan struct{})
		}
		st.prompt = prompt != nil && b.isPrompt(prompt, &memo, i)
	}

	for i := range n {
		if !b.steps[i].prompt {
			b.g.Go(func() error {
				b.run(i)
				return nil
			})
		}
	}
	for i := range n { // the prompt steps, once every other step's goroutine is started
		if b.steps[i].prompt {
			b.run(i)
		}
	}
	_ = b.g.Wait()
	b.stopTimer()
	if p.Atomic {
		b.rollback(ctx)
	}

	if rec := r.cfg.Recorder; rec != nil {
		ok := 0
		for i := range b.results {
			if !b.results[i].Failed {
				ok++
			}
		}
		outcome := "partial"
		switch ok {
		case n:
			outcome = "ok"
		case 0:
			outcome = "failed"
		}
		r.guard("", func() {
			rec.BatchDone(BatchEvent{Steps: n, Depth: p.Depth(), Outcome: outcome, Duration: time.Since(b.start)})
		})
	}
	return b.results
}

// promptMemo is the last call a batch asked PromptInvoker about: a batch often calls one method many times in a row.
type promptMemo struct {
	method, path  string
	asked, prompt bool
}

// isPrompt reports whether step i runs on Run's goroutine: its path is static, inv says its call is prompt, and
// each of its dependencies is a prompt step before it (so it has ended when step i's turn comes).
func (b *batch) isPrompt(inv PromptInvoker, memo *promptMemo, i int) bool {
	step := &b.plan.Steps[i]
	if !step.Path.Static() {
		return false
	}
	for _, d := range step.Deps {
		if d >= i || !b.steps[d].prompt {
			return false
		}
	}
	path, _ := step.Path.Resolve(nil, 0) // static: returns the checked path without looking at responses
	if !memo.asked || memo.path != path || memo.method != step.Method {
		*memo = promptMemo{method: step.Method, path: path, asked: true, prompt: inv.Prompt(step.Method, path)}
	}
	return memo.prompt
}

// response is the body of a step that ended successfully, for b.resps: a template asks only for its step's
// dependencies (or, in a rollback, the step itself), which have ended before it is resolved.
func (b *batch) response(step int) []byte { return b.results[step].Body }

// reserve draws on the batch's budget, when it has one.
func (b *batch) reserve(n int64) error {
	if b.opt.Budget == nil {
		return nil
	}
	return b.opt.Budget.Reserve(n)
}

func (b *batch) releaseBytes(n int64) {
	if b.opt.Budget != nil {
		b.opt.Budget.Release(n)
	}
}

// run runs step i: on a goroutine of its own, or on Run's for a prompt step.
func (b *batch) run(i int) {
	growStack()
	res := &b.results[i]
	res.Index = i
	res.Key = b.plan.Steps[i].Key
	defer func() {
		if v := recover(); v != nil {
			// A panic outside Invoke (which has its own recover): a template, the Recorder, the runner itself.
			b.r.logPanic(res.Key, v)
			b.setPanic(res)
		}
		b.finish(i)
	}()
	b.exec(i, res)
}

// exec runs step i up to its final result, except for the bookkeeping of finish.
func (b *batch) exec(i int, res *Result) {
	step := &b.plan.Steps[i]

	for _, d := range step.Deps {
		select { // a dependency often ended already: skip the two-channel select and its locks
		case <-b.steps[d].done:
			continue
		default:
		}
		select {
		case <-b.steps[d].done:
		case <-b.ctxDone:
			b.notStarted(res)
			return
		}
	}
	if len(step.Deps) > 0 { // a step without dependencies is ready at the start: Queued 0, one clock read fewer
		res.Queued = time.Since(b.start)
	}
	if b.ctx.Err() != nil {
		b.notStarted(res)
		return
	}
	if b.depFailed(step, res) {
		return
	}
	if b.stopped.Load() {
		b.notExecuted(res)
		return
	}

	call, ok := b.resolve(step, res)
	if !ok {
		return
	}
	defer b.releaseBytes(int64(len(call.Body))) // what resolve reserved for it: garbage once the call returned

	if !b.acquire(res) {
		return
	}
	defer b.release()

	if rec := b.r.cfg.Recorder; rec != nil {
		rec.StepStarted(step.Name)
	}
	sctx, t0 := b.startStep(i)
	defer b.releaseStep(i)
	res.Executed = true
	res.Started = t0.Sub(b.start)
	resp, err, panicked := b.invoke(sctx, call)
	res.Duration = time.Since(t0)
	b.endStep(i)

	// Classify while the slot is still held, so that a step waiting for this slot sees the stop flag.
	switch {
	case panicked:
		b.setPanic(res)
	case err != nil || sctx.Err() != nil:
		b.invokeFailed(i, sctx, err, res)
	default:
		res.Status = resp.Status
		res.Body = resp.Body
		if len(res.Body) == 0 {
			res.Body = nullJSON
		}
		if resp.Status >= 400 || jsonscan.BusinessFailure(resp.Body) {
			res.Outcome = OutcomeError
			res.Failed = true
		} else {
			res.Outcome = OutcomeOK
		}
	}
	if res.Outcome != OutcomeOK {
		b.failed()
	}
}

var nullJSON = []byte("null")

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

// depFailed reports whether a dependency of step ended unsuccessfully and, if so, fills res. A real failure wins
// over a dependency that was merely not executed (stop_on_error), which makes this step not executed too.
func (b *batch) depFailed(step *planner.Step, res *Result) bool {
	notExec := false
	for _, d := range step.Deps {
		dr := &b.results[d]
		if dr.Outcome == OutcomeOK {
			continue
		}
		if dr.Code == errcode.NotExecuted {
			notExec = true
			continue
		}
		b.decided(res, errcode.DependencyFailed, OutcomeSkipped,
			errcode.Body(errcode.DependencyFailed, "dependency "+dr.Key+" failed"))
		return true
	}
	if notExec {
		b.notExecuted(res)
		return true
	}
	return false
}

// resolve builds step's call from its templates and the responses of its dependencies.
func (b *batch) resolve(step *planner.Step, res *Result) (Call, bool) {
	call := Call{Key: step.Key, Method: step.Method, Name: step.Name}
	if err := b.fill(b.ctx, &call, step.Path, step.Headers, step.Body); err != nil {
		return call, b.resolveFailed(b.ctx, err, res)
	}
	return call, true
}

// fill resolves a call's path, headers and body (a step's, or its rollback's) against the responses so far,
// within the call caps, and reserves the body's bytes from the batch's budget. It checks the batch's context
// (the batch's, or the rollbacks') before each part: resolving reads responses, which can take time, and is work like any other.
func (b *batch) fill(ctx context.Context, call *Call, path *planner.PathTemplate, headers []planner.Header, body *planner.JSONTemplate) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	call.Budget = b.opt.Budget
	if call.Path, err = path.Resolve(b.resps, b.r.cfg.MaxCallPath); err != nil {
		return err
	}
	call.Header = b.opt.Header
	if len(headers) > 0 {
		// Clone only when the step adds headers of its own; the batch's map is shared read-only otherwise.
		h := make(http.Header, len(b.opt.Header)+len(headers))
		for k, v := range b.opt.Header {
			h[k] = v
		}
		vals := make([]string, len(headers))
		for j := range headers {
			sh := &headers[j]
			if vals[j], err = sh.Resolve(b.resps, b.r.cfg.MaxCallHeader); err != nil {
				return err
			}
			if j > 0 && repeated(headers[:j], sh.Name) {
				h[sh.Name] = append(h[sh.Name], vals[j])
			} else {
				h[sh.Name] = vals[j : j+1 : j+1]
			}
		}
		call.Header = h
	}
	if body != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		if call.Body, err = body.Resolve(b.resps, b.r.cfg.MaxCallBody, b.reserve); err != nil {
			return err
		}
	}
	return nil
}

func repeated(hs []planner.Header, name string) bool {
	for i := range hs {
		if hs[i].Name == name {
			return true
		}
	}
	return false
}

// resolveFailed fills res for a call that could not be built: a placeholder that could not be resolved (424), a
// part over its cap (413), a budget that could not hold the body or an index (507), or the batch's context ending
// meanwhile. It always returns false.
func (b *batch) resolveFailed(ctx context.Context, err error, res *Result) bool {
	var tl *planner.TooLargeError
	var be *budget.Error
	switch {
	case ctx.Err() != nil:
		b.notStarted(res)
		return false
	case errors.As(err, &tl):
		b.decided(res, errcode.CallTooLarge, OutcomeTooLarge, errcode.Body(errcode.CallTooLarge,
			"not sent: the call's "+tl.Error()+" (-max-call-"+callFlag(tl.Part)+")"))
		return false
	case errors.As(err, &be):
		b.overBudget(res, be)
		return false
	}
	code, desc := errcode.Unresolvable, "placeholder could not be resolved"
	var re *planner.ResolveError
	if errors.As(err, &re) {
		if re.Code != 0 {
			code = re.Code
		}
		switch {
		case re.Detail == "":
			desc = re.Placeholder + ": could not be resolved"
		case re.Placeholder != "" && !strings.Contains(re.Detail, re.Placeholder):
			desc = re.Placeholder + ": " + re.Detail
		default:
			desc = re.Detail
		}
	}
	b.decided(res, code, OutcomeSkipped, errcode.Body(code, desc))
	return false
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
		case <-b.ctxDone:
			b.notStarted(res)
			return false
		}
	}
	if lim := b.r.cfg.Limit; lim != nil {
		if lim.Acquire(b.ctx, 1) != nil {
			b.releaseSlot()
			b.notStarted(res)
			return false
		}
	}
	if b.stopped.Load() {
		b.release()
		b.notExecuted(res)
		return false
	}
	return true
}

func (b *batch) release() {
	if lim := b.r.cfg.Limit; lim != nil {
		lim.Release(1)
	}
	b.releaseSlot()
}

func (b *batch) releaseSlot() {
	if b.slots != nil {
		<-b.slots
	}
}

// failed records that a step failed: with stop_on_error no further step starts.
func (b *batch) failed() {
	if b.stop != nil && b.stopped.CompareAndSwap(false, true) {
		close(b.stop)
	}
}

// callFlag names the flag of a call cap by the part it caps.
func callFlag(part string) string {
	switch {
	case part == "path":
		return "path"
	case part == "body":
		return "body"
	}
	return "header"
}

// overBudget fills res for a step whose call or response a budget could not hold.
func (b *batch) overBudget(res *Result, be *budget.Error) {
	b.decided(res, errcode.OverBudget, OutcomeOverBudget, errcode.Body(errcode.OverBudget, "step failed: "+be.Error()))
}

// invokeFailed classifies an invocation that returned an error or ended with its context done.
func (b *batch) invokeFailed(i int, sctx context.Context, err error, res *Result) {
	var be *budget.Error
	if errors.As(err, &be) {
		res.Executed = false // the call may have been sent, but its response was not kept
		b.overBudget(res, be)
		return
	}
	if sctx.Err() != nil {
		cause := context.Cause(sctx)
		var ste *StepTimeoutError
		var bte *BatchTimeoutError
		switch {
		case errors.As(cause, &ste) && ste == &b.steps[i].timeout:
			b.decided(res, errcode.StepTimeout, OutcomeTimeout, b.r.bodyStepTimeout)
		case errors.As(cause, &bte):
			b.decided(res, errcode.BatchTimeout, OutcomeTimeout, b.r.bodyBatchTimeout)
		default:
			b.decided(res, errcode.Cancelled, OutcomeSkipped, b.r.bodyCancelled)
		}
		return
	}
	var ie *InvokeError
	if !errors.As(err, &ie) {
		res.UpstreamError = "other"
		b.decided(res, errcode.UpstreamUnreachable, OutcomeError, b.r.bodyUnreachable)
		return
	}
	res.UpstreamError = ie.Kind
	switch ie.Kind {
	case "reset":
		b.decided(res, errcode.UpstreamReset, OutcomeError, b.r.bodyReset)
	case "protocol":
		b.decided(res, errcode.UpstreamReset, OutcomeError, b.r.bodyProtocol)
	case "too_large":
		b.decided(res, errcode.UpstreamTooLarge, OutcomeError, b.r.bodyTooLarge)
	default: // "connect" and kinds this runner does not know
		b.decided(res, errcode.UpstreamUnreachable, OutcomeError, b.r.bodyUnreachable)
	}
}

// notStarted fills res for a step that did not start because the batch context ended.
func (b *batch) notStarted(res *Result) {
	var bte *BatchTimeoutError
	if errors.As(context.Cause(b.ctx), &bte) {
		b.decided(res, errcode.BatchTimeout, OutcomeSkipped, b.r.bodyBatchTimeout)
		return
	}
	b.decided(res, errcode.Cancelled, OutcomeSkipped, b.r.bodyCancelled)
}

func (b *batch) notExecuted(res *Result) {
	b.decided(res, errcode.NotExecuted, OutcomeSkipped, b.r.bodyNotExecuted)
}

func (b *batch) setPanic(res *Result) {
	b.decided(res, errcode.StepPanic, OutcomeError, b.r.bodyPanic)
}

// decided fills res with an outcome batchd decided.
func (b *batch) decided(res *Result, code errcode.Code, o Outcome, body []byte) {
	res.Status = code.Status()
	res.Code = code
	res.Outcome = o
	res.Body = body
	res.Failed = o != OutcomeOK
}

// finish reports step i and releases its dependents. It runs whatever happened to the step.
func (b *batch) finish(i int) {
	if done := b.steps[i].done; done != nil {
		defer close(done)
	}
	res := &b.results[i]
	if res.Failed {
		b.failed()
	}
	if rec := b.r.cfg.Recorder; rec != nil {
		ev := StepEvent{Name: b.plan.Steps[i].Name, Outcome: res.Outcome, UpstreamError: res.UpstreamError}
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

// growStack grows a new step goroutine's stack in one go, while it is shallow. A goroutine starts with a 2 KiB
// stack that a step outgrows (the select on its dependencies already does); growing it there copies and adjusts
// every frame below, about a fifth of BenchmarkRun's CPU time. Growing it here, four frames deep, cut the CPU time
// of a 50-step batch by 20–25% (measured with -cpu 1: chain 0.93s→0.70s, independent 0.61s→0.51s for 5000 runs).
// The pad makes an 8 KiB stack. Re-measured in instructions/op (scripts/bench-ir.sh, with GC on and off): a 1 KiB
// pad (4 KiB stack) saves 1–2% in BenchmarkRun and transport's BenchmarkServeBatchDemo10 (the in-process direct
// path is shallow) but costs 14–22% in BenchmarkServeBatchProxy10, whose HTTP path then grows the stack again,
// deep; no pad costs 10–25% everywhere, a 7 KiB pad (16 KiB stack) 2–4%.
//
//go:noinline
func growStack() {
	var pad [stackPad]byte
	keep(&pad)
}

const stackPad = 3 << 10

//go:noinline
func keep(*[stackPad]byte) {}

// hasDeps reports whether a step of p waits for another.
func hasDeps(p *planner.Plan) bool {
	for i := range p.Steps {
		if len(p.Steps[i].Deps) > 0 {
			return true
		}
	}
	return false
}

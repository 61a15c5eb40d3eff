package runner

import (
	"context"
	"net/http"
	"time"
)

// Call is one step's request, fully resolved.
type Call struct {
	Key    string
	Method string // HTTP method
	Name   string // the step's method path without query, for logs and metrics (planner.Step.Name)
	// Path is the resolved method path: no leading "/", query kept, already checked by planner.CheckPath.
	Path string
	// Header holds the batch-level pass-through headers overlaid with the step's own; an Invoker must not modify it.
	Header http.Header
	Body   []byte // JSON; nil when the step has no payload
	// Rollback marks the call that undoes step Key in an atomic batch (planner.Step.Rollback); Name and Path are
	// then the rollback's.
	Rollback bool
	// Budget is the batch's byte budget (Options.Budget), nil for none. An Invoker reserves the bytes of the
	// response it reads before it allocates them, and fails the call with the reservation's error when the budget
	// cannot hold them (the step then fails with 507).
	Budget Budget
}

// Budget is the byte budget that a batch's steps draw on (CONTRACT.md §10): the responses kept, the calls built,
// the index of each response read by a placeholder. *budget.Account implements it; its errors are *budget.Error.
type Budget interface {
	Reserve(n int64) error
	Release(n int64)
}

// Response is what an Invoker got back.
type Response struct {
	Status int
	// Body is a JSON value: the upstream's JSON as is, any other body as a JSON string, an empty body as null.
	Body []byte
}

// Invoker sends one call. An error means no usable response: the runner classifies it (a context cause of its own
// is a timeout; an *InvokeError carries its kind; anything else is "unreachable").
type Invoker interface {
	Invoke(ctx context.Context, call Call) (Response, error)
}

// PromptInvoker is an Invoker that can tell, before a batch runs, which calls it answers promptly: in process,
// with no I/O and no waiting beyond short locks (the embedded demo API's methods but Demo/Sleep). The runner runs
// a prompt step on the goroutine that runs the batch instead of starting a goroutine for it, which for such calls
// costs more than the call; see the package comment for when.
type PromptInvoker interface {
	Invoker
	// Prompt reports whether the call of method on path returns promptly. path is a static step path as in
	// Call.Path (no placeholder, no leading "/", query kept, already checked). It is asked once per step and
	// must be safe for concurrent use.
	Prompt(method, path string) bool
}

// InvokeError is a failed call, with a bounded Kind for metrics: "connect", "reset", "too_large", "protocol".
type InvokeError struct {
	Kind string
	Err  error
}

func (e *InvokeError) Error() string { return "upstream " + e.Kind + ": " + e.Err.Error() }
func (e *InvokeError) Unwrap() error { return e.Err }

// Outcome is a step's outcome as metrics see it.
type Outcome string

const (
	OutcomeOK      Outcome = "ok"
	OutcomeError   Outcome = "error"   // executed and failed: status >= 400, ok:false, unreachable, panic
	OutcomeTimeout Outcome = "timeout" // cancelled at -step-timeout or -batch-timeout
	OutcomeSkipped Outcome = "skipped" // never executed: 424, 412, cancelled before start
	// OutcomeTooLarge: never sent, the call being over a cap once resolved (413).
	OutcomeTooLarge Outcome = "too_large"
	// OutcomeOverBudget: the batch's or the process's byte budget could not hold the call or its response (507).
	OutcomeOverBudget Outcome = "over_budget"
)

// Outcomes lists every Outcome, a bounded label set for metrics.
func Outcomes() []Outcome {
	return []Outcome{OutcomeOK, OutcomeError, OutcomeTimeout, OutcomeSkipped, OutcomeTooLarge, OutcomeOverBudget}
}

// StepEvent is reported once per step when it ends, executed or not.
type StepEvent struct {
	Name     string // planner.Step.Name
	Outcome  Outcome
	Duration time.Duration // zero for a step never executed
	// UpstreamError is the InvokeError kind ("connect", "reset", "too_large", …) when the call failed that way.
	UpstreamError string
}

// BatchEvent is reported once per batch when its last step ended.
type BatchEvent struct {
	Steps    int
	Depth    int    // planner.Plan.Depth
	Outcome  string // "ok" (every step ok), "partial" (some failed), "failed" (none ok)
	Duration time.Duration
}

// Recorder receives the runner's events; metrics implement it. Calls may come from many goroutines at once.
type Recorder interface {
	StepStarted(name string)
	StepDone(StepEvent)
	BatchDone(BatchEvent)
}

// RollbackRecorder is optionally implemented by a Recorder to count the rollbacks of atomic batches: RollbackDone
// is called once per rollback attempted, with its Rollback.Name and whether it undid its step. A rollback not
// attempted because the rollback of a step depending on it failed counts as not ok.
type RollbackRecorder interface {
	RollbackDone(name string, ok bool)
}

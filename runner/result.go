package runner

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/jsonscan"
	"github.com/batchd/batchd/planner"
)

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
	Failed        bool          // the step counts as failed (Outcome.Failed)
	Queued        time.Duration // offset from the batch start when every dependency had ended (0 if never)
	Started       time.Duration // offset from the batch start when Invoke was called (0 if never)
	Duration      time.Duration // time inside Invoke (a fan-out step: from its first call's start to its last's end)
	// Header holds the response headers the call kept (planner.Step.Capture); nil when none.
	Header http.Header
	// Items are a fan-out step's calls, one per element of its list, in element order (planner.Step.ForEach); its
	// Body is then the array of their bodies, its Status 200 when every call succeeded, else the first failing
	// call's. Nil for any other step.
	Items []Item
	// Rollback is set in an atomic batch that did not commit, for a step that succeeded and has a rollback: what
	// its rollback did. The step's own Status and Body are kept.
	Rollback *RollbackResult
}

// Item is one call of a fan-out step.
type Item struct {
	Status  int
	Body    []byte // a JSON value, as Result.Body
	Header  http.Header
	Outcome Outcome
	Code    errcode.Code
	Failed  bool
	Element []byte // the list's element the call was for
}

// RolledBack reports whether the step was undone: its rollback ran and succeeded.
func (r Result) RolledBack() bool { return r.Rollback != nil && r.Rollback.OK }

// RollbackResult is what a step's rollback did (README "Atomic batches").
type RollbackResult struct {
	// OK: the rollback ran and succeeded (status < 400 and not "ok": false): the step was undone.
	OK bool
	// Status is the rollback call's HTTP status, or the status batchd decided: 424 not attempted (a rollback it had
	// to wait for failed, or a placeholder could not be resolved), 499, 500, 502, 504 as for a step.
	Status int
	Code   errcode.Code // non-zero when batchd decided the outcome
	// Body is the rollback's response when it failed (the upstream's body, or an ErrorResult when batchd decided);
	// nil when it succeeded.
	Body     []byte
	Executed bool          // Invoke was called
	Duration time.Duration // time inside Invoke
}

// Outcome is a step's outcome as metrics and traces see it.
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
	// OutcomeConditionFalse: not run, its "when" being false or a step it reads not run (204): not a failure.
	OutcomeConditionFalse Outcome = "condition_false"
)

// Failed reports whether a step of outcome o counts as failed: every outcome but ok and condition_false.
func (o Outcome) Failed() bool { return o != OutcomeOK && o != OutcomeConditionFalse }

// Outcomes lists every Outcome, a bounded label set for metrics.
func Outcomes() []Outcome {
	return []Outcome{OutcomeOK, OutcomeError, OutcomeTimeout, OutcomeSkipped, OutcomeTooLarge, OutcomeOverBudget,
		OutcomeConditionFalse}
}

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

// CallOutcome classifies what an Invoker returned for call c made with ctx, as the runner does: ok (a status in
// c.OKStatus, or under 400 with a body that is not a JSON object whose "ok" is false); error (status >= 400,
// "ok": false, or no usable response); timeout (ctx ended with a step or batch timeout as its cause); skipped (ctx
// ended for another reason: the client left, the server shut down); over_budget (a budget would not hold the
// response). Tracing reads it too.
func CallOutcome(ctx context.Context, c Call, resp Response, err error) Outcome {
	var be *budget.Error
	switch {
	case errors.As(err, &be):
		return OutcomeOverBudget
	case ctx.Err() != nil:
		var ste *StepTimeoutError
		var bte *BatchTimeoutError
		if cause := context.Cause(ctx); errors.As(cause, &ste) || errors.As(cause, &bte) {
			return OutcomeTimeout
		}
		return OutcomeSkipped
	case err != nil, Failure(resp.Status, resp.Body, c.OKStatus):
		return OutcomeError
	}
	return OutcomeOK
}

// Failure reports whether a response is a failed step's (README "What runs when", "REST APIs"): a status not in
// okStatus that is 400 or more, or whose body is a JSON object with "ok": false (REGOS, the API style batchd was first
// written for, reports business errors as HTTP 200 with "ok": false).
func Failure(status int, body []byte, okStatus []int) bool {
	if slices.Contains(okStatus, status) {
		return false
	}
	return status >= 400 || jsonscan.BusinessFailure(body)
}

// CountFailed is the number of results that failed.
func CountFailed(results []Result) int {
	n := 0
	for i := range results {
		if results[i].Failed {
			n++
		}
	}
	return n
}

// CriticalPath is the longest chain of executed durations through p's dependencies: for each step its Duration
// plus the longest chain among its dependencies, steps never executed counting zero. Steps are taken level by
// level (Plan.Levels), so that a step's dependencies are done before it.
func CriticalPath(p *planner.Plan, results []Result) time.Duration {
	n := min(len(p.Steps), len(results))
	levels := p.Levels()
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return levels[a] - levels[b] })
	chain := make([]time.Duration, n)
	var longest time.Duration
	for _, i := range order {
		for _, d := range p.Steps[i].Deps {
			chain[i] = max(chain[i], chain[d])
		}
		if results[i].Executed {
			chain[i] += results[i].Duration
		}
		longest = max(longest, chain[i])
	}
	return longest
}

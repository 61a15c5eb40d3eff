package runner

import (
	"context"
	"net/http"
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
	// Capture are the response headers to keep (canonical names; planner.Step.Capture): an Invoker returns their
	// first values in Response.Header, never Set-Cookie.
	Capture []string
	// OKStatus are statuses that count as success besides those under 400 (planner.Step.OKStatus).
	OKStatus []int
	// ForEach marks a call of a fan-out step (planner.Step.ForEach), and Index is the position of the element it is
	// for; a step's only call has neither.
	ForEach bool
	Index   int
}

// Response is what an Invoker got back.
type Response struct {
	Status int
	// Body is a JSON value: the upstream's JSON as is, any other body as a JSON string, an empty body as null.
	Body []byte
	// Header holds the response headers the call asked to keep (Call.Capture); nil when none.
	Header http.Header
}

// Invoker sends one call. An error means no usable response: the runner classifies it (a context cause of its own
// is a timeout; an *InvokeError carries its kind; a budget's refusal is 507; anything else is "unreachable").
type Invoker interface {
	Invoke(ctx context.Context, call Call) (Response, error)
}

// InvokeError is a failed call, with a bounded Kind for metrics: "connect", "reset", "too_large", "protocol".
// Host and Cause, when the Invoker knows them, are told to the client: the upstream's host (the operator's
// configuration, never a URL a client sent) and a short cause from a fixed vocabulary ("connection refused", "no
// such host", …), never the error's own text, which may hold addresses.
type InvokeError struct {
	Kind  string
	Err   error
	Host  string
	Cause string
}

func (e *InvokeError) Error() string { return "upstream " + e.Kind + ": " + e.Err.Error() }
func (e *InvokeError) Unwrap() error { return e.Err }

// Budget is the byte budget that a batch's steps draw on (README "Limits and guarantees"): the responses kept, the
// calls built, the index of each response read by a placeholder. *budget.Account implements it; its errors are
// *budget.Error.
type Budget interface {
	Reserve(n int64) error
	Release(n int64)
}

// UpstreamErrorKinds lists the kinds an InvokeError may carry (Result.UpstreamError), and "other" for a call that
// failed without one: a bounded label set for metrics.
func UpstreamErrorKinds() []string {
	return []string{"connect", "reset", "too_large", "protocol", "other"}
}

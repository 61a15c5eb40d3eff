// Package errcode is the one table of batchd's ErrorResult codes.
//
// Every outcome that batchd itself decides (a rejected batch, a step that timed out, a dependency that failed, …) is
// answered in the REGOS ErrorResult shape
//
//	{"ok": false, "result": {"error": <code>, "description": "…"}}
//
// with one stable numeric code per condition. A code is the HTTP status times ten plus a small ordinal, so
// Code.Status recovers the status without a second table. Codes are part of the wire contract: never renumber one.
package errcode

import (
	"strconv"

	"github.com/batchd/batchd/internal/jsonscan"
)

// Code is a stable ErrorResult code.
type Code int

// Step-level codes: the step's "response" when batchd decided its outcome.
const (
	DependencyFailed    Code = 4240 // a step this one needs failed or was not executed
	Unresolvable        Code = 4241 // a placeholder could not be resolved (missing field, index out of range)
	NotEmbeddable       Code = 4242 // a placeholder inside a longer string resolved to an object or array
	ResolvedPathRefused Code = 4243 // the path after substitution is not a safe method path
	NotExecuted         Code = 4120 // stop_on_error or atomic: the batch stopped before this step started
	StepTimeout         Code = 5040 // the step ran past -step-timeout
	BatchTimeout        Code = 5041 // the batch ran past -batch-timeout before this step finished
	Cancelled           Code = 4990 // the client went away or the server shut down before this step finished
	UpstreamUnreachable Code = 5020 // connection refused, DNS, TLS: the call could not be sent
	UpstreamReset       Code = 5021 // the connection broke or the upstream spoke broken HTTP
	UpstreamTooLarge    Code = 5022 // the upstream's response exceeded the size cap
	StepPanic           Code = 5001 // an invoker panicked; the stack is logged, never returned
	CallTooLarge        Code = 4131 // the call's path, a header value or its body is over its cap once resolved; not sent
	OverBudget          Code = 5070 // the batch's byte budget or the process memory budget cannot hold the call or its response
	TooManyCalls        Code = 4132 // a for_each list would take the batch over -max-calls; none of its calls was sent
	// ConditionFalse: the step's "when" was false, or it reads a step whose "when" was; it was not run, and that is
	// not a failure.
	ConditionFalse Code = 2040
)

// Batch-level codes: the whole request's answer when it was not accepted.
const (
	InvalidBatch     Code = 4000 // the plan was refused; result.details lists every problem
	Unauthorized     Code = 4010 // reserved for authentication in front of the batch endpoint
	NotFound         Code = 4040 // unknown route, or an unknown demo API method
	MethodNotAllowed Code = 4050
	IdempotencyBusy  Code = 4090 // the same Idempotency-Key is still running
	// IdempotencyNotStored: the batch of this Idempotency-Key ran, but its answer was too large to store; it is
	// never run again.
	IdempotencyNotStored Code = 4091
	BodyTooLarge         Code = 4130 // the request body exceeded -max-body
	UnsupportedMedia     Code = 4150 // Content-Type is not JSON
	IdempotencyReused    Code = 4220 // the same Idempotency-Key was used with another body
	RateLimited          Code = 4290
	Internal             Code = 5000
	Unavailable          Code = 5030 // draining on shutdown
	Overloaded           Code = 5031 // the process memory budget cannot admit another batch now; retry after Retry-After
)

// DemoValidation is the REGOS code for a validation error in a business method (used by the demo API).
const DemoValidation Code = 1008

// Status is the HTTP status a code stands for.
func (c Code) Status() int {
	if c == DemoValidation {
		return 200
	}
	return int(c) / 10
}

// Body returns the ErrorResult JSON for code and description.
func Body(c Code, description string) []byte {
	return AppendBody(make([]byte, 0, 64+len(description)), c, description)
}

// AppendBody appends the ErrorResult JSON for code and description to dst.
func AppendBody(dst []byte, c Code, description string) []byte {
	dst = append(dst, `{"ok":false,"result":{"error":`...)
	dst = strconv.AppendInt(dst, int64(c), 10)
	dst = append(dst, `,"description":`...)
	dst = jsonscan.AppendString(dst, description)
	return append(dst, "}}"...)
}

// Detail is one problem of a refused batch, as listed in result.details.
type Detail struct {
	Key     string // the step's key, "#i" for the step at index i, or "" for the batch as a whole
	Reason  string // a bounded reason, e.g. "invalid_path", "rate_limited"
	Problem string // human-readable
}

// BatchBody returns the ErrorResult of a refused batch:
//
//	{"ok":false,"result":{"error":<code>,"description":"…","details":[{"key":…,"reason":…,"problem":…},…]}}
//
// details is never empty on the wire: with no details given, one batch-level detail repeats reason and description.
func BatchBody(c Code, reason, description string, details []Detail) []byte {
	if len(details) == 0 {
		details = []Detail{{Reason: reason, Problem: description}}
	}
	dst := make([]byte, 0, 96+len(description)+64*len(details))
	dst = append(dst, `{"ok":false,"result":{"error":`...)
	dst = strconv.AppendInt(dst, int64(c), 10)
	dst = append(dst, `,"description":`...)
	dst = jsonscan.AppendString(dst, description)
	dst = append(dst, `,"details":[`...)
	for i, d := range details {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"key":`...)
		dst = jsonscan.AppendString(dst, d.Key)
		dst = append(dst, `,"reason":`...)
		dst = jsonscan.AppendString(dst, d.Reason)
		dst = append(dst, `,"problem":`...)
		dst = jsonscan.AppendString(dst, d.Problem)
		dst = append(dst, '}')
	}
	return append(dst, "]}}"...)
}

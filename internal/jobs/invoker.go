package jobs

import (
	"context"
	"strconv"

	"github.com/batchd/batchd/runner"
)

// HeaderIdempotencyKey is the header every call of a job's step carries.
const HeaderIdempotencyKey = "Idempotency-Key"

// batchKey is the context key of the job batch a call belongs to.
type batchKey struct{}

type batchRef struct {
	job  string
	line int64
}

// WithBatch returns ctx marked as running line of job: the calls made under it carry the job's Idempotency-Key
// (Invoker).
func WithBatch(ctx context.Context, job string, line int64) context.Context {
	return context.WithValue(ctx, batchKey{}, batchRef{job: job, line: line})
}

// Invoker wraps next so that every call made for a job's batch (a context from WithBatch) carries
// Idempotency-Key: jobCallKey(…) unless the step sets its own; other calls pass through untouched. The call's header
// is copied before it is changed, never modified.
func Invoker(next runner.Invoker) runner.Invoker { return keyInvoker{next} }

type keyInvoker struct{ next runner.Invoker }

func (k keyInvoker) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	if ref, ok := ctx.Value(batchKey{}).(batchRef); ok && len(c.Header[HeaderIdempotencyKey]) == 0 {
		h := make(map[string][]string, len(c.Header)+1)
		for name, v := range c.Header {
			h[name] = v
		}
		h[HeaderIdempotencyKey] = []string{jobCallKey(ref.job, ref.line, c)}
		c.Header = h
	}
	return k.next.Invoke(ctx, c)
}

// jobCallKey is the Idempotency-Key of one call of a job: "<job id>:<line>:<step key>", the same every time the
// line runs, so that an upstream that honours keys applies a re-run once. Each call of a fan-out step (for_each) is
// a call of its own, ":<element index>" after it. A rollback's call (an atomic batch's undo) is another call than
// its step's and gets ":rollback" after it: replaying the step's key would make the upstream answer the undo with
// the step's stored answer.
func jobCallKey(job string, line int64, c runner.Call) string {
	k := job + ":" + strconv.FormatInt(line, 10) + ":" + c.Key
	if c.ForEach {
		k += ":" + strconv.Itoa(c.Index)
	}
	if c.Rollback {
		k += ":rollback"
	}
	return k
}

package runner

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/planner"
)

// rollback undoes an atomic batch that did not commit (some step failed): the rollback of every step that
// succeeded runs, in reverse dependency order: a step's rollback starts once the rollbacks of the steps that depend
// on it have ended, so independent rollbacks run in parallel, under the same concurrency limits as steps.
//
// A step whose dependent's rollback failed is not rolled back (424): undoing it while what was built on it stands
// could leave worse than a half-done batch, and the failure is reported for a human to look at. A step that
// succeeded without a rollback is taken to have nothing to undo.
//
// Rollbacks must run whatever ended the batch, the client going away included: they run under ctx's values but
// not its cancellation, each bounded by Config.StepTimeout and all of them together by Config.BatchTimeout.
func (b *batch) rollback(ctx context.Context) {
	failed := false
	for i := range b.results {
		failed = failed || b.results[i].Failed
	}
	if !failed {
		return // committed
	}
	ctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), b.r.cfg.BatchTimeout,
		&BatchTimeoutError{Timeout: b.r.cfg.BatchTimeout})
	defer cancel()
	n := len(b.results)
	rp := &rollbackPhase{ctx: ctx, out: make([]RollbackResult, n), done: make([]chan struct{}, n)}
	for i := range rp.done {
		rp.done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i := range n {
		if !b.results[i].didSomething() {
			close(rp.done[i]) // nothing to undo, nothing to wait for
			continue
		}
		wg.Go(func() { b.rollbackStep(rp, i) })
	}
	wg.Wait()
}

// didSomething reports whether a step has something to undo: it succeeded, or some call of a fan-out step did.
func (r *Result) didSomething() bool {
	if r.Outcome == OutcomeOK {
		return true
	}
	for j := range r.Items {
		if r.Items[j].Outcome == OutcomeOK {
			return true
		}
	}
	return false
}

// rollbackPhase is the state of one batch's rollbacks. Goroutine i writes only out[i] and results[i].Rollback,
// and closes done[i]; it reads a dependent's Rollback only after that dependent's done is closed.
type rollbackPhase struct {
	ctx  context.Context
	out  []RollbackResult
	done []chan struct{}
}

// rollbackStep runs step i's rollback once the rollbacks of its dependents have ended.
func (b *batch) rollbackStep(rp *rollbackPhase, i int) {
	defer close(rp.done[i])
	step := &b.plan.Steps[i]
	res := &b.results[i]
	for _, d := range step.Dependents {
		<-rp.done[d] // each ends: rollbacks are bounded by their own timeouts
	}
	rb := step.Rollback
	if rb == nil {
		return
	}
	out := &rp.out[i]
	res.Rollback = out
	defer func() {
		if v := recover(); v != nil {
			b.r.logPanic(res.Key, v)
			*out = RollbackResult{Executed: out.Executed, Duration: out.Duration}
			out.decide(errcode.StepPanic, errcode.Body(errcode.StepPanic, "the rollback panicked; the stack is in batchd's log"))
		}
		if rec := b.r.cfg.Recorder; rec != nil {
			b.r.guard(res.Key, func() { rec.RollbackDone(rb.Name, out.OK) })
		}
		if f := b.opt.OnRollback; f != nil {
			r := *res
			b.r.guard(res.Key, func() { f(r) })
		}
	}()

	for _, d := range step.Dependents {
		if dr := b.results[d].Rollback; dr != nil && !dr.OK {
			out.decide(errcode.DependencyFailed, errcode.Body(errcode.DependencyFailed,
				"not rolled back: the rollback of "+b.results[d].Key+", which depends on this step, failed"))
			return
		}
	}
	if res.Items == nil {
		*out = b.undo(rp, step, b.resps, -1)
		return
	}
	// A fan-out step: one rollback per call that succeeded, each with ${self…} bound to that call.
	calls := make([]RollbackResult, len(res.Items))
	var wg sync.WaitGroup
	for j := range res.Items {
		it := &res.Items[j]
		if it.Outcome != OutcomeOK {
			continue
		}
		reply := planner.Reply{Status: it.Status, Body: it.Body, Header: it.Header}
		wg.Go(func() { calls[j] = b.undo(rp, step, b.resps.ForCall(i, reply, it.Element, j), j) })
	}
	wg.Wait()
	*out = RollbackResult{OK: true, Status: http.StatusOK}
	for j := range calls {
		c := &calls[j]
		if !c.Executed && c.Status == 0 {
			continue // the call did not succeed: nothing to undo
		}
		out.Executed = out.Executed || c.Executed
		out.Duration = max(out.Duration, c.Duration)
		if !c.OK && out.OK {
			*out = RollbackResult{Status: c.Status, Code: c.Code, Body: c.Body, Executed: out.Executed, Duration: out.Duration}
		}
	}
}

// undo runs one rollback call of step (of its call item of a fan-out, else -1), its placeholders read from resps.
func (b *batch) undo(rp *rollbackPhase, step *planner.Step, resps *planner.Responses, item int) (out RollbackResult) {
	rb := step.Rollback
	call := Call{Key: step.Key, Method: rb.Method, Name: rb.Name, Rollback: true, ForEach: item >= 0, Index: max(item, 0)}
	if err := b.fill(rp.ctx, &call, resps, rb.Path, rb.Headers, rb.Body, rb.Text); err != nil {
		var tmp Result
		b.buildFailed(rp.ctx, err, &tmp)
		out.decide(tmp.Code, tmp.Body)
		return out
	}
	defer b.release(int64(len(call.Body)))
	if !b.acquireRollback(rp.ctx) {
		out.decide(errcode.BatchTimeout, errcode.Body(errcode.BatchTimeout, "batch timed out after "+b.r.cfg.BatchTimeout.String()))
		return out
	}
	defer b.releaseSlot()

	sctx, cancel := context.WithTimeoutCause(rp.ctx, b.r.cfg.StepTimeout,
		&StepTimeoutError{Key: step.Key, Timeout: b.r.cfg.StepTimeout})
	defer cancel()
	t0 := time.Now()
	out.Executed = true
	resp, err, panicked := b.invoke(sctx, call)
	out.Duration = time.Since(t0)
	var tmp Result
	if panicked {
		b.decided(&tmp, errcode.StepPanic, OutcomeError, "the rollback panicked; the stack is in batchd's log")
	} else {
		b.classify(sctx, call, resp, err, &tmp)
	}
	if out.OK = tmp.Outcome == OutcomeOK; out.OK {
		out.Status = tmp.Status
		return out
	}
	out.Status, out.Code, out.Body = tmp.Status, tmp.Code, tmp.Body
	return out
}

// acquireRollback takes the batch slot and the process-wide slot for a rollback; false when ctx ended first.
func (b *batch) acquireRollback(ctx context.Context) bool {
	if b.slots != nil {
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			return false
		}
	}
	if lim := b.r.cfg.Limit; lim != nil {
		if lim.Acquire(ctx, 1) != nil {
			b.releaseBatchSlot()
			return false
		}
	}
	return true
}

// decide records an outcome batchd decided for a rollback.
func (o *RollbackResult) decide(code errcode.Code, body []byte) {
	o.OK = false
	o.Status = code.Status()
	o.Code = code
	o.Body = body
}

package runner

import (
	"context"
	"sync"
	"time"

	"github.com/batchd/batchd/errcode"
	"github.com/batchd/batchd/internal/jsonscan"
)

// RollbackResult is what a step's rollback did (CONTRACT.md §9, atomic batches).
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
	ctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), b.r.cfg.BatchTimeout, b.r.batchTimeout)
	defer cancel()
	n := len(b.results)
	u := &undo{ctx: ctx, out: make([]RollbackResult, n), done: make([]chan struct{}, n)}
	for i := range u.done {
		u.done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i := range n {
		if b.results[i].Outcome != OutcomeOK {
			close(u.done[i]) // nothing to undo, nothing to wait for
			continue
		}
		wg.Go(func() { b.undo(u, i) })
	}
	wg.Wait()
}

// undo is the state of one batch's rollback phase. Goroutine i writes only out[i] and results[i].Rollback, and
// closes done[i]; it reads a dependent's Rollback only after that dependent's done is closed.
type undo struct {
	ctx  context.Context
	out  []RollbackResult
	done []chan struct{}
}

// undo runs step i's rollback once the rollbacks of its dependents have ended.
func (b *batch) undo(u *undo, i int) {
	defer close(u.done[i])
	step := &b.plan.Steps[i]
	res := &b.results[i]
	for _, d := range step.Dependents {
		<-u.done[d] // each ends: rollbacks are bounded by their own timeouts
	}
	rb := step.Rollback
	if rb == nil {
		return
	}
	out := &u.out[i]
	res.Rollback = out
	defer func() {
		if v := recover(); v != nil {
			b.r.logPanic(res.Key, v)
			*out = RollbackResult{Status: errcode.StepPanic.Status(), Code: errcode.StepPanic, Body: b.r.bodyPanic,
				Executed: out.Executed, Duration: out.Duration}
		}
		if rec := b.r.rbRec; rec != nil {
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
	call := Call{Key: step.Key, Method: rb.Method, Name: rb.Name, Rollback: true}
	if err := b.fill(u.ctx, &call, rb.Path, rb.Headers, rb.Body); err != nil {
		var tmp Result
		b.resolveFailed(u.ctx, err, &tmp)
		out.decide(tmp.Code, tmp.Body)
		return
	}
	defer b.releaseBytes(int64(len(call.Body)))
	if !b.acquireRollback(u.ctx) {
		out.decide(errcode.BatchTimeout, b.r.bodyBatchTimeout)
		return
	}
	defer b.release()

	// A rollback keeps a timer context of its own: rollbacks are rare, and the step timer has stopped.
	b.steps[i].timeout = StepTimeoutError{Key: step.Key, Timeout: b.r.cfg.StepTimeout}
	t0 := time.Now()
	sctx, cancel := context.WithDeadlineCause(u.ctx, t0.Add(b.r.cfg.StepTimeout), &b.steps[i].timeout)
	defer cancel()
	out.Executed = true
	resp, err, panicked := b.invoke(sctx, call)
	out.Duration = time.Since(t0)
	switch {
	case panicked:
		out.decide(errcode.StepPanic, b.r.bodyPanic)
	case err != nil || sctx.Err() != nil:
		var tmp Result
		b.invokeFailed(i, sctx, err, &tmp)
		out.decide(tmp.Code, tmp.Body)
	default:
		out.Status = resp.Status
		out.OK = resp.Status < 400 && !jsonscan.BusinessFailure(resp.Body)
		if !out.OK {
			out.Body = resp.Body
			if len(out.Body) == 0 {
				out.Body = nullJSON
			}
		}
	}
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
			b.releaseSlot()
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

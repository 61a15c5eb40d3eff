package runner

import (
	"context"
	"time"
)

// The step timer bounds each invocation by Config.StepTimeout with one timer per batch instead of a timer context
// per step (context.WithDeadlineCause allocates a timerCtx, a time.Timer and two closures, and adds and removes a
// runtime timer: about a tenth of the CPU time of a batch of fast steps). Every step of a batch has the same
// timeout, so deadlines expire in start order: the running steps wait in a queue in start order, and the timer is
// armed only for the oldest. A step that returns leaves its queue entry behind, for the timer to drop when it
// fires; a batch of fast steps arms the timer once and stops it at the end.

// stepCtx is a step's invocation context: a WithCancelCause child of the batch's context, cancelled by the step
// timer at the step's deadline with the step's *StepTimeoutError as cause. Like a context.WithDeadlineCause context
// it reports its deadline and, once cancelled at it, context.DeadlineExceeded (contexts derived from it see
// context.Canceled with the same cause). It lives in the batch's stepState: no allocation of its own.
type stepCtx struct {
	context.Context
	deadline time.Time
	cause    error // the step's *StepTimeoutError
}

func (c *stepCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *stepCtx) Err() error {
	err := c.Context.Err()
	if err != nil && context.Cause(c.Context) == c.cause {
		return context.DeadlineExceeded
	}
	return err
}

// startStep reads the clock that starts step i's invocation and returns the invocation's context. When the batch
// ends before the step could time out, that is the batch's own context, whose cause then classifies the step as
// before (context.WithDeadlineCause would have returned a plain cancel context). A prompt step gets the batch's
// context too.
func (b *batch) startStep(i int) (context.Context, time.Time) {
	st := &b.steps[i]
	t0 := time.Now()
	d := t0.Add(b.r.cfg.StepTimeout)
	if st.prompt || b.deadline.Before(d) {
		return b.ctx, t0
	}
	st.timeout = StepTimeoutError{Key: b.plan.Steps[i].Key, Timeout: b.r.cfg.StepTimeout}
	ctx, cancel := context.WithCancelCause(b.ctx)
	st.ctx.Context = ctx
	st.ctx.cause = &st.timeout
	st.cancel = cancel
	st.next = -1
	st.running.Store(true)

	b.tmu.Lock()
	if b.qtail >= 0 {
		tail := &b.steps[b.qtail]
		// Another step read the clock after this one but queued first: keep the queue in deadline order. The
		// difference is the time between this step's clock read and here, before its invocation starts.
		d = later(d, tail.ctx.deadline)
		tail.next = int32(i)
	} else {
		b.qhead = int32(i)
	}
	b.qtail = int32(i)
	st.ctx.deadline = d
	if !b.armed {
		// Not armed: the queue was empty (expire re-arms while a queued step runs).
		b.armed = true
		if b.timer == nil {
			b.timer = time.AfterFunc(d.Sub(t0), b.expire)
		} else {
			b.timer.Reset(d.Sub(t0))
		}
	}
	b.tmu.Unlock()
	return &st.ctx, t0
}

func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}

// endStep is called as soon as step i's Invoke returned: from then on the timer leaves it alone, so a step that
// returned before its deadline is never reported as timed out.
func (b *batch) endStep(i int) {
	b.steps[i].running.Store(false)
}

// releaseStep cancels step i's context once its result is classified, as a timer context's cancel would.
func (b *batch) releaseStep(i int) {
	if cancel := b.steps[i].cancel; cancel != nil {
		cancel(nil)
	}
}

// expire is the timer's func: it cancels every running step whose deadline has passed, with its own cause, drops
// the steps that returned, and re-arms the timer for the oldest step still running.
func (b *batch) expire() {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	b.armed = false
	now := time.Now()
	for b.qhead >= 0 {
		st := &b.steps[b.qhead]
		if st.running.Load() {
			if now.Before(st.ctx.deadline) {
				b.armed = true
				b.timer.Reset(st.ctx.deadline.Sub(now))
				return
			}
			st.cancel(&st.timeout)
		}
		b.qhead = st.next
	}
	b.qtail = -1
}

// stopTimer stops the step timer once every step has ended. An expire already under way finds no step running.
func (b *batch) stopTimer() {
	b.tmu.Lock()
	if b.timer != nil {
		b.timer.Stop()
	}
	b.tmu.Unlock()
}

package runner

import (
	"errors"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/planner"
)

// fanOut runs fan-out step i (planner.Step.ForEach): one call per element of its list, each with ${item…} and
// ${index} bound to its element, at most Config.MaxParallel of them at once and each under the batch's slots like
// any call. The step's result gathers them (README "REST APIs"): Body the array of their bodies in element order,
// Items each call's status and body, Status 200 when every call succeeded, else the first failing call's status,
// with its outcome and code. A list longer than the calls the batch may still make fails the step unsent.
func (b *batch) fanOut(i int, step *planner.Step, res *Result) {
	elems, err := step.ForEach.Elements(b.resps, max(int(b.calls.Load()), 0))
	if err != nil {
		var tm *planner.TooManyError
		if errors.As(err, &tm) {
			b.decided(res, errcode.TooManyCalls, OutcomeTooLarge, "not sent: "+tm.Error()+
				" (-max-calls); split the list, or send it as a job")
			return
		}
		b.buildFailed(b.ctx, err, res)
		return
	}
	if !b.takeCalls(res, len(elems)) {
		return
	}
	calls := make([]Result, len(elems))
	var g errgroup.Group
	g.SetLimit(b.r.cfg.MaxParallel)
	for j, elem := range elems {
		g.Go(func() error {
			c := &calls[j]
			c.Index, c.Key = i, step.Key
			defer func() {
				if v := recover(); v != nil {
					b.r.logPanic(step.Key, v)
					b.decided(c, errcode.StepPanic, OutcomeError, "the step panicked; the stack is in batchd's log")
					b.failed(step.Key)
				}
			}()
			switch {
			case b.ctx.Err() != nil:
				b.notStarted(c)
			case b.stopped.Load():
				b.notExecuted(c)
			default:
				b.send(i, step, b.resps.ForItem(elem, j), j, c)
			}
			return nil
		})
	}
	_ = g.Wait()
	b.gather(res, calls, elems)
}

// gather fills a fan-out step's result from its calls.
func (b *batch) gather(res *Result, calls []Result, elems [][]byte) {
	res.Items = make([]Item, len(calls))
	size := 2 + max(len(calls)-1, 0)
	var first, last time.Duration
	failed := -1
	for j := range calls {
		c := &calls[j]
		res.Items[j] = Item{Status: c.Status, Body: c.Body, Header: c.Header, Outcome: c.Outcome, Code: c.Code,
			Failed: c.Failed, Element: elems[j]}
		size += len(c.Body)
		if c.Failed && failed < 0 {
			failed = j
		}
		if c.Executed {
			if !res.Executed || c.Started < first {
				first = c.Started
			}
			last = max(last, c.Started+c.Duration)
			res.Executed = true
		}
	}
	if res.Executed {
		res.Started, res.Duration = first, last-first
	}
	body := []byte("[]")
	if err := b.reserve(int64(size)); err != nil {
		body = nil
	} else if len(calls) > 0 {
		body = make([]byte, 0, size)
		body = append(body, '[')
		for j := range calls {
			if j > 0 {
				body = append(body, ',')
			}
			body = append(body, calls[j].Body...)
		}
		body = append(body, ']')
	}
	switch {
	case body == nil:
		b.decided(res, errcode.OverBudget, OutcomeOverBudget, "step failed: the budget cannot hold the fan-out's answer")
	case failed >= 0:
		c := &calls[failed]
		res.Status, res.Body, res.Outcome, res.Code, res.Failed = c.Status, body, c.Outcome, c.Code, true
		res.UpstreamError = c.UpstreamError
	default:
		res.Status, res.Body, res.Outcome = 200, body, OutcomeOK
	}
}

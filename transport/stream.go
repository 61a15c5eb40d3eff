package transport

import (
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// MIMENDJSON is the media type of a streamed answer (README "Streaming results").
const MIMENDJSON = "application/x-ndjson"

// WantsStream reports whether a request's Accept header values ask for a streamed answer: application/x-ndjson
// is acceptable (q > 0) and no other type the client names is preferred to it (a higher q). So
// "application/x-ndjson" and "application/x-ndjson, application/json" stream, "application/json;q=1,
// application/x-ndjson;q=0.5" does not, and an absent Accept or "*/*" gets the JSON answer.
func WantsStream(accept []string) bool {
	ndjson, best := -1.0, 0.0
	for _, v := range accept {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(s, 64); err != nil {
					continue
				}
			}
			if mt == MIMENDJSON {
				ndjson = max(ndjson, q)
			} else if mt != "*/*" && mt != "application/*" {
				best = max(best, q)
			}
		}
	}
	return ndjson > 0 && ndjson >= best
}

// stream runs an accepted batch and answers it as NDJSON (README "Streaming results"): 200 at once, then one line per
// step as it finishes ({"index","key","status","response"}, plus "timing" with "timings": true), in completion order,
// each flushed; in an atomic batch that did not commit, one line per attempted rollback
// ({"index","key","rolled_back","rollback_status"}); finally a summary line without "index".
//
// The runner's OnResult is on the critical path of the step's dependents, so it never writes to the client: it
// queues the result (its body is the one the batch keeps anyway, not a copy) and signals this goroutine, which
// writes and flushes the lines. A slow client therefore slows no step, and costs no memory beyond the queue. The
// whole stream is also recorded for an Idempotency-Key (finish), up to storeLimit bytes: over it the stream is
// recorded as not stored. It is recorded also when the client went away.
func (s *Server) stream(c echo.Context, start time.Time, plan *planner.Plan, opt runner.Options,
	finish func(int, string, []byte), storeLimit int64) error {
	r, w := c.Request(), c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, MIMENDJSON)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx and the like: pass each line on at once
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	flush := func() { _ = rc.Flush() }
	flush() // the status line: the batch was accepted

	q := &lineQueue{ready: make(chan struct{}, 1)}
	opt.OnResult = func(res runner.Result) { q.push(res, false) }
	if plan.Atomic {
		opt.OnRollback = func(res runner.Result) { q.push(res, true) }
	}
	rec := &recording{limit: storeLimit, acct: opt.Budget}
	o := wire{w: w, before: writeDeadline(w), tee: rec.add, buf: make([]byte, 0, chunk+512)}
	write := func() {
		for _, l := range q.take() {
			if l.rollback {
				o.rollbackLine(&l.res)
			} else {
				o.line(plan, &l.res)
			}
		}
		o.flush()
		if o.err == nil {
			flush()
		}
	}

	done := make(chan []runner.Result, 1)
	s.obs.BatchStarted()
	go func() {
		defer func() {
			if v := recover(); v != nil { // echo's Recover does not see this goroutine
				s.log.Error("panic in batch runner", "request_id", h.Get("X-Request-Id"), "panic", v)
				close(done)
			}
		}()
		done <- s.cfg.Runner.Run(r.Context(), plan, opt)
	}()
	var results []runner.Result
	for ran := false; !ran; {
		select {
		case <-q.ready:
			write()
		case res, ok := <-done:
			if !ok {
				s.obs.BatchFinished()
				return nil // logged; the stream ends without a summary and nothing is recorded
			}
			results, ran = res, true
		}
	}
	s.obs.BatchFinished()

	write() // the lines queued since the last signal
	// The whole stream is recorded for an Idempotency-Key before its last line is written (also when the client
	// left: its retry sees what ran), so that a client that retries as soon as it has read the summary is answered
	// from the record, not told that the batch is still running.
	o.summary(plan, results, time.Since(start))
	rec.add(o.buf)
	o.tee = nil
	finish(http.StatusOK, MIMENDJSON, rec.answer())
	o.flush()
	if o.err == nil {
		flush()
	}
	s.logRollbackFailures(h.Get("X-Request-Id"), plan, results)
	if r.Context().Err() != nil || o.err != nil {
		s.logBatch(c, "batch abandoned: client closed", plan, results, start, true)
		s.obs.BatchAbandoned()
		return nil
	}
	s.logBatch(c, "batch", plan, results, start, true)
	return nil
}

// queuedLine is a result waiting for its line: a step's, or (rollback) its rollback's.
type queuedLine struct {
	res      runner.Result
	rollback bool
}

// lineQueue hands results from the runner's goroutines to the handler's.
type lineQueue struct {
	ready chan struct{} // a result was queued since the last take; capacity 1
	mu    sync.Mutex
	lines []queuedLine
}

func (q *lineQueue) push(res runner.Result, rollback bool) {
	q.mu.Lock()
	q.lines = append(q.lines, queuedLine{res, rollback})
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default: // a take is pending already and will find this line too
	}
}

// take returns the queued lines and empties the queue.
func (q *lineQueue) take() []queuedLine {
	q.mu.Lock()
	defer q.mu.Unlock()
	lines := q.lines
	q.lines = nil
	return lines
}

// recording keeps a copy of a streamed answer for its Idempotency-Key, up to limit bytes, each growth reserved
// from the batch's budget; past the limit (or the budget) it keeps nothing and the answer is not stored.
type recording struct {
	limit int64
	acct  runner.Budget
	buf   []byte
	over  bool
}

func (rc *recording) add(b []byte) {
	if rc.over || rc.limit <= 0 {
		return
	}
	n := len(rc.buf) + len(b)
	if int64(n) > rc.limit {
		rc.over, rc.buf = true, nil
		return
	}
	if n > cap(rc.buf) {
		grow := max(2*cap(rc.buf), n, 4096)
		if rc.acct != nil && rc.acct.Reserve(int64(grow)) != nil {
			rc.over, rc.buf = true, nil
			return
		}
		old := cap(rc.buf)
		rc.buf = append(make([]byte, 0, grow), rc.buf...)
		if rc.acct != nil {
			rc.acct.Release(int64(old))
		}
	}
	rc.buf = append(rc.buf, b...)
}

// answer is the recorded stream, nil when it was not kept whole.
func (rc *recording) answer() []byte {
	if rc.over {
		return nil
	}
	return rc.buf
}

// logRollbackFailures logs, at warning level, each rollback of an atomic batch that did not succeed: its step
// stays done although the batch failed, which someone has to look at (the BatchdRollbackFailed alert).
func (s *Server) logRollbackFailures(reqID string, plan *planner.Plan, results []runner.Result) {
	if !plan.Atomic {
		return
	}
	for i := range results {
		rb := results[i].Rollback
		if rb == nil || rb.OK {
			continue
		}
		s.log.Warn("rollback failed", "request_id", reqID, "key", results[i].Key,
			"method", plan.Steps[i].Rollback.Name, "status", rb.Status, "code", int(rb.Code))
	}
}

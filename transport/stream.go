package transport

import (
	"errors"
	"io"
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

// MIMENDJSON is the media type of a streamed answer (CONTRACT.md §9).
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

// stream runs an accepted batch and answers it as NDJSON (CONTRACT.md §9): 200 at once, then one line per step as
// it finishes ({"index","key","status","response"}, plus "timing" with "timings": true), in completion order, each
// flushed; in an atomic batch that did not commit, one line per attempted rollback
// ({"index","key","rolled_back","rollback_status"}); finally a summary line without "index" (runner.AppendSummary).
//
// The runner's OnResult is on the critical path of the step's dependents, so it never writes to the client: it
// appends the line to one buffer under a mutex and signals this goroutine, which writes and flushes what is new.
// A slow client therefore slows no step; the buffer holds at most the whole answer, as the JSON answer would.
// The whole body is also what finish records for Idempotency-Key replays, also when the client went away.
func (s *Server) stream(c echo.Context, start time.Time, plan *planner.Plan, finish func(int, string, []byte)) error {
	r, w := c.Request(), c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, MIMENDJSON)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx and the like: pass each line on at once
	w.WriteHeader(http.StatusOK)
	sw := &streamWriter{w: w, rc: http.NewResponseController(w), ready: make(chan struct{}, 1)}
	sw.flush() // the status line: the batch was accepted

	opt := runner.Options{
		Header:   s.forwarded(r.Header),
		OnResult: func(res runner.Result) { sw.step(plan, &res) },
	}
	if plan.Atomic {
		opt.OnRollback = func(res runner.Result) { sw.rollback(&res) }
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
		case <-sw.ready:
			sw.flush()
		case res, ok := <-done:
			if !ok {
				s.obs.BatchFinished()
				return nil // logged; the stream ends without a summary and nothing is recorded
			}
			results, ran = res, true
		}
	}
	s.obs.BatchFinished()

	sw.summary(plan, results, time.Since(start))
	sw.flush()
	finish(http.StatusOK, MIMENDJSON, sw.body()) // also when the client left: its retry sees what ran
	failed := 0
	for i := range results {
		if results[i].Failed {
			failed++
		}
	}
	reqID, dur := h.Get("X-Request-Id"), msSince(start)
	s.logRollbackFailures(reqID, plan, results)
	if r.Context().Err() != nil || sw.broken {
		s.logBatch("batch abandoned: client closed", reqID, len(results), failed, dur, true)
		s.abandoned()
		return nil
	}
	s.logBatch("batch", reqID, len(results), failed, dur, true)
	return nil
}

// streamWriter collects the lines of a streamed answer from the runner's goroutines and writes them from the
// handler's. buf only grows: buf[:sent] is on the wire, and the handler reads buf[sent:n] without the lock while
// lines are appended beyond n.
type streamWriter struct {
	w      io.Writer
	rc     *http.ResponseController
	ready  chan struct{} // a line was added since the last flush; capacity 1
	broken bool          // a write failed: the client is gone; lines are still collected for finish

	mu   sync.Mutex
	buf  []byte
	sent int // handler goroutine only
}

func (sw *streamWriter) step(plan *planner.Plan, r *runner.Result) {
	sw.mu.Lock()
	sw.buf = runner.AppendStreamLine(sw.buf, plan, r)
	sw.mu.Unlock()
	sw.signal()
}

func (sw *streamWriter) rollback(r *runner.Result) {
	sw.mu.Lock()
	sw.buf = runner.AppendRollbackLine(sw.buf, r)
	sw.mu.Unlock()
	sw.signal()
}

// summary runs on the handler goroutine once the runner has returned.
func (sw *streamWriter) summary(plan *planner.Plan, results []runner.Result, elapsed time.Duration) {
	sw.mu.Lock()
	sw.buf = runner.AppendSummary(sw.buf, plan, results, elapsed)
	sw.mu.Unlock()
}

func (sw *streamWriter) signal() {
	select {
	case sw.ready <- struct{}{}:
	default: // a flush is pending already and will take this line too
	}
}

// flush writes every line not yet written and flushes them to the client.
func (sw *streamWriter) flush() {
	sw.mu.Lock()
	chunk := sw.buf[sw.sent:len(sw.buf):len(sw.buf)]
	sw.sent = len(sw.buf)
	sw.mu.Unlock()
	if sw.broken {
		return
	}
	if len(chunk) > 0 {
		if _, err := sw.w.Write(chunk); err != nil {
			sw.broken = true
			return
		}
	}
	if err := sw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		sw.broken = true
	}
}

// body is the whole answer; call it once the runner has returned.
func (sw *streamWriter) body() []byte {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.buf
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

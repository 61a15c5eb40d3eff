package transport

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/idempotency"
	"github.com/batchd/batchd/internal/jobs"
	"github.com/batchd/batchd/internal/jsonscan"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// The routes of jobs (docs/jobs.md): POST /v1/jobs takes an NDJSON body of batches, one per line, read as a
// stream and checked line by line with planner.Parse before anything is queued; GET /v1/jobs/{id} is its state,
// GET /v1/jobs/{id}/results its answers in line order, DELETE /v1/jobs/{id} cancels it. RunJobBatch runs one line
// as POST /v1/batch runs a batch: the same plan, runner, budgets and answer.

// JobEngine is the job engine behind /v1/jobs; *jobs.Engine implements it.
type JobEngine interface {
	Stage(ctx context.Context, spec jobs.Spec) (jobs.Stager, error)
	Find(ctx context.Context, key string) (jobs.Job, jobs.Fingerprint, bool, error)
	Get(ctx context.Context, id string) (jobs.Job, error)
	Cancel(ctx context.Context, id string) (jobs.Job, bool, error)
	Results(ctx context.Context, id string, wait bool, stop func() bool, emit func([]byte) error) error
	// Interactive is called as an interactive batch (POST /v1/batch) starts, and what it returns as it ends: jobs
	// yield to interactive batches (jobs.Engine.Interactive).
	Interactive() (end func())
}

// JobsConfig wires the jobs routes. Zero values mean defaults.
type JobsConfig struct {
	Engine JobEngine // nil: no /v1/jobs routes
	// MaxBatches is the most lines one job may hold (-job-max-batches); default DefaultJobMaxBatches.
	MaxBatches int64
	// MaxBody is the largest job body in bytes (-job-max-body); default DefaultJobMaxBody.
	MaxBody int64
}

// Defaults of JobsConfig.
const (
	DefaultJobMaxBatches = 1_000_000
	DefaultJobMaxBody    = 1 << 30
)

// maxBadLines is how many bad lines a refused job's answer lists; reading stops at the last of them.
const maxBadLines = 100

// maxLineProblems is how many problems of one bad line are listed.
const maxLineProblems = 10

// jobReadIdle bounds how long a job body may pause between two reads: a client that sends keeps its upload going
// however large it is (the server's ReadTimeout counts from the request's start, which a large job outlasts).
const jobReadIdle = 30 * time.Second

// jobSubmitOverhead is what a submission holds besides its current line (at most -max-body, and the plan parsed
// from it): the reader's buffer and the lines staged but not yet sent to the store.
const jobSubmitOverhead = 2 << 20

func (s *Server) jobRoutes() {
	s.e.POST("/v1/jobs", s.handleJobSubmit)
	s.e.GET("/v1/jobs/:id", s.handleJobGet)
	s.e.GET("/v1/jobs/:id/results", s.handleJobResults)
	s.e.DELETE("/v1/jobs/:id", s.handleJobCancel)
}

// badLine is one refused line of a job, with its problems.
type badLine struct {
	line     int64
	problems []planner.Problem
}

func (s *Server) handleJobSubmit(c echo.Context) error {
	start := time.Now()
	r := c.Request()
	jc := s.cfg.Jobs
	if s.draining.Load() {
		return jobRefusal(c, errcode.Unavailable, ReasonDraining, "batchd is shutting down; retry on another instance")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != MIMENDJSON {
		return jobRefusal(c, errcode.UnsupportedMedia, ReasonUnsupportedMedia,
			"Content-Type must be application/x-ndjson: one batch per line")
	}
	if r.URL.RawQuery != "" {
		return jobRefusal(c, errcode.InvalidBatch, ReasonInvalidQuery, "POST /v1/jobs takes no query parameters")
	}
	key := ""
	if keys := r.Header.Values(idempotency.HeaderKey); len(keys) > 0 {
		if len(keys) > 1 || !idempotency.ValidKey(keys[0]) {
			return jobRefusal(c, errcode.InvalidBatch, "invalid_idempotency_key",
				"Idempotency-Key must be sent once, as 1 to 255 printable ASCII characters; nothing was queued")
		}
		key = idempotency.ScopedKey(r.Header.Values("Authorization"), keys[0])
	}
	acct, err := s.admit(2*s.cfg.MaxBody + jobSubmitOverhead)
	if err != nil {
		c.Response().Header().Set("Retry-After", "1")
		return jobRefusal(c, errcode.Overloaded, ReasonOverloaded,
			"batchd is at its memory budget and cannot take this job now; retry after 1s ("+err.Error()+")")
	}
	defer acct.Close()

	rc := http.NewResponseController(c.Response())
	body := &idleReader{r: http.MaxBytesReader(c.Response(), r.Body, jc.MaxBody), rc: rc}
	ctx := r.Context()
	if key != "" {
		j, fp, found, err := jc.Engine.Find(ctx, key)
		if err != nil {
			return s.jobStoreDown(c, err)
		}
		if found {
			return s.replayJob(c, j, fp, body)
		}
	}
	stager, err := jc.Engine.Stage(ctx, jobs.Spec{Key: key, Header: s.forwarded(r.Header)})
	if err != nil {
		return s.jobStoreDown(c, err)
	}
	defer stager.Abort() // a no-op once committed

	lr := jobs.NewLineReader(body, int(s.cfg.MaxBody))
	var bad []badLine
	stopped := false
	for !stopped {
		line, n, err := lr.Next()
		var tooLong *jobs.LineTooLongError
		switch {
		case errors.Is(err, io.EOF):
			stopped = true
			continue
		case errors.As(err, &tooLong):
			bad = append(bad, badLine{line: n, problems: []planner.Problem{{Reason: planner.ReasonTooLarge,
				Detail: "line of " + strconv.FormatInt(tooLong.Size, 10) + " bytes; a batch is at most " +
					strconv.FormatInt(s.cfg.MaxBody, 10) + " bytes (-max-body)"}}})
		case err != nil:
			return s.jobBodyError(c, err)
		case n > jc.MaxBatches:
			return jobRefusal(c, errcode.BodyTooLarge, "too_many_batches", "the job has more than "+
				strconv.FormatInt(jc.MaxBatches, 10)+" batches (-job-max-batches); split it; nothing was queued")
		case len(line) == 0:
			bad = append(bad, badLine{line: n, problems: []planner.Problem{{Reason: planner.ReasonNoSteps,
				Detail: "empty line: each line must hold one batch"}}})
		default:
			if _, err := planner.Parse(line, s.cfg.Planner); err != nil {
				var pe *planner.Error
				if !errors.As(err, &pe) {
					return err
				}
				bad = append(bad, badLine{line: n, problems: pe.Problems})
			} else if len(bad) == 0 {
				if err := stager.Add(ctx, line); err != nil {
					return s.jobStoreDown(c, err)
				}
			}
		}
		stopped = stopped || len(bad) >= maxBadLines
	}
	if len(bad) > 0 {
		return s.refuseJobLines(c, bad, lr.Lines())
	}
	if lr.Lines() == 0 {
		return jobRefusal(c, errcode.InvalidBatch, string(planner.ReasonNoSteps),
			"the job has no batches: send one batch per line")
	}
	j, replayed, err := stager.Commit(ctx, lr.Sum())
	switch {
	case errors.Is(err, jobs.ErrKeyReused):
		return jobRefusal(c, errcode.IdempotencyReused, "idempotency_key_reused",
			"this Idempotency-Key was used for a job with another body; nothing was queued; use a new key for a new job")
	case err != nil:
		return s.jobStoreDown(c, err)
	}
	s.log.Info("job queued", "job", j.ID, "batches", j.Total, "replayed", replayed, "duration_ms", msSince(start))
	return jobAccepted(c, j, replayed)
}

// replayJob answers a submission whose Idempotency-Key names a job: the same job when the body is the same bytes
// (it is read to its end to know), else 422.
func (s *Server) replayJob(c echo.Context, j jobs.Job, fp jobs.Fingerprint, body io.Reader) error {
	lr := jobs.NewLineReader(body, 1) // lines are not kept: only the fingerprint counts
	for {
		_, _, err := lr.Next()
		var tooLong *jobs.LineTooLongError
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.As(err, &tooLong) {
			return s.jobBodyError(c, err)
		}
	}
	if lr.Sum() != fp {
		return jobRefusal(c, errcode.IdempotencyReused, "idempotency_key_reused",
			"this Idempotency-Key was used for a job with another body; nothing was queued; use a new key for a new job")
	}
	return jobAccepted(c, j, true)
}

// jobAccepted answers 202 {"id","status","batches"} with Location.
func jobAccepted(c echo.Context, j jobs.Job, replayed bool) error {
	h := c.Response().Header()
	h.Set("Location", "/v1/jobs/"+j.ID)
	if replayed {
		h.Set(idempotency.HeaderReplayed, "true")
	}
	b := append([]byte(`{"id":`), jsonscan.AppendString(nil, j.ID)...)
	b = append(b, `,"status":`...)
	b = jsonscan.AppendString(b, string(j.Status))
	b = append(b, `,"batches":`...)
	b = strconv.AppendInt(b, j.Total, 10)
	b = append(b, '}')
	return c.JSONBlob(http.StatusAccepted, b)
}

// jobBodyError answers a job body that could not be read: 413 over -job-max-body; nothing for a client gone.
func (s *Server) jobBodyError(c echo.Context, err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return jobRefusal(c, errcode.BodyTooLarge, ReasonBodyTooLarge, "the job body exceeds "+
			strconv.FormatInt(s.cfg.Jobs.MaxBody, 10)+" bytes (-job-max-body); split it; nothing was queued")
	}
	s.log.Info("job body not read", "err", err)
	return nil // the client is gone or broke the stream; nobody reads an answer
}

// jobStoreDown answers a job store that failed: 503, nothing done.
func (s *Server) jobStoreDown(c echo.Context, err error) error {
	if c.Request().Context().Err() != nil {
		return nil
	}
	s.log.Error("job store unavailable", "path", c.Request().URL.Path, "err", err)
	return jobRefusal(c, errcode.Unavailable, "jobs_unavailable", "the job store is unavailable; retry later")
}

// jobRefusal answers a request of the jobs routes that was not accepted.
func jobRefusal(c echo.Context, code errcode.Code, reason, description string) error {
	return c.JSONBlob(code.Status(), errcode.BatchBody(code, reason, description, nil))
}

// refuseJobLines answers 400 listing the bad lines (at most maxBadLines, each with at most maxLineProblems
// problems), each problem as {"line", "key", "reason", "problem"}.
func (s *Server) refuseJobLines(c echo.Context, bad []badLine, read int64) error {
	desc := "job refused: " + strconv.Itoa(len(bad)) + " bad lines; nothing was queued"
	if len(bad) == 1 {
		desc = "job refused: line " + strconv.FormatInt(bad[0].line, 10) + " is bad; nothing was queued"
	}
	if len(bad) >= maxBadLines {
		desc = "job refused: at least " + strconv.Itoa(maxBadLines) + " bad lines (reading stopped at line " +
			strconv.FormatInt(read, 10) + "); nothing was queued"
	}
	b := []byte(`{"ok":false,"result":{"error":`)
	b = strconv.AppendInt(b, int64(errcode.InvalidBatch), 10)
	b = append(b, `,"description":`...)
	b = jsonscan.AppendString(b, desc)
	b = append(b, `,"details":[`...)
	first := true
	for _, bl := range bad {
		for i, p := range bl.problems {
			if i == maxLineProblems {
				break
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, `{"line":`...)
			b = strconv.AppendInt(b, bl.line, 10)
			b = append(b, `,"key":`...)
			b = jsonscan.AppendString(b, p.Key)
			b = append(b, `,"reason":`...)
			b = jsonscan.AppendString(b, string(p.Reason))
			b = append(b, `,"problem":`...)
			b = jsonscan.AppendString(b, p.Detail)
			b = append(b, '}')
		}
	}
	b = append(b, "]}}"...)
	s.log.Info("job refused", "bad_lines", len(bad), "lines_read", read)
	return c.JSONBlob(http.StatusBadRequest, b)
}

// idleReader moves the connection's read deadline before each read (jobReadIdle).
type idleReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (ir *idleReader) Read(p []byte) (int, error) {
	_ = ir.rc.SetReadDeadline(time.Now().Add(jobReadIdle))
	return ir.r.Read(p)
}

func (s *Server) handleJobGet(c echo.Context) error {
	j, err := s.cfg.Jobs.Engine.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return s.jobLookupError(c, err)
	}
	return c.JSONBlob(http.StatusOK, appendJob(nil, j))
}

func (s *Server) handleJobCancel(c echo.Context) error {
	j, changed, err := s.cfg.Jobs.Engine.Cancel(c.Request().Context(), c.Param("id"))
	if err != nil {
		return s.jobLookupError(c, err)
	}
	status := http.StatusOK // it had ended already: nothing to cancel
	if changed {
		status = http.StatusAccepted
	}
	return c.JSONBlob(status, appendJob(nil, j))
}

// handleJobResults writes a job's answers as NDJSON, {"line":n,"answer":…} per line in line order; with
// ?wait=true it streams until the job has ended (or batchd drains: the client reads the rest elsewhere).
func (s *Server) handleJobResults(c echo.Context) error {
	r := c.Request()
	wait, problem := flagQuery(r.URL.RawQuery, "wait", "GET /v1/jobs/{id}/results")
	if problem != "" {
		return jobRefusal(c, errcode.InvalidBatch, ReasonInvalidQuery, problem)
	}
	id := c.Param("id")
	if _, err := s.cfg.Jobs.Engine.Get(r.Context(), id); err != nil {
		return s.jobLookupError(c, err)
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, MIMENDJSON)
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	before := writeDeadline(w)
	flush := func() { _ = rc.Flush() }
	flush()
	// The server's ReadTimeout counts from the request's start, and the end of the connection's read deadline
	// cancels the request: a stream that waits for a long job keeps moving it while it waits.
	stop := func() bool {
		_ = rc.SetReadDeadline(time.Now().Add(jobReadIdle))
		return s.draining.Load()
	}
	err := s.cfg.Jobs.Engine.Results(r.Context(), id, wait, stop, func(page []byte) error {
		_ = rc.SetReadDeadline(time.Now().Add(jobReadIdle))
		before()
		if _, err := w.Write(page); err != nil {
			return err
		}
		flush()
		return nil
	})
	if err != nil && r.Context().Err() == nil {
		s.log.Info("job results cut short", "job", id, "err", err)
	}
	return nil
}

func (s *Server) jobLookupError(c echo.Context, err error) error {
	if errors.Is(err, jobs.ErrNotFound) {
		return c.JSONBlob(http.StatusNotFound, errcode.Body(errcode.NotFound,
			"no job "+strconv.Quote(c.Param("id"))+": unknown, or its results expired"))
	}
	return s.jobStoreDown(c, err)
}

// appendJob appends a job's state: {"id","status","batches":{"total","done","failed","skipped"},
// "steps":{"done","failed"},"results":{"bytes","max_bytes","not_stored"},"created","started","finished"}, times in
// RFC 3339 (UTC, milliseconds), null when not yet.
func appendJob(b []byte, j jobs.Job) []byte {
	num := func(name string, n int64) {
		b = append(b, name...)
		b = strconv.AppendInt(b, n, 10)
	}
	at := func(name string, t time.Time) {
		b = append(b, name...)
		if t.IsZero() {
			b = append(b, "null"...)
			return
		}
		b = append(b, '"')
		b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		b = append(b, '"')
	}
	b = append(b, `{"id":`...)
	b = jsonscan.AppendString(b, j.ID)
	b = append(b, `,"status":`...)
	b = jsonscan.AppendString(b, string(j.Status))
	num(`,"batches":{"total":`, j.Total)
	num(`,"done":`, j.Done)
	num(`,"failed":`, j.Failed)
	num(`,"skipped":`, j.Skipped)
	num(`},"steps":{"done":`, j.StepsDone)
	num(`,"failed":`, j.StepsFailed)
	num(`},"results":{"bytes":`, j.ResultBytes)
	num(`,"max_bytes":`, j.MaxResultBytes)
	num(`,"not_stored":`, j.NotStored)
	b = append(b, '}')
	at(`,"created":`, j.Created)
	at(`,"started":`, j.Started)
	at(`,"finished":`, j.Finished)
	return append(b, '}')
}

// RunJobBatch runs one line of a job as POST /v1/batch runs a batch: planned by planner.Parse with the server's
// planner config, admitted to the process memory budget (an error when it cannot be now: the engine runs it
// later), run by the server's Runner with the job's pass-through headers and the batch's byte budget, and answered
// by the batch answer's writer. Its calls carry the job's Idempotency-Key, "<job id>:<line>:<step key>…"
// (runner.Options.CallKeys). It implements jobs.RunFunc.
func (s *Server) RunJobBatch(ctx context.Context, b jobs.Batch) (jobs.Answer, error) {
	acct, err := s.admit(int64(len(b.Body)))
	if err != nil {
		return jobs.Answer{}, err
	}
	defer acct.Close()
	plan, err := planner.Parse(b.Body, s.cfg.Planner)
	if err != nil {
		// Checked when the job was submitted: this replica's planner settings differ from those of the one that
		// took the job.
		var pe *planner.Error
		if !errors.As(err, &pe) {
			return jobs.Answer{}, err
		}
		details := make([]errcode.Detail, len(pe.Problems))
		for i, p := range pe.Problems {
			details[i] = errcode.Detail{Key: p.Key, Reason: string(p.Reason), Problem: p.Detail}
		}
		return jobs.Answer{Refused: true, Answer: errcode.BatchBody(errcode.InvalidBatch, "invalid_batch",
			describe(pe), details)}, nil
	}
	if plan.DryRun {
		o := wire{}
		o.plan(plan)
		return jobs.Answer{Answer: o.buf}, nil
	}
	results := s.cfg.Runner.Run(ctx, plan, runner.Options{Header: b.Header, Budget: acct,
		CallKeys: b.Job + ":" + strconv.FormatInt(b.Line, 10)})
	ans := jobs.Answer{Steps: len(results), Failed: runner.CountFailed(results)}
	size := answerBound(plan, results)
	if err := acct.Reserve(size); err != nil {
		ans.Answer = errcode.Body(errcode.OverBudget, "the batch ran, but its answer could not be held to be stored: "+
			err.Error())
		return ans, nil
	}
	ans.Answer = AppendAnswer(make([]byte, 0, size), plan, results)
	return ans, nil
}

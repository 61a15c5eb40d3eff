package jobs

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/jsonscan"
)

// Recorder counts what the engine does; *metrics.Metrics implements it.
type Recorder interface {
	JobStatus(status string)        // a job entered status (on this replica)
	JobBatch(outcome string, n int) // n batches of jobs ended with outcome (Outcomes)
	JobBatchReclaimed()             // a batch was taken over from a replica that stopped
	JobQueue(jobs, batches int64, oldest time.Duration)
}

// Config configures an Engine. Zero values mean defaults.
type Config struct {
	Store    Store // required
	Workers  int   // batches run at once by this replica; default DefaultWorkers
	Recorder Recorder
	Logger   *slog.Logger
	// Poll is how often a results reader that waits for lines looks for new ones, and StatsEvery how often the
	// queue's state is read for metrics; defaults 100ms and 10s.
	Poll, StatsEvery time.Duration
	// Quiet is how long after the last interactive batch (Engine.Interactive) ended the workers but one still
	// leave job batches alone; default DefaultQuiet.
	Quiet time.Duration
}

// DefaultQuiet is Config.Quiet's default.
const DefaultQuiet = 100 * time.Millisecond

// Engine runs jobs: it submits them to its Store, and its workers take their batches from it and run them.
type Engine struct {
	store   Store
	workers int
	rec     Recorder
	log     *slog.Logger
	poll    time.Duration
	every   time.Duration
	quiet   time.Duration

	// Interactive batches in flight on this replica, when the last one ended, and a channel closed when their
	// count drops to 0 (nil while it is 0): while there are any, or were within quiet, one worker runs.
	mu          sync.Mutex
	interactive int
	lastEnded   time.Time
	idle        chan struct{}

	takeCtx    context.Context // ends when the engine stops taking batches
	stopTaking context.CancelFunc
	runCtx     context.Context // ends when running batches must stop
	stopRuns   context.CancelFunc
	wg         sync.WaitGroup
	started    bool
}

// New returns an engine over cfg.Store; Start starts its workers.
func New(cfg Config) *Engine {
	e := &Engine{store: cfg.Store, workers: cfg.Workers, rec: cfg.Recorder, log: cfg.Logger, poll: cfg.Poll,
		every: cfg.StatsEvery, quiet: cfg.Quiet}
	if e.workers <= 0 {
		e.workers = DefaultWorkers
	}
	if e.rec == nil {
		e.rec = nopRecorder{}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.poll <= 0 {
		e.poll = 100 * time.Millisecond
	}
	if e.every <= 0 {
		e.every = 10 * time.Second
	}
	if e.quiet <= 0 {
		e.quiet = DefaultQuiet
	}
	e.takeCtx, e.stopTaking = context.WithCancel(context.Background())
	e.runCtx, e.stopRuns = context.WithCancel(context.Background())
	return e
}

// Start starts the workers, which run each batch with run, and the loop that reads the queue's state for metrics.
// The first worker always takes batches; the others only while no interactive batch is served (Interactive).
func (e *Engine) Start(run RunFunc) {
	e.started = true
	for i := range e.workers {
		e.wg.Go(func() { e.work(run, i > 0) })
	}
	e.wg.Go(e.statsLoop)
}

// Drain stops taking batches; running ones go on. Shutdown waits for them.
func (e *Engine) Drain() { e.stopTaking() }

// Shutdown stops taking batches and waits for the running ones until ctx ends; then it cancels them, and hands
// back to the store those that did not finish (they run again on another replica, or after a restart with Redis).
func (e *Engine) Shutdown(ctx context.Context) error {
	e.stopTaking()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	e.stopRuns()
	<-done // a cancelled batch ends promptly: its steps see their context end
	return context.Cause(ctx)
}

// Interactive tells the engine that an interactive batch (POST /v1/batch) is being served on this replica, until
// the returned function is called. Interactive batches come first: while any is served, and for Config.Quiet after
// the last one ended, the replica runs one job batch at a time instead of -job-workers, so that a job takes one
// batch's share of the CPU from interactive callers. A job never stops: the first worker always runs.
func (e *Engine) Interactive() (end func()) {
	e.mu.Lock()
	if e.interactive == 0 {
		e.idle = make(chan struct{})
	}
	e.interactive++
	e.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.interactive--
			e.lastEnded = time.Now()
			if e.interactive == 0 {
				close(e.idle)
				e.idle = nil
			}
		})
	}
}

// quietSpell waits until no interactive batch is served and none has ended for Config.Quiet; false when the
// engine stops taking batches first.
func (e *Engine) quietSpell() bool {
	for {
		e.mu.Lock()
		idle, left := e.idle, e.quiet-time.Since(e.lastEnded)
		e.mu.Unlock()
		switch {
		case idle != nil: // interactive batches in flight: wait for the last to end
			select {
			case <-idle:
			case <-e.takeCtx.Done():
				return false
			}
		case left > 0:
			t := time.NewTimer(left)
			select {
			case <-t.C:
			case <-e.takeCtx.Done():
				t.Stop()
				return false
			}
		default:
			return true
		}
	}
}

// work is one worker: take a batch, run it, store its answer, until the engine stops taking. A worker that yields
// takes a batch only in a quiet spell (quietSpell).
func (e *Engine) work(run RunFunc, yields bool) {
	var stored <-chan struct{} = closed
	defer func() { <-stored }()
	for e.takeCtx.Err() == nil {
		if yields && !e.quietSpell() {
			return
		}
		t, skipped, err := e.store.Take(e.takeCtx)
		if skipped > 0 {
			e.rec.JobBatch(OutcomeSkipped, skipped)
		}
		if err != nil {
			e.log.Error("jobs: taking a batch failed; retrying in 1s", "err", err)
			e.pause(time.Second)
			continue
		}
		if t == nil {
			continue // the engine stops taking
		}
		stored = e.runTask(run, t, stored)
	}
}

// closed is a closed channel: nothing to wait for.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// runTask runs one batch, or hands it back when it did not run. Its answer is stored in the background, once the
// worker's previous answer (prev) is stored, so that the store's round trip overlaps the worker's next batch: a
// worker has at most one answer being stored. It returns a channel closed once this one is.
func (e *Engine) runTask(run RunFunc, t *Task, prev <-chan struct{}) <-chan struct{} {
	if t.FirstStart {
		e.rec.JobStatus(string(StatusRunning))
	}
	if t.Reclaimed {
		e.rec.JobBatchReclaimed()
	}
	var ans Answer
	if t.GiveUp {
		ans = giveUp(t)
	} else {
		var err error
		ans, err = e.safeRun(run, t)
		if err != nil || e.runCtx.Err() != nil {
			// Not run, or cut short by the shutdown (its answer would report cancelled steps): run it again later.
			if rerr := e.release(t); rerr != nil {
				e.log.Error("jobs: handing back a batch failed; it runs again after the claim timeout",
					"job", t.Job, "line", t.Line, "err", rerr)
			}
			if err != nil && e.runCtx.Err() == nil {
				e.log.Warn("jobs: batch not run now; retrying", "job", t.Job, "line", t.Line, "err", err)
				e.pause(time.Second)
			}
			return prev
		}
	}
	<-prev
	done := make(chan struct{})
	e.wg.Go(func() {
		defer close(done)
		e.storeAnswer(t, ans)
	})
	return done
}

// storeAnswer stores a batch's answer and counts it; a batch whose answer cannot be stored is handed back, to run
// again.
func (e *Engine) storeAnswer(t *Task, ans Answer) {
	rec := Record{Line: t.Line, Steps: ans.Steps, Failed: ans.Failed, BatchFailed: ans.outcome() != OutcomeOK}
	rec.Full = appendRecord(make([]byte, 0, len(ans.Answer)+64), t.Line, oneLine(ans.Answer), ans.Steps, ans.Failed)
	rec.Summary = appendSummary(make([]byte, 0, 96), t.Line, ans.Steps, ans.Failed)
	// Stored even when the engine is stopping: the batch ran, and its answer must not be lost.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	fin, err := e.store.Finish(ctx, t, rec)
	cancel()
	if err != nil {
		e.log.Error("jobs: storing a batch's answer failed; the batch runs again", "job", t.Job, "line", t.Line, "err", err)
		_ = e.release(t)
		return
	}
	e.rec.JobBatch(ans.outcome(), 1)
	if fin.Ended && fin.Final == StatusDone {
		e.rec.JobStatus(string(StatusDone))
		e.log.Info("job done", "job", t.Job)
	}
}

// safeRun runs a batch, turning a panic into a failure answer: the worker lives on.
func (e *Engine) safeRun(run RunFunc, t *Task) (ans Answer, err error) {
	defer func() {
		if v := recover(); v != nil {
			e.log.Error("jobs: panic running a batch", "job", t.Job, "line", t.Line, "panic", v)
			ans, err = Answer{Answer: errcode.Body(errcode.Internal, "the batch panicked; the stack is in batchd's log"),
				Refused: true}, nil
		}
	}()
	return run(e.runCtx, t.Batch)
}

func (e *Engine) release(t *Task) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.store.Release(ctx, t)
}

// pause waits d, or less when the engine stops taking.
func (e *Engine) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.takeCtx.Done():
	}
}

// giveUp is the answer of a batch taken over too many times.
func giveUp(t *Task) Answer {
	return Answer{Refused: true, Answer: errcode.Body(errcode.Internal, "not run again: line "+
		strconv.FormatInt(t.Line, 10)+" was taken "+strconv.Itoa(MaxRuns)+
		" times by replicas that stopped before finishing it; its calls may have reached the upstream")}
}

// oneLine returns answer on one line: a body that spans lines (a pretty-printing upstream) is compacted.
func oneLine(answer []byte) []byte {
	if len(answer) == 0 {
		return []byte("null")
	}
	if !jsonscan.HasLineBreak(answer) {
		return answer
	}
	out := make([]byte, 0, jsonscan.CompactLen(answer))
	jsonscan.Compact(answer, func(b []byte) { out = append(out, b...) })
	return out
}

// statsLoop reads the queue's state for metrics, until the engine stops taking.
func (e *Engine) statsLoop() {
	tick := time.NewTicker(e.every)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(e.takeCtx, 5*time.Second)
		st, err := e.store.Stats(ctx)
		cancel()
		if err == nil {
			e.rec.JobQueue(st.Jobs, st.Batches, st.Oldest)
		} else if e.takeCtx.Err() == nil {
			e.log.Warn("jobs: reading the queue's state failed", "err", err)
		}
		select {
		case <-tick.C:
		case <-e.takeCtx.Done():
			return
		}
	}
}

// Stage starts a job (Store.Stage).
func (e *Engine) Stage(ctx context.Context, spec Spec) (Stager, error) {
	st, err := e.store.Stage(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &countingStager{Stager: st, rec: e.rec}, nil
}

// countingStager counts a job as queued when it is committed (not when replayed).
type countingStager struct {
	Stager
	rec Recorder
}

func (s *countingStager) Commit(ctx context.Context, fp Fingerprint) (Job, bool, error) {
	j, replayed, err := s.Stager.Commit(ctx, fp)
	if err == nil && !replayed {
		s.rec.JobStatus(string(StatusQueued))
	}
	return j, replayed, err
}

// Find returns the job a scoped Idempotency-Key names (Store.Find).
func (e *Engine) Find(ctx context.Context, key string) (Job, Fingerprint, bool, error) {
	return e.store.Find(ctx, key)
}

// Get returns a job's state; ErrNotFound for an unknown id.
func (e *Engine) Get(ctx context.Context, id string) (Job, error) {
	if !ValidID(id) {
		return Job{}, ErrNotFound
	}
	return e.store.Get(ctx, id)
}

// Cancel cancels a job: no further batch of it starts. changed is false when it had ended already.
func (e *Engine) Cancel(ctx context.Context, id string) (Job, bool, error) {
	if !ValidID(id) {
		return Job{}, false, ErrNotFound
	}
	j, changed, err := e.store.Cancel(ctx, id)
	if err == nil && changed {
		e.rec.JobStatus(string(StatusCancelled))
		e.log.Info("job cancelled", "job", id)
	}
	return j, changed, err
}

// resultsPage is how many lines Results reads from the store at once: a reader's memory is one page.
const resultsPage = 256

// Results hands emit the job's records in line order, a page at a time. Without wait it gives the lines answered
// so far (a line not answered yet is left out) and returns; with wait it gives every line in order, waiting for
// each, until the job has ended (a line a cancelled job skipped is left out), or until stop returns true or ctx
// ends. emit's error ends the reading and is returned.
func (e *Engine) Results(ctx context.Context, id string, wait bool, stop func() bool, emit func([]byte) error) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	var page []byte
	for from := int64(1); ; {
		recs, j, err := e.store.Results(ctx, id, from, resultsPage)
		if err != nil {
			return err
		}
		page = page[:0]
		next := from
		for _, r := range recs {
			if r == nil && wait && !j.Ended() {
				break // in order: wait for this line
			}
			page = append(page, r...)
			next++
		}
		if len(page) > 0 {
			if err := emit(page); err != nil {
				return err
			}
		}
		progressed := next > from
		from = next
		if !wait && from <= j.Total && len(recs) > 0 {
			continue // the next page
		}
		if !wait || from > j.Total {
			return nil
		}
		if progressed {
			continue
		}
		// Nothing new: wait a little for the line the reader is at.
		if stop != nil && stop() {
			return nil
		}
		t := time.NewTimer(e.poll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

type nopRecorder struct{}

func (nopRecorder) JobStatus(string)                     {}
func (nopRecorder) JobBatch(string, int)                 {}
func (nopRecorder) JobBatchReclaimed()                   {}
func (nopRecorder) JobQueue(int64, int64, time.Duration) {}

// Package jobs runs imports of any size: a job is an NDJSON body of batches, one per line, run in the background by
// a bounded pool of workers per replica, with its progress and its answers kept in a Store (docs/jobs.md).
//
// Contract:
//   - A job is staged line by line while its body is read (Stager.Add) and becomes runnable only when committed:
//     nothing of a job runs before every line was read and checked by the caller. An Idempotency-Key maps to one
//     job: committing a second job under a key that has one returns the first (ErrKeyReused when the bodies differ).
//   - Each line runs at least once and its answer is stored exactly once: a line run again (its replica died, the
//     Redis store gave it to another) replaces its answer and its counts, never adds to them. Every call a line
//     makes carries Idempotency-Key "<job id>:<line>:<step key>" (runner.CallKey, under runner.Options.CallKeys),
//     so that an upstream that honours keys applies a re-run once.
//   - Answers are stored in line order's terms: Results gives line n's record after line n-1's, waiting for it when
//     asked to. A job's stored records are bounded by MaxResultBytes: past it a line keeps a one-line summary.
//   - Cancel stops a job: no further batch of it starts; batches running finish and are stored.
//   - Workers (Config.Workers per replica) each run one batch at a time. Shutdown stops taking batches at once, lets
//     the running ones finish within its context, and hands back whatever did not finish (the Redis store gives it
//     to another replica; the memory store keeps nothing across a restart).
//
// Two stores implement Store: Memory (one process, not durable: the default) and Redis (Streams with a consumer
// group: every replica sharing the Redis works on the same jobs, and a batch whose replica died is claimed by
// another after ClaimAfter).
package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Status is a job's state.
type Status string

const (
	StatusQueued    Status = "queued"    // committed, no batch started yet
	StatusRunning   Status = "running"   // a batch has started
	StatusDone      Status = "done"      // every batch ran
	StatusCancelled Status = "cancelled" // cancelled: no further batch starts
)

// Statuses lists every Status, a bounded label set for metrics.
func Statuses() []string {
	return []string{string(StatusQueued), string(StatusRunning), string(StatusDone), string(StatusCancelled)}
}

// Outcomes of a job's batch (label outcome of batchd_job_batches_total).
const (
	OutcomeOK      = "ok"      // every step succeeded
	OutcomePartial = "partial" // some steps failed
	OutcomeFailed  = "failed"  // no step succeeded, or the batch was refused or given up (see MaxRuns)
	OutcomeSkipped = "skipped" // its job was cancelled before it started
)

// Outcomes lists every batch outcome, a bounded label set for metrics.
func Outcomes() []string { return []string{OutcomeOK, OutcomePartial, OutcomeFailed, OutcomeSkipped} }

// Defaults of Config and of the stores.
const (
	DefaultWorkers        = 4
	DefaultClaimAfter     = 30 * time.Second
	DefaultResultsTTL     = 24 * time.Hour
	DefaultMaxResultBytes = 256 << 20
	// MaxRuns is how many times a line is run at most: a line whose replica died this many times (a batch that
	// makes its replica crash, say) is not run again; its answer says so and it counts as failed.
	MaxRuns = 3
)

// ErrNotFound: no job has this id (never had, or its results expired).
var ErrNotFound = errors.New("jobs: no such job")

// ErrKeyReused: the Idempotency-Key names a job submitted with another body.
var ErrKeyReused = errors.New("jobs: the Idempotency-Key was used for another job")

// Job is a job's state as its status answer shows it.
type Job struct {
	ID     string
	Status Status
	// Batches: Total lines; Done that ran to their answer (failed ones included); Failed of those, the ones in
	// which a step failed (or that were refused or given up); Skipped that never ran because the job was cancelled.
	Total, Done, Failed, Skipped int64
	StepsDone, StepsFailed       int64 // steps of the batches done, and of those the failed ones
	// ResultBytes are the bytes of the records stored; NotStored the lines whose answer was past MaxResultBytes and
	// were kept as a summary only.
	ResultBytes, NotStored, MaxResultBytes int64
	Created, Started, Finished             time.Time // zero when not yet
}

// Ended reports whether nothing of the job is left to run or running: done, or cancelled with every line either
// answered or skipped.
func (j Job) Ended() bool {
	return (j.Status == StatusDone || j.Status == StatusCancelled) && j.Done+j.Skipped >= j.Total
}

// Fingerprint identifies a job's body: sha256 over its bytes as sent.
type Fingerprint [sha256.Size]byte

// Spec is what a job is created with.
type Spec struct {
	// Key is the caller-scoped Idempotency-Key (idempotency.ScopedKey), empty for none.
	Key string
	// Header holds the pass-through headers of the submission (Authorization, …), sent with every step of every
	// batch of the job, as a batch's are. They are kept in the store as long as the job is.
	Header http.Header
}

// Stager receives a job's lines while its body is read. Nothing runs until Commit; Abort (or a Stager never
// committed, after its store's staging time) drops what was staged.
type Stager interface {
	// Add stages the next line (line numbers count from 1 in the order of Add). The Stager keeps no reference to
	// line.
	Add(ctx context.Context, line []byte) error
	// Commit makes the job runnable, with fp its body's fingerprint. When Spec.Key already names a job, that job
	// is returned with replayed true (ErrKeyReused when its fingerprint differs) and the staged lines are dropped.
	Commit(ctx context.Context, fp Fingerprint) (j Job, replayed bool, err error)
	// Abort drops the staged lines; a no-op after Commit.
	Abort()
}

// Batch is one line of a job, handed to a RunFunc.
type Batch struct {
	Job    string
	Line   int64
	Body   []byte
	Header http.Header // the job's pass-through headers (Spec.Header); read-only
}

// Answer is what running a batch gave.
type Answer struct {
	// Answer is the batch's answer as POST /v1/batch writes it (or the ErrorResult of a refusal), on one line.
	Answer  []byte
	Steps   int  // steps in the batch
	Failed  int  // steps that failed
	Refused bool // the batch could not run at all (Answer is the refusal): it counts as failed
}

// outcome classifies an answer for metrics and counts.
func (a Answer) outcome() string {
	switch {
	case a.Refused || (a.Steps > 0 && a.Failed == a.Steps):
		return OutcomeFailed
	case a.Failed > 0:
		return OutcomePartial
	}
	return OutcomeOK
}

// RunFunc runs one batch of a job. An error means it did not run and may run later (the memory budget cannot
// admit it now, the context ended): the engine hands the batch back and takes it again later.
type RunFunc func(ctx context.Context, b Batch) (Answer, error)

// Task is a batch a worker took from a Store.
type Task struct {
	Batch
	// FirstStart: taking this batch turned its job from queued to running.
	FirstStart bool
	// Reclaimed: the batch was taken over from a replica that stopped before finishing it.
	Reclaimed bool
	// GiveUp: the batch was already run MaxRuns times by replicas that stopped before finishing it; it is not run
	// again but finished with a failure answer.
	GiveUp bool
	handle any // the store's own
}

// Record is a batch's stored result: the full results line, and the summary line kept instead past the job's
// MaxResultBytes.
type Record struct {
	Line          int64
	Full, Summary []byte
	Steps, Failed int
	BatchFailed   bool
}

// Finished is what Store.Finish reports.
type Finished struct {
	Ended bool   // the job has nothing left to run: it turned done (or, cancelled, its last batch ended)
	Final Status // the job's status then
}

// Stats is the state of a store's queue, for metrics.
type Stats struct {
	Jobs    int64         // jobs queued or running
	Batches int64         // their batches not yet run (queued, or running)
	Oldest  time.Duration // age of the oldest of those jobs; 0 when none
}

// add counts j, a job that has not ended, in the queue's state at now; a cancelled job is not counted (its running
// batches end without running the rest).
func (st *Stats) add(j *Job, now time.Time) {
	if j.Status == StatusCancelled {
		return
	}
	st.Jobs++
	st.Batches += j.Total - j.Done - j.Skipped
	st.Oldest = max(st.Oldest, now.Sub(j.Created))
}

// Store keeps jobs, hands their batches to workers and keeps their answers. Every method is safe for concurrent
// use.
type Store interface {
	Stage(ctx context.Context, spec Spec) (Stager, error)
	// Find returns the job the scoped Idempotency-Key names, with its fingerprint.
	Find(ctx context.Context, key string) (Job, Fingerprint, bool, error)
	Get(ctx context.Context, id string) (Job, error)
	// Cancel cancels a queued or running job (changed true) and returns its state; a job that ended is left as it is.
	Cancel(ctx context.Context, id string) (j Job, changed bool, err error)
	// Take blocks until a batch is ready or ctx ends (nil task, nil error). skipped counts the batches of
	// cancelled jobs it dropped on the way.
	Take(ctx context.Context) (t *Task, skipped int, err error)
	// Finish stores a taken batch's record and counts it.
	Finish(ctx context.Context, t *Task, r Record) (Finished, error)
	// Release hands back a taken batch that did not run, to be taken again.
	Release(ctx context.Context, t *Task) error
	// Results returns the records of lines from to from+n-1 (nil for a line without one yet) and the job's state
	// read after them, so that a line without a record in a job that has Ended never gets one.
	Results(ctx context.Context, id string, from int64, n int) ([][]byte, Job, error)
	Stats(ctx context.Context) (Stats, error)
	Close() error
}

// newID is a job's id: 128 random bits in hex, a capability: whoever has it can read the job's results.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// ValidID reports whether s has the form of a job id; any other id names no job.
func ValidID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// appendRecord appends a batch's results line: {"line":n,"answer":<answer>,"steps":s,"failed":f} and a newline.
// steps and failed are batchd's own count of the answer's steps and of those that failed (ok_status and "when"
// taken into account), so that a reader need not judge each step again.
func appendRecord(dst []byte, line int64, answer []byte, steps, failed int) []byte {
	dst = append(dst, `{"line":`...)
	dst = strconv.AppendInt(dst, line, 10)
	dst = append(dst, `,"answer":`...)
	dst = append(dst, answer...)
	dst = append(dst, `,"steps":`...)
	dst = strconv.AppendInt(dst, int64(steps), 10)
	dst = append(dst, `,"failed":`...)
	dst = strconv.AppendInt(dst, int64(failed), 10)
	return append(dst, "}\n"...)
}

// appendSummary appends the line kept instead of a record past MaxResultBytes:
// {"line":n,"answer":null,"steps":s,"failed":f,"not_stored":true} and a newline.
func appendSummary(dst []byte, line int64, steps, failed int) []byte {
	dst = append(dst, `{"line":`...)
	dst = strconv.AppendInt(dst, line, 10)
	dst = append(dst, `,"answer":null,"steps":`...)
	dst = strconv.AppendInt(dst, int64(steps), 10)
	dst = append(dst, `,"failed":`...)
	dst = strconv.AppendInt(dst, int64(failed), 10)
	return append(dst, `,"not_stored":true}`+"\n"...)
}

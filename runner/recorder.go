package runner

import "time"

// Recorder receives the runner's events; metrics implement it. Calls may come from many goroutines at once.
type Recorder interface {
	// StepStarted is called as a step's call begins; StepDone follows it, once.
	StepStarted(name string)
	// StepDone is called once per step when it ends, executed or not.
	StepDone(StepEvent)
	// BatchDone is called once per batch, after its last step (and its rollbacks) ended.
	BatchDone(BatchEvent)
	// RollbackDone is called once per rollback attempted in an atomic batch that did not commit, with its
	// Rollback.Name and whether it undid its step. A rollback not attempted because the rollback of a step
	// depending on it failed counts as not ok.
	RollbackDone(name string, ok bool)
}

// StepEvent is reported once per step when it ends, executed or not.
type StepEvent struct {
	Name     string // planner.Step.Name
	Method   string // the HTTP method
	Outcome  Outcome
	Status   int           // the step's status, as its result reports it
	Duration time.Duration // zero for a step never executed
	// UpstreamError is the InvokeError kind ("connect", "reset", "too_large", …) when the call failed that way.
	UpstreamError string
	// Started: the step had its StepStarted (it made a call, or began to), so that a Recorder can pair the two.
	Started bool
	// Decided: batchd decided the outcome (Result.Code is set: a timeout, a panic, a step not sent…), so Status
	// is batchd's, not an answer's.
	Decided bool
}

// BatchEvent is reported once per batch when its last step ended.
type BatchEvent struct {
	Steps    int
	Depth    int    // planner.Plan.Depth
	Outcome  string // "ok" (every step ok), "partial" (some failed), "failed" (none ok)
	Duration time.Duration
}

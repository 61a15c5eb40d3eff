// Package runner executes a validated *planner.Plan through an Invoker and returns every step's Result in request
// order (README "What runs when", "Responses").
//
// Ordering:
//   - Run returns one Result per step, indexed by the step's position in the request, whatever order the steps ran in.
//   - A step is invoked only after every step in its Deps has ended successfully (Outcome ok). A step whose
//     dependency failed is not invoked: 424 DependencyFailed naming that (direct) dependency.
//   - Options.OnResult is called once per step, in completion order, after that step's Result is final and before
//     its dependents are released, so a step's OnResult always follows the OnResult of each of its dependencies.
//   - Recorder.StepDone is called once per step (executed or not); Recorder.BatchDone once, after the last step.
//
// Cancellation:
//   - One step's failure is data, never an error of the group: it does not cancel any other step. Only the steps
//     that depend on it are skipped (424); with Plan.StopOnError no step starts after the first failure (412 for
//     the steps that never started, 424 for the dependents of the failed step; running steps finish).
//   - Each invocation gets a context bounded by Config.StepTimeout whose cause is a *StepTimeoutError; the whole
//     batch is bounded by Config.BatchTimeout (cause *BatchTimeoutError). Anything else that ends the caller's
//     context (the client went away, shutdown) is reported as 499 Cancelled: steps not yet started are never
//     started, running ones see their context cancelled.
//   - A panic anywhere in a step (the Invoker included) fails that step alone with 500 StepPanic; its stack goes to
//     Config.Logger, never to the client.
//
// Concurrency:
//   - Every step has its own goroutine (an errgroup's); a step waits on the done channels of its dependencies,
//     which are closed as they end. Run returns only when every step has ended.
//   - At most Config.MaxParallel invocations of one batch are in flight, and at most the weight of Config.Limit
//     across all batches of the process. Slots are taken only around Invoke, after the step's inputs are resolved,
//     never while waiting for dependencies.
//   - A Runner is safe for concurrent use; OnResult and Recorder methods may be called from several goroutines at
//     once and must not block for long (OnResult runs on the critical path of the step's dependents).
//
// Atomic batches (planner.Plan.Atomic, README "Atomic batches"):
//   - The batch runs as with StopOnError. When every step succeeded it has committed and nothing more happens.
//   - Otherwise, once every step has ended (running steps finish), the rollback of each step that succeeded runs
//     (planner.Step.Rollback), in reverse dependency order: a step's rollback starts only after the rollbacks of
//     the steps that depend on it have ended; independent rollbacks run in parallel within Config.MaxParallel and
//     Config.Limit. A rollback goes through the same Invoker (Call.Rollback set) with the same Config.StepTimeout;
//     all rollbacks together are bounded by Config.BatchTimeout, and they run even when the caller's context has
//     ended (the client went away, the batch timed out): an atomic batch is never left half-done for lack of
//     trying.
//   - Result.Rollback reports each attempted rollback; a step keeps its own Status and Body. A step whose
//     dependent's rollback failed is not rolled back (424): its effect is then reported, not guessed at. A step
//     that succeeded without a rollback has nothing to undo. Steps that failed or never ran have no rollback.
//   - Options.OnRollback is called once per attempted rollback, after every OnResult; Recorder.RollbackDone counts
//     them.
//
// Timings: Result.Queued, Started and Duration are measured in every batch, from clock reads the runner needs anyway;
// the answer carries them, and CriticalPath, only when planner.Plan.Timings asks.
//
// The seams are interfaces declared here: Invoker (how a call is made), Recorder (metrics) and Budget (bytes).
//
// Where the README is silent, this package decides:
//   - With stop_on_error, a step whose dependency was not executed (412) is not executed either (412), unless
//     another of its dependencies really failed (424 naming that one).
//   - An invocation whose context ended before it returned is classified by the context's cause even if the
//     Invoker produced a response: 504 StepTimeout or BatchTimeout (outcome timeout), or 499 Cancelled (outcome
//     skipped) when the caller's context ended.
//   - A step never started because the batch timed out is 504 BatchTimeout with outcome skipped (it did not run).
//   - A business failure is detected from the first top-level "ok" member of a JSON object body, without decoding
//     the body (Failure, CallOutcome).
//   - An upstream error's description is fixed per kind ("upstream unreachable", …): the Invoker's error text may
//     hold addresses and is never returned.
package runner

// Package client is the Go client of batchd: build a batch, run it and read each step's result by key or in
// request order, plan it without running it (a dry run), and submit, follow, read and cancel jobs.
//
// It speaks batchd's HTTP interface only and imports nothing of the server: a program that embeds it does not
// build the engine, and it works against any batchd that speaks the same wire form.
//
// Contract:
//   - Run asks for the streamed answer (Accept: application/x-ndjson): each step's line as it finishes, then a
//     summary whose "failed" is batchd's own count of failed steps. An Answer therefore says which batch failed by
//     the server's rule (status 400 or more, "ok": false, or what a step's options make of them) and never
//     recomputes it. Results are put back in request order; a body that spanned lines arrives compacted onto one.
//   - A batch batchd refused before running anything (400 with details, 413, 415, 429, 503) and any other
//     answer that is not a 2xx is an *Error carrying the status, the ErrorResult's code, description and details.
//   - An answer cut short (no summary line) is ErrIncomplete, with the results that did arrive.
//   - Everything read from the server is bounded: an answer, a plan, an error body and one line of job results
//     are each at most Config.MaxAnswer bytes.
//   - Methods are safe for concurrent use; every call is bounded by its context only (no timeout of its own: a
//     batch may run for batchd's -batch-timeout, a ?wait=true results stream as long as its job).
package client

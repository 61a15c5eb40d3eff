package runner

import (
	"slices"
	"strconv"
	"time"

	"github.com/batchd/batchd/errcode"
	"github.com/batchd/batchd/planner"
)

// AppendJSON appends the batch answer (CONTRACT.md §6) to dst: for FormRequests and FormBatch
// {"responses":[{"key":…,"status":…,"response":<Body>},…]}, for FormArray a bare array of the same objects.
// Bodies are JSON already and are copied as they are, never re-encoded.
func AppendJSON(dst []byte, form planner.Form, results []Result) []byte {
	size := 16
	for i := range results {
		// {"key":"…","status":NNN,"response":…}, and a comma: 36 bytes besides the key and the body.
		size += 40 + len(results[i].Key) + len(results[i].Body)
	}
	dst = slices.Grow(dst, size)
	if form != planner.FormArray {
		dst = append(dst, `{"responses":`...)
	}
	dst = append(dst, '[')
	for i := range results {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendResult(dst, &results[i])
	}
	dst = append(dst, ']')
	if form != planner.FormArray {
		dst = append(dst, '}')
	}
	return dst
}

// AppendResult appends one element of the answer: {"key":…,"status":…,"response":…}.
func AppendResult(dst []byte, r *Result) []byte {
	dst = append(dst, `{"key":`...)
	dst = errcode.AppendString(dst, r.Key)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = append(dst, `,"response":`...)
	dst = appendBody(dst, r.Body)
	return append(dst, '}')
}

// AppendLine appends one line of a streamed answer (CONTRACT.md §9, application/x-ndjson):
// {"index":…,"key":…,"status":…,"response":…} and a newline.
func AppendLine(dst []byte, r *Result) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, int64(r.Index), 10)
	dst = append(dst, `,"key":`...)
	dst = errcode.AppendString(dst, r.Key)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = append(dst, `,"response":`...)
	dst = appendBody(dst, r.Body)
	return append(dst, "}\n"...)
}

// AppendAnswer appends the batch answer for plan p: AppendJSON's, plus what the plan opted into (CONTRACT.md §9).
// With Plan.Timings each result gains "timing" (AppendTiming) and the answer "critical_path_ms"; with Plan.Atomic
// each result gains "rolled_back" (and "rollback_status" when a rollback was attempted) and the answer
// "atomic": {"committed", "rollback_failures"}. Both need an object form, which the planner ensures; on a bare
// array they would add only the per-result members.
func AppendAnswer(dst []byte, p *planner.Plan, results []Result) []byte {
	if !p.Atomic && !p.Timings {
		return AppendJSON(dst, p.Form, results)
	}
	size := 64
	for i := range results {
		size += 128 + len(results[i].Key) + len(results[i].Body)
	}
	dst = slices.Grow(dst, size)
	if p.Form != planner.FormArray {
		dst = append(dst, `{"responses":`...)
	}
	dst = append(dst, '[')
	for i := range results {
		if i > 0 {
			dst = append(dst, ',')
		}
		r := &results[i]
		dst = AppendResult(dst, r)
		dst = dst[:len(dst)-1] // reopen the object
		if p.Timings {
			dst = append(dst, `,"timing":`...)
			dst = AppendTiming(dst, r)
		}
		if p.Atomic {
			dst = appendRollback(dst, r)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if p.Form == planner.FormArray {
		return dst
	}
	return append(appendBatchMembers(dst, p, results), '}')
}

// appendBatchMembers appends the batch-level members the plan asks for (critical_path_ms, atomic), which close
// both the answer and the stream's summary line.
func appendBatchMembers(dst []byte, p *planner.Plan, results []Result) []byte {
	if p.Timings {
		dst = append(dst, `,"critical_path_ms":`...)
		dst = appendMillis(dst, CriticalPath(p, results))
	}
	if p.Atomic {
		dst = append(dst, `,"atomic":`...)
		dst = AppendAtomic(dst, results)
	}
	return dst
}

// AppendTiming appends {"queued_ms","started_ms","duration_ms"}: milliseconds from the batch start, with
// microsecond precision. queued_ms is when every dependency had ended (0 without dependencies); started_ms and
// duration_ms are present only for a step that was executed.
func AppendTiming(dst []byte, r *Result) []byte {
	dst = append(dst, `{"queued_ms":`...)
	dst = appendMillis(dst, r.Queued)
	if r.Executed {
		dst = append(dst, `,"started_ms":`...)
		dst = appendMillis(dst, r.Started)
		dst = append(dst, `,"duration_ms":`...)
		dst = appendMillis(dst, r.Duration)
	}
	return append(dst, '}')
}

// appendRollback appends the members of an atomic batch's result: ,"rolled_back":… and, when the step's rollback
// was attempted, ,"rollback_status":….
func appendRollback(dst []byte, r *Result) []byte {
	dst = append(dst, `,"rolled_back":`...)
	dst = strconv.AppendBool(dst, r.RolledBack())
	if r.Rollback != nil {
		dst = append(dst, `,"rollback_status":`...)
		dst = strconv.AppendInt(dst, int64(r.Rollback.Status), 10)
	}
	return dst
}

// AppendAtomic appends an atomic batch's outcome: {"committed":…,"rollback_failures":[{"key","status","response"},
// …]}. The batch committed when every step succeeded; a rollback failure is a step whose rollback was attempted
// and did not succeed, with the rollback's status and response, in request order.
func AppendAtomic(dst []byte, results []Result) []byte {
	committed := true
	for i := range results {
		committed = committed && !results[i].Failed
	}
	dst = append(dst, `{"committed":`...)
	dst = strconv.AppendBool(dst, committed)
	dst = append(dst, `,"rollback_failures":[`...)
	first := true
	for i := range results {
		rb := results[i].Rollback
		if rb == nil || rb.OK {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, `{"key":`...)
		dst = errcode.AppendString(dst, results[i].Key)
		dst = append(dst, `,"status":`...)
		dst = strconv.AppendInt(dst, int64(rb.Status), 10)
		dst = append(dst, `,"response":`...)
		dst = appendBody(dst, rb.Body)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// AppendStreamLine appends one step's line of a streamed answer: AppendLine's, with "timing" when p.Timings.
func AppendStreamLine(dst []byte, p *planner.Plan, r *Result) []byte {
	dst = AppendLine(dst, r)
	if !p.Timings {
		return dst
	}
	dst = dst[:len(dst)-2] // reopen the object before "}\n"
	dst = append(dst, `,"timing":`...)
	dst = AppendTiming(dst, r)
	return append(dst, "}\n"...)
}

// AppendRollbackLine appends the line of a streamed atomic answer that reports a step's rollback (Options.OnRollback):
// {"index":…,"key":…,"rolled_back":…,"rollback_status":…} and a newline. It has no "status" or "response": those
// are the step's own, on its line already. A failed rollback's response is in the summary's rollback_failures.
func AppendRollbackLine(dst []byte, r *Result) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, int64(r.Index), 10)
	dst = append(dst, `,"key":`...)
	dst = errcode.AppendString(dst, r.Key)
	dst = appendRollback(dst, r)
	return append(dst, "}\n"...)
}

// AppendSummary appends the last line of a streamed answer: {"steps":…,"failed":…,"duration_ms":…} with
// "critical_path_ms" when p.Timings and "atomic" (AppendAtomic) when p.Atomic, and a newline. elapsed is the
// batch's wall time. It has no "index", which tells it from the lines before it.
func AppendSummary(dst []byte, p *planner.Plan, results []Result, elapsed time.Duration) []byte {
	failed := 0
	for i := range results {
		if results[i].Failed {
			failed++
		}
	}
	dst = append(dst, `{"steps":`...)
	dst = strconv.AppendInt(dst, int64(len(results)), 10)
	dst = append(dst, `,"failed":`...)
	dst = strconv.AppendInt(dst, int64(failed), 10)
	dst = append(dst, `,"duration_ms":`...)
	dst = appendMillis(dst, elapsed)
	return append(appendBatchMembers(dst, p, results), "}\n"...)
}

// appendMillis appends d in milliseconds with microsecond precision, as a JSON number ("12", "0.305").
func appendMillis(dst []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	dst = strconv.AppendInt(dst, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return dst
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	dst = append(dst, '.')
	return append(dst, digits[:n]...)
}

func appendBody(dst, body []byte) []byte {
	if len(body) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, body...)
}

// CriticalPath returns the longest chain of executed durations through p's dependency graph: for each step its
// Duration plus the longest chain among its dependencies. Steps never executed count as zero.
func CriticalPath(p *planner.Plan, results []Result) time.Duration {
	n := len(p.Steps)
	if len(results) < n {
		n = len(results)
	}
	memo := make([]time.Duration, n)
	state := make([]uint8, n) // 0 unseen, 1 in progress, 2 done
	var longest func(i int) time.Duration
	longest = func(i int) time.Duration {
		switch state[i] {
		case 2:
			return memo[i]
		case 1: // a cycle: a Plan has none, but do not loop forever on a hand-made one
			return 0
		}
		state[i] = 1
		var best time.Duration
		for _, d := range p.Steps[i].Deps {
			if d >= 0 && d < n {
				best = max(best, longest(d))
			}
		}
		if results[i].Executed {
			best += results[i].Duration
		}
		memo[i], state[i] = best, 2
		return best
	}
	var cp time.Duration
	for i := range n {
		cp = max(cp, longest(i))
	}
	return cp
}

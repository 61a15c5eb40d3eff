package transport

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/batchd/batchd/internal/jsonscan"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// The answer (README "Responses", "Streaming results", "Step timings") is written by one set of functions for its three
// uses: counting its exact size, building it whole in one buffer (a small answer, or one stored for an
// Idempotency-Key), and writing a large one or a stream to the client in chunks, so that no copy of the step bodies is
// made. Step bodies are JSON already and are copied as they are, never re-encoded (a streamed line compacts a body that
// spans lines).

// chunk is the size at which a wire writing to a client flushes what it holds, and from which a body is written
// to the client directly instead of being copied first.
const chunk = 32 << 10

// wire is where an answer goes: appended to buf, which is flushed to w once it holds a chunk, or, in count mode,
// only counted in n. Without w, everything stays in buf. err is the first write error; later writes are skipped.
type wire struct {
	buf   []byte
	w     io.Writer
	count bool
	n     int64 // bytes flushed to w, or counted
	err   error
	// before, when set, is called before each write to w (to extend the write deadline); tee, when set, is given
	// every byte written to w, also after a write failed.
	before func()
	tee    func([]byte)
}

// flush hands what buf holds to w (or to the count).
func (o *wire) flush() {
	switch {
	case o.count:
		o.n += int64(len(o.buf))
		o.buf = o.buf[:0]
	case o.w == nil || len(o.buf) == 0:
	default:
		o.write(o.buf)
		o.buf = o.buf[:0]
	}
}

func (o *wire) write(b []byte) {
	if o.tee != nil {
		o.tee(b)
	}
	if o.err != nil {
		return
	}
	if o.before != nil {
		o.before()
	}
	_, o.err = o.w.Write(b)
	o.n += int64(len(b))
}

// full flushes buf once it holds a chunk.
func (o *wire) full() {
	if len(o.buf) >= chunk && (o.count || o.w != nil) {
		o.flush()
	}
}

func (o *wire) str(s string) { o.buf = append(o.buf, s...) }

func (o *wire) int(n int) { o.buf = strconv.AppendInt(o.buf, int64(n), 10) }

func (o *wire) bool(b bool) { o.buf = strconv.AppendBool(o.buf, b) }

func (o *wire) jsonString(s string) { o.buf = jsonscan.AppendString(o.buf, s) }

// body writes a JSON body as it stands (null when empty); compact takes it onto one line.
func (o *wire) body(b []byte, compact bool) {
	switch {
	case len(b) == 0:
		o.str("null")
	case compact && jsonscan.HasLineBreak(b):
		if o.count {
			o.flush()
			o.n += int64(jsonscan.CompactLen(b))
			return
		}
		jsonscan.Compact(b, o.raw)
	default:
		o.raw(b)
	}
	o.full()
}

// raw writes b as it stands: counted, copied into buf, or, when large and there is a client, written directly.
func (o *wire) raw(b []byte) {
	switch {
	case o.count:
		o.flush()
		o.n += int64(len(b))
	case o.w != nil && len(b) >= chunk:
		o.flush()
		o.write(b)
	default:
		o.buf = append(o.buf, b...)
	}
}

// millis writes d in milliseconds with microsecond precision, as a JSON number ("12", "0.305").
func (o *wire) millis(d time.Duration) {
	us := max(d.Microseconds(), 0)
	o.buf = strconv.AppendInt(o.buf, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	o.buf = append(o.buf, '.')
	o.buf = append(o.buf, digits[:n]...)
}

// answer writes a batch's answer: {"responses":[{"key","status","response"},…]} (a bare array for the array form),
// with what the plan opted into: each result's "timing" and the answer's "critical_path_ms" (Plan.Timings), each
// result's "rolled_back" and "rollback_status" and the answer's "atomic" (Plan.Atomic).
func (o *wire) answer(p *planner.Plan, results []runner.Result) {
	if p.Form != planner.FormArray {
		o.str(`{"responses":`)
	}
	o.str("[")
	for i := range results {
		if i > 0 {
			o.str(",")
		}
		r := &results[i]
		o.str(`{"key":`)
		o.jsonString(r.Key)
		o.str(`,"status":`)
		o.int(r.Status)
		o.str(`,"response":`)
		o.body(r.Body, false)
		o.calls(p, r, false)
		if p.Timings {
			o.str(`,"timing":`)
			o.timing(r)
		}
		if p.Atomic {
			o.rollback(r)
		}
		o.str("}")
	}
	o.str("]")
	if p.Form != planner.FormArray {
		o.batchMembers(p, results)
		o.str("}")
	}
	o.flush()
}

// calls writes what a result holds of its calls besides the response (README "REST APIs"): a fan-out step's
// ,"items":[{"status","response"},…] and the headers its step asked for in capture_headers, ,"headers":{…}.
func (o *wire) calls(p *planner.Plan, r *runner.Result, compact bool) {
	if r.Items != nil {
		o.str(`,"items":[`)
		for j := range r.Items {
			if j > 0 {
				o.str(",")
			}
			o.str(`{"status":`)
			o.int(r.Items[j].Status)
			o.str(`,"response":`)
			o.body(r.Items[j].Body, compact)
			o.str("}")
		}
		o.str("]")
	}
	names := p.Steps[r.Index].CaptureHeaders
	if len(names) == 0 {
		return
	}
	o.str(`,"headers":{`)
	first := true
	for _, name := range names {
		v := r.Header[http.CanonicalHeaderKey(name)]
		if len(v) == 0 {
			continue
		}
		if !first {
			o.str(",")
		}
		first = false
		o.jsonString(name)
		o.str(":")
		o.jsonString(v[0])
	}
	o.str("}")
}

// batchMembers writes the batch-level members the plan asks for (critical_path_ms, atomic), which close both the
// answer and the stream's summary line.
func (o *wire) batchMembers(p *planner.Plan, results []runner.Result) {
	if p.Timings {
		o.str(`,"critical_path_ms":`)
		o.millis(runner.CriticalPath(p, results))
	}
	if p.Atomic {
		o.str(`,"atomic":`)
		o.atomic(results)
	}
}

// timing writes {"queued_ms","started_ms","duration_ms"}: milliseconds from the batch start. queued_ms is when
// every dependency had ended (0 without dependencies); started_ms and duration_ms only for a step executed.
func (o *wire) timing(r *runner.Result) {
	o.str(`{"queued_ms":`)
	o.millis(r.Queued)
	if r.Executed {
		o.str(`,"started_ms":`)
		o.millis(r.Started)
		o.str(`,"duration_ms":`)
		o.millis(r.Duration)
	}
	o.str("}")
}

// rollback writes the members of an atomic batch's result: ,"rolled_back":… and, when the step's rollback was
// attempted, ,"rollback_status":….
func (o *wire) rollback(r *runner.Result) {
	o.str(`,"rolled_back":`)
	o.bool(r.RolledBack())
	if r.Rollback != nil {
		o.str(`,"rollback_status":`)
		o.int(r.Rollback.Status)
	}
}

// atomic writes an atomic batch's outcome: {"committed":…,"rollback_failures":[{"key","status","response"},…]}.
// The batch committed when every step succeeded; a rollback failure is a step whose rollback was attempted and did
// not succeed, with the rollback's status and response, in request order.
func (o *wire) atomic(results []runner.Result) {
	o.str(`{"committed":`)
	o.bool(runner.CountFailed(results) == 0)
	o.str(`,"rollback_failures":[`)
	first := true
	for i := range results {
		rb := results[i].Rollback
		if rb == nil || rb.OK {
			continue
		}
		if !first {
			o.str(",")
		}
		first = false
		o.str(`{"key":`)
		o.jsonString(results[i].Key)
		o.str(`,"status":`)
		o.int(rb.Status)
		o.str(`,"response":`)
		o.body(rb.Body, false)
		o.str("}")
	}
	o.str("]}")
}

// line writes one step's line of a streamed answer: {"index","key","status","response"} (plus "timing" with
// Plan.Timings) and a newline; the body is compacted onto the line.
func (o *wire) line(p *planner.Plan, r *runner.Result) {
	o.str(`{"index":`)
	o.int(r.Index)
	o.str(`,"key":`)
	o.jsonString(r.Key)
	o.str(`,"status":`)
	o.int(r.Status)
	o.str(`,"response":`)
	o.body(r.Body, true)
	o.calls(p, r, true)
	if p.Timings {
		o.str(`,"timing":`)
		o.timing(r)
	}
	o.str("}\n")
	o.full()
}

// rollbackLine writes the line that reports a step's rollback in a streamed atomic answer:
// {"index","key","rolled_back","rollback_status"} and a newline. A failed rollback's response is in the summary.
func (o *wire) rollbackLine(r *runner.Result) {
	o.str(`{"index":`)
	o.int(r.Index)
	o.str(`,"key":`)
	o.jsonString(r.Key)
	o.rollback(r)
	o.str("}\n")
	o.full()
}

// summary writes the last line of a streamed answer: {"steps","failed","duration_ms"} with the plan's batch
// members, and a newline. It has no "index", which tells it from the lines before it.
func (o *wire) summary(p *planner.Plan, results []runner.Result, elapsed time.Duration) {
	o.str(`{"steps":`)
	o.int(len(results))
	o.str(`,"failed":`)
	o.int(runner.CountFailed(results))
	o.str(`,"duration_ms":`)
	o.millis(elapsed)
	o.batchMembers(p, results)
	o.str("}\n")
	o.full()
}

// plan writes the answer of a dry run (README "REST APIs"): {"plan": {"steps": [{"key", "method", "path",
// "depends_on", "level"}, …], "levels", "critical_path"}}; a path is written as the request wrote it, placeholders
// included.
func (o *wire) plan(p *planner.Plan) {
	levels := p.Levels()
	o.str(`{"plan":{"steps":[`)
	for i := range p.Steps {
		s := &p.Steps[i]
		if i > 0 {
			o.str(",")
		}
		o.str(`{"key":`)
		o.jsonString(s.Key)
		o.str(`,"method":`)
		o.jsonString(s.Method)
		o.str(`,"path":`)
		o.jsonString(s.Path.String())
		o.str(`,"depends_on":[`)
		for k, d := range s.Deps {
			if k > 0 {
				o.str(",")
			}
			o.jsonString(p.Steps[d].Key)
		}
		o.str(`],"level":`)
		o.int(levels[i])
		o.str("}")
	}
	o.str(`],"levels":`)
	o.int(p.Depth())
	o.str(`,"critical_path":[`)
	for k, i := range p.CriticalPath() {
		if k > 0 {
			o.str(",")
		}
		o.jsonString(p.Steps[i].Key)
	}
	o.str("]}}")
}

// AppendAnswer appends the answer of a batch that ran to dst, as POST /v1/batch writes it (README "Responses", "Step
// timings"): {"responses":[{"key","status","response"},…]} (a bare array for a bare array of steps), with what the plan
// opted into (timings, atomic). For library use: Parse, Run, then AppendAnswer.
func AppendAnswer(dst []byte, p *planner.Plan, results []runner.Result) []byte {
	o := wire{buf: dst}
	o.answer(p, results)
	return o.buf
}

// answerBound is at least the size of the answer: a bound computed without formatting anything (a key escapes to
// at most six bytes a byte, a timing and the atomic members take at most a few hundred bytes).
func answerBound(p *planner.Plan, results []runner.Result) int64 {
	n := int64(64)
	for i := range results {
		r := &results[i]
		n += int64(48 + 6*len(r.Key) + len(r.Body))
		if p.Timings || p.Atomic {
			n += 128
		}
		for j := range r.Items {
			n += int64(32 + len(r.Items[j].Body))
		}
		for name, v := range r.Header {
			for _, x := range v {
				n += int64(8 + 6*len(name) + 6*len(x))
			}
		}
		if r.Rollback != nil {
			n += int64(64 + 6*len(r.Key) + len(r.Rollback.Body))
		}
	}
	return n
}

// answerSize is the exact size of the answer, found by writing it in count mode.
func answerSize(p *planner.Plan, results []runner.Result) int64 {
	o := wire{count: true, buf: make([]byte, 0, 512)}
	o.answer(p, results)
	return o.n
}

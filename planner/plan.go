// Package planner turns a batch request body into a validated, acyclic, immutable Plan.
//
// Contract (see README "Requests", "Placeholders"):
//   - Parse accepts three forms: {"stop_on_error", "requests": [...]}, {"batch": [...]} and a bare array of steps.
//     Decoding is strict: unknown fields, duplicate object members anywhere and nesting deeper than Config.MaxDepth
//     are errors.
//   - Every problem is found before anything runs and all of them are reported at once in an *Error, each naming
//     its step key (or "#i" for the step at index i when it has no usable key).
//   - Placeholders ${key.seg.seg…} in payload strings, path and header values are compiled into templates once;
//     resolving a template at run time walks the referenced response and never re-parses the payload or re-scans
//     a substituted value. $${ is a literal ${.
//   - A Plan is immutable once returned and safe for concurrent use.
//
// Placeholder rules in detail (README "Placeholders"; the Example functions show each):
//   - ${A} is step A's whole response; ${A.x.0.y} walks members and array indices (decimal, no sign, no leading
//     zero). A key is [A-Za-z0-9_-]{1,64}; a segment is any text without '.', '{', '}', '$' or control characters.
//   - Only string values are templates. A "${" in an object member name is literal text: substituting names could
//     forge or collide members.
//   - A string that is exactly one placeholder takes the value with its JSON type. Inside a longer string a
//     string is interpolated as its text, a number, boolean or null as its JSON text; an object or array there is a
//     *ResolveError with errcode.NotEmbeddable. A missing member, an index out of range, or walking into a scalar is
//     errcode.Unresolvable. Either way the step fails without being sent.
//   - "$${" is always a literal "${", scanning left to right ("$$${A}" is "$" followed by the text "${A}").
//   - In a path, a value is escaped as one segment (url.PathEscape: "a/b" becomes "a%2Fb") or, after the first
//     '?', as a query value (url.QueryEscape). The resolved path is checked again as CheckPath does, except that an
//     encoded '/' or '\' coming from a value is allowed; the parts it separates may still not be "." or "..", and
//     the nested-batch and Config.Blocked checks see them as segments. A refused path is errcode.ResolvedPathRefused.
//   - In a header value, a resolved value with a control character other than tab (CR, LF, NUL, …) is refused
//     (errcode.Unresolvable): a response cannot split or add headers.
//   - Responses are walked tolerantly: with duplicate member names the first one wins, and invalid UTF-8 is
//     replaced by U+FFFD when copied, so a built payload is always valid JSON.
//
// A "payload" (or "body") of null is the same as none. A step's method may not be CONNECT or TRACE.
//
// Opt-in extensions (README "Idempotent retries" to "Step timings"):
//   - "atomic": true sets Plan.Atomic and Plan.StopOnError (atomic wins over an explicit "stop_on_error": false).
//     "timings": true sets Plan.Timings, "dry_run": true Plan.DryRun (README "REST APIs"). They need an object form:
//     a bare array has no batch-level fields.
//   - A step's "rollback": {"method"?, "path", "payload" (or "body")?, "headers"?} is compiled and checked like a
//     step (Step.Rollback). Its placeholders may name the step itself, as ${self.…} or by its key, and the step's
//     direct dependencies (Step.Deps), nothing else: a reference to any other step is ReasonUnknownRef naming the
//     step. A rollback's references add no dependency. ${self.…} outside a rollback is ReasonUnknownRef. A
//     rollback is accepted in any batch; only an atomic batch runs it.
//   - With Config.RequireRollback, an atomic batch is refused (ReasonMissingRollback, one problem per step) when a
//     step other than a GET, HEAD or OPTIONS has no rollback.
package planner

import (
	"net/url"
	"strconv"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/heimdalr/dag"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/jsonscan"
)

// Form is the shape a batch arrived in; the response mirrors it.
type Form uint8

const (
	FormRequests Form = iota // {"requests": [...]}: answered as {"responses": [...]}
	FormBatch                // {"batch": [...]}: answered as {"responses": [...]}
	FormArray                // a bare array: answered as a bare array of results
)

// Config bounds what a plan may hold. The zero value of each field means its default.
type Config struct {
	MaxSteps   int      // most steps in one batch; default 50
	Blocked    []string // method paths a batch may not call, compared case-insensitively without leading "/"; e.g. "Item/Import"
	MaxDepth   int      // deepest JSON nesting accepted; default 64
	MaxPayload int      // largest payload of one step in bytes, as written in the request; default 1 MiB
	// RequireRollback refuses an atomic batch in which a step other than a GET, HEAD or OPTIONS has no rollback
	// (ReasonMissingRollback): such a step could not be undone.
	RequireRollback bool
	// Base is the URL step paths are relative to: the upstream's base URL in proxy mode. A path that is exactly one
	// placeholder takes its value as a URL reference resolved against it, which must stay on its origin and under
	// its path (README "REST APIs"). Without a scheme and host, only references without them are accepted; nil is "/".
	Base *url.URL
}

// Plan is a validated batch. Steps are in request order; Step.Deps index into Steps.
type Plan struct {
	Form        Form
	StopOnError bool // also set by Atomic
	// Atomic is "atomic": true (README "Atomic batches"): stop on error, then undo the steps that succeeded with their
	// Rollback.
	Atomic bool
	// Timings is "timings": true: the answer carries each step's timing and the batch's critical path.
	Timings bool
	// DryRun is "dry_run": true (README "REST APIs"): the batch is validated and planned, and nothing is sent; the
	// answer is the plan.
	DryRun bool
	Steps  []Step
	// graph is the dependency graph of record: every step a vertex, every dependency an edge (Levels, Depth).
	graph      *dag.DAG
	levelsOnce sync.Once
	levels     []int
}

// Levels returns each step's level in the dependency graph, by index: 0 without dependencies, else one more than
// the level of its deepest dependency (steps of one level may run at once). They are read from the graph, in
// topological order, the first time they are asked for; the slice is shared and must not be modified.
func (p *Plan) Levels() []int {
	p.levelsOnce.Do(func() {
		lv := &levelsVisitor{steps: p.Steps, levels: make([]int, len(p.Steps))}
		p.graph.OrderedWalk(lv)
		p.levels = lv.levels
	})
	return p.levels
}

// CriticalPath returns the indices of the steps of a longest dependency chain, first to last: the first step of
// the deepest level in request order, and back from it, at each level the first of its dependencies one level up.
func (p *Plan) CriticalPath() []int {
	levels := p.Levels()
	last := 0
	for i, l := range levels {
		if l > levels[last] {
			last = i
		}
	}
	path := make([]int, levels[last]+1)
	for i := last; ; {
		path[levels[i]] = i
		if levels[i] == 0 {
			return path
		}
		for _, d := range p.Steps[i].Deps {
			if levels[d] == levels[i]-1 {
				i = d
				break
			}
		}
	}
}

// Depth is the number of steps on the longest dependency chain: 1 for a batch of independent steps.
func (p *Plan) Depth() int {
	depth := 0
	for _, l := range p.Levels() {
		depth = max(depth, l+1)
	}
	return depth
}

// Step is one call of a batch.
type Step struct {
	Index  int    // position in the request
	Key    string // unique in the batch
	Method string // HTTP method, upper case; default POST
	// Name is the step's method path with no leading "/" and no query (e.g. "Producer/Add"), for metrics and logs.
	// When the path holds placeholders, Name keeps the placeholders' text.
	Name    string
	Path    *PathTemplate
	Headers []Header        // per-step headers, names canonical (textproto.CanonicalMIMEHeaderKey)
	Body    *JSONTemplate   // nil when the step has no JSON payload
	Text    *StringTemplate // a string payload sent as text (a non-JSON Content-Type); nil otherwise
	// Deps are the indices of every step this one waits for (placeholders and depends_on), ascending, unique.
	Deps []int
	// Reads are the Deps whose responses the step reads (placeholders, for_each, when), ascending; the others are
	// depends_on alone.
	Reads []int
	// Dependents are the indices of the steps that wait for this one, ascending, unique.
	Dependents []int
	// Rollback is the call that undoes this step in an atomic batch; nil when the step has none.
	Rollback *Rollback

	// The REST helpers (README "REST APIs").
	// OKStatus are statuses that count as success besides those under 400 (ascending); the step still reports
	// the status it got.
	OKStatus []int
	// When, when set, is the condition under which the step runs; otherwise it is skipped.
	When *Condition
	// ForEach, when set, makes the step one call per element of a list.
	ForEach *ForEach
	// Capture are the response headers the step's call keeps (canonical, ascending): those its placeholders or
	// another step's read, and CaptureHeaders.
	Capture []string
	// CaptureHeaders are the headers the step asked for in "capture_headers", as written and in the order given:
	// its result carries them under these names.
	CaptureHeaders []string
}

// ForEach is a step's "for_each": one placeholder naming a list in a step's response.
type ForEach struct{ ref ref }

// String returns the placeholder as written.
func (f *ForEach) String() string { return f.ref.text }

// Elements returns the elements of the list, each a JSON value, or a *ResolveError when the placeholder cannot be
// resolved or is not an array. A list of more than max elements (max >= 0; -1 for no limit) is a *TooManyError,
// found before any element is copied.
func (f *ForEach) Elements(r *Responses, max int) ([][]byte, error) {
	v, err := r.value(&f.ref)
	if err != nil {
		return nil, err
	}
	if v[0] != '[' {
		return nil, &ResolveError{Placeholder: f.ref.text, Code: errcode.Unresolvable,
			Detail: `"for_each": ` + f.ref.text + " is a " + kindName(jsontext.Value(v).Kind()) + ", not a list"}
	}
	n := jsonscan.Elements(v, nil)
	if max >= 0 && n > max {
		return nil, &TooManyError{Placeholder: f.ref.text, Count: n, Max: max}
	}
	elems := make([][]byte, 0, n)
	jsonscan.Elements(v, func(e []byte) { elems = append(elems, e) })
	return elems, nil
}

// TooManyError is a for_each list of more elements than the calls a batch may still make.
type TooManyError struct {
	Placeholder string
	Count, Max  int
}

func (e *TooManyError) Error() string {
	return `"for_each": ` + e.Placeholder + " has " + strconv.Itoa(e.Count) + " elements; this batch may make " +
		strconv.Itoa(e.Max) + " more calls"
}

// Rollback is a step's "rollback": a call compiled like a step's own. Its placeholders may name the step itself
// (${self.…}, or its key) and the step's Deps, never another step: when it runs, exactly those responses exist.
type Rollback struct {
	Method  string // HTTP method, upper case; default POST
	Name    string // like Step.Name
	Path    *PathTemplate
	Headers []Header        // its own headers only: a rollback does not inherit the step's
	Body    *JSONTemplate   // nil when the rollback has no JSON payload
	Text    *StringTemplate // a string payload sent as text; nil otherwise
}

// Header is a per-step header whose value may hold placeholders.
type Header struct {
	Name  string
	Value StringTemplate
}

// Resolve returns the header's value resolved, as StringTemplate.Resolve does, a *TooLargeError naming the header.
func (h *Header) Resolve(r *Responses, limit int) (string, error) {
	v, err := h.Value.Resolve(r, limit)
	if tl, ok := err.(*TooLargeError); ok {
		tl.Part = "header " + quote(h.Name)
	}
	return v, err
}

// Problem is one reason a batch was refused.
type Problem struct {
	Key    string // the step's key, or "#i" when the step at index i has no usable key; "" for the batch as a whole
	Reason Reason
	Detail string // human-readable, names the field, placeholder or steps involved
}

// Reason classifies a Problem; it is bounded and used as a metrics label.
type Reason string

const (
	ReasonInvalidJSON   Reason = "invalid_json" // malformed JSON, duplicate member, too deep, wrong type, unknown field
	ReasonNoSteps       Reason = "no_steps"
	ReasonTooManySteps  Reason = "too_many_steps"
	ReasonInvalidKey    Reason = "invalid_key"    // missing, malformed or duplicate key
	ReasonInvalidPath   Reason = "invalid_path"   // missing or refused path
	ReasonBlocked       Reason = "blocked"        // a blocked method
	ReasonNestedBatch   Reason = "nested_batch"   // a path naming the batch endpoint
	ReasonInvalidHeader Reason = "invalid_header" // refused header name or value
	ReasonPlaceholder   Reason = "placeholder"    // malformed placeholder
	ReasonUnknownRef    Reason = "unknown_ref"    // a reference or depends_on naming no step it may name
	ReasonSelfRef       Reason = "self_ref"
	ReasonCycle         Reason = "cycle"
	ReasonTooLarge      Reason = "too_large"      // a step's payload over MaxPayload
	ReasonInvalidMethod Reason = "invalid_method" // a method that is not an HTTP token, or CONNECT or TRACE
	// ReasonMissingRollback: with Config.RequireRollback, a step of an atomic batch that has no rollback.
	ReasonMissingRollback Reason = "missing_rollback"
	// ReasonInvalidCondition: a "when" that cannot be read (README "REST APIs").
	ReasonInvalidCondition Reason = "invalid_when"
	// ReasonInvalidForEach: a "for_each" that is not one placeholder naming a step's response.
	ReasonInvalidForEach Reason = "invalid_for_each"
)

// Reasons returns every Reason a refusal may carry, for a bounded metrics label set.
func Reasons() []Reason {
	return []Reason{ReasonInvalidJSON, ReasonNoSteps, ReasonTooManySteps, ReasonInvalidKey, ReasonInvalidPath,
		ReasonBlocked, ReasonNestedBatch, ReasonInvalidHeader, ReasonPlaceholder, ReasonUnknownRef, ReasonSelfRef,
		ReasonCycle, ReasonTooLarge, ReasonInvalidMethod, ReasonMissingRollback, ReasonInvalidCondition,
		ReasonInvalidForEach}
}

// Error is the refusal of a batch: every problem found, in request order of the steps.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return "planner: batch refused"
	}
	s := "planner: "
	if k := e.Problems[0].Key; k != "" {
		s += "step " + k + ": "
	}
	s += e.Problems[0].Detail
	if n := len(e.Problems) - 1; n > 0 {
		s += " (and more)"
	}
	return s
}

// ResolveError is a step's placeholder that could not be resolved at run time. The step fails with 424 without
// being sent.
type ResolveError struct {
	Placeholder string // as written, e.g. "${A.result.0.id}"
	Code        errcode.Code
	Detail      string
}

func (e *ResolveError) Error() string { return e.Detail }

package planner

import (
	"slices"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/jsonscan"
)

// ref is a compiled placeholder. step is filled in once every key of the batch is known (a reference may name a
// later step), before the Plan is published; after that a ref is read-only. It is the index of the step named, or
// refItem or refIndex for a fan-out call's ${item…} and ${index}.
type ref struct {
	refSpec
	step int
}

const (
	refItem  = -2
	refIndex = -3
)

// part is one run of a text template: literal text followed by an optional reference.
type part struct {
	lit   string // JSON templates: JSON-escaped string content; header and path templates: plain text
	ref   int32  // index into the template's refs, -1 for none
	query bool   // path templates: the reference stands in the query, so it is query-escaped
}

// JSONTemplate is a compiled payload: the payload's raw JSON, and the string values that hold placeholders
// ("holes"). Resolving copies the JSON between the holes as it stands and writes each hole's value; it never
// parses the payload again.
type JSONTemplate struct {
	raw   string
	holes []hole // in the order they stand in raw
	refs  []ref  // every placeholder of every hole
}

// hole is a string value of a payload that holds placeholders: raw[start:end], quotes included.
type hole struct {
	start, end int
	// whole >= 0: the string is exactly placeholder refs[whole], replaced by its value with its JSON type.
	whole int
	// Otherwise the string is built from parts: literal text, JSON-escaped, and the placeholders' values as text.
	parts []part
}

// Static reports whether the payload holds no placeholder; Append then ignores r.
func (t *JSONTemplate) Static() bool { return len(t.holes) == 0 }

// String returns the payload when it is static, and otherwise a JSON rendering of the template in which each
// placeholder appears as written. It is meant for logs and tests.
func (t *JSONTemplate) String() string {
	var b []byte
	last := 0
	for _, h := range t.holes {
		b = append(b, t.raw[last:h.start]...)
		last = h.end
		if h.whole >= 0 {
			b = jsonscan.AppendString(b, t.refs[h.whole].text)
			continue
		}
		b = append(b, '"')
		for _, p := range h.parts {
			b = append(b, p.lit...)
			if p.ref >= 0 {
				b = jsonscan.AppendStringContent(b, t.refs[p.ref].text)
			}
		}
		b = append(b, '"')
	}
	return string(append(b, t.raw[last:]...))
}

// compileJSON compiles a payload: each string value that holds "${" (once unescaped, as decode noted them) is split
// into literal text and placeholders. A malformed placeholder is reported, and the well-formed ones around it are
// still compiled so that their references are checked too. A string that holds only $${ escapes is rewritten once,
// here.
func compileJSON(p *payloadDraft, t *JSONTemplate) (problems []string) {
	*t = JSONTemplate{raw: p.raw}
	for _, s := range p.strings {
		pieces, perrs := splitTemplate(nil, s.text)
		problems = append(problems, perrs...)
		h := hole{start: s.start, end: s.end, whole: -1}
		switch {
		case len(pieces) == 1 && pieces[0].isRef:
			h.whole = len(t.refs)
			t.refs = append(t.refs, ref{refSpec: pieces[0].ref})
		default:
			h.parts = textParts(pieces, &t.refs, true, false)
		}
		t.holes = append(t.holes, h)
	}
	if len(t.refs) == 0 && len(t.holes) > 0 {
		// Only $${ escapes: the payload is static once they are written as ${.
		*t = JSONTemplate{raw: t.String()}
	}
	return problems
}

// Append appends the resolved payload JSON to dst, with no limit on its size. A placeholder that cannot be
// resolved yields a *ResolveError; dst is then returned with its original length.
func (t *JSONTemplate) Append(dst []byte, r *Responses) ([]byte, error) {
	if len(t.holes) == 0 {
		return append(dst, t.raw...), nil
	}
	var inline [8][]byte
	vals := refValues(inline[:], len(t.refs))
	size, err := t.lookup(r, vals)
	if err != nil {
		return dst, err
	}
	return t.build(slices.Grow(dst, size), vals), nil
}

// refValues returns room for the values of n references: inline when it is large enough (most templates hold a
// few placeholders), else a slice of its own.
func refValues(inline [][]byte, n int) [][]byte {
	if n <= len(inline) {
		return inline[:n]
	}
	return make([][]byte, n)
}

// Resolve returns the resolved payload in a buffer of its own. Its exact size is known before anything is copied:
// a payload over limit bytes (0: no limit) is a *TooLargeError, and reserve (optional) is asked for the size
// first, its error returned as it is; either way nothing was copied. A placeholder that cannot be resolved yields a
// *ResolveError.
func (t *JSONTemplate) Resolve(r *Responses, limit int64, reserve func(int64) error) ([]byte, error) {
	var inline [8][]byte
	vals := refValues(inline[:], len(t.refs))
	size := len(t.raw)
	if len(t.holes) > 0 {
		var err error
		if size, err = t.lookup(r, vals); err != nil {
			return nil, err
		}
	}
	if limit > 0 && int64(size) > limit {
		return nil, &TooLargeError{Part: "body", Size: int64(size), Limit: limit}
	}
	if reserve != nil {
		if err := reserve(int64(size)); err != nil {
			return nil, err
		}
	}
	return t.build(make([]byte, 0, size), vals), nil
}

// lookup reads the value of every reference into vals (by the reference's index) and returns the resolved
// payload's size.
func (t *JSONTemplate) lookup(r *Responses, vals [][]byte) (int, error) {
	size := len(t.raw)
	for k := range t.holes {
		h := &t.holes[k]
		size -= h.end - h.start
		if h.whole >= 0 {
			v, err := r.value(&t.refs[h.whole])
			if err != nil {
				return 0, err
			}
			vals[h.whole] = v
			size += len(v)
			continue
		}
		size += 2 // the quotes
		for _, p := range h.parts {
			size += len(p.lit)
			if p.ref < 0 {
				continue
			}
			rf := &t.refs[p.ref]
			v, err := r.value(rf)
			if err != nil {
				return 0, err
			}
			switch v[0] {
			case '"':
				v = v[1 : len(v)-1] // the inside of a valid JSON string is valid inside another one, as it stands
			case '{', '[':
				return 0, notEmbeddable(rf, v)
			}
			vals[p.ref] = v
			size += len(v)
		}
	}
	return size, nil
}

// build appends the payload to dst, the references' values read by lookup.
func (t *JSONTemplate) build(dst []byte, vals [][]byte) []byte {
	last := 0
	for k := range t.holes {
		h := &t.holes[k]
		dst = append(dst, t.raw[last:h.start]...)
		last = h.end
		if h.whole >= 0 {
			dst = append(dst, vals[h.whole]...)
			continue
		}
		dst = append(dst, '"')
		for _, p := range h.parts {
			dst = append(dst, p.lit...)
			if p.ref >= 0 {
				dst = append(dst, vals[p.ref]...)
			}
		}
		dst = append(dst, '"')
	}
	return append(dst, t.raw[last:]...)
}

// TooLargeError is a call that would be over a cap once resolved (README "Limits and guarantees"): the step fails
// unsent, with 413 naming the part, its size and the cap.
type TooLargeError struct {
	Part  string // "path", "header \"X-Token\"", "body"
	Size  int64  // the resolved size, or at least this much when AtLeast
	Limit int64
	// AtLeast: resolving stopped as soon as the part was sure to be over the cap, so Size is a lower bound.
	AtLeast bool
}

func (e *TooLargeError) Error() string {
	size := strconv.FormatInt(e.Size, 10)
	if e.AtLeast {
		size = "at least " + size
	}
	return e.Part + " is " + size + " bytes once its placeholders are resolved; at most " +
		strconv.FormatInt(e.Limit, 10) + " allowed"
}

// compileHeader compiles a header value; problems are returned as (reason, detail) pairs.
func compileHeader(name, value string) (t StringTemplate, reasons []Reason, details []string) {
	if !hasTemplate(value) {
		if badHeaderByte(value) >= 0 {
			return t, []Reason{ReasonInvalidHeader}, []string{"header " + quote(name) + ": value contains a control character (CR, LF, NUL, …)"}
		}
		return StringTemplate{text: value}, nil, nil
	}
	pieces, perrs := splitTemplate(nil, value)
	for _, e := range perrs {
		reasons = append(reasons, ReasonPlaceholder)
		details = append(details, "header "+quote(name)+": "+e)
	}
	for _, p := range pieces {
		if !p.isRef && badHeaderByte(p.lit) >= 0 {
			reasons = append(reasons, ReasonInvalidHeader)
			details = append(details, "header "+quote(name)+": value contains a control character (CR, LF, NUL, …)")
			break
		}
	}
	if reasons != nil {
		// Keep the well-formed references so that they are checked too; the batch is refused anyway.
		t.parts = textParts(pieces, &t.refs, false, false)
		return t, reasons, details
	}
	if !anyRef(pieces) {
		return StringTemplate{text: literalText(pieces, "")}, nil, nil
	}
	t.text = value
	t.parts = textParts(pieces, &t.refs, false, false)
	return t, nil, nil
}

func anyRef(pieces []piece) bool {
	for _, p := range pieces {
		if p.isRef {
			return true
		}
	}
	return false
}

// textParts turns pieces into parts, appending their references to refs. Literals are JSON-escaped when jsonEsc
// (the parts then build the inside of a JSON string). When path is set, a reference after the first literal '?'
// is marked as standing in the query.
func textParts(pieces []piece, refs *[]ref, jsonEsc, path bool) []part {
	parts := make([]part, 0, len(pieces))
	var acc []byte
	inQuery := false
	for _, p := range pieces {
		if !p.isRef {
			if jsonEsc {
				acc = jsonscan.AppendStringContent(acc, p.lit)
			} else {
				acc = append(acc, p.lit...)
			}
			if path && strings.IndexByte(p.lit, '?') >= 0 {
				inQuery = true
			}
			continue
		}
		parts = append(parts, part{lit: string(acc), ref: int32(len(*refs)), query: inQuery})
		*refs = append(*refs, ref{refSpec: p.ref})
		acc = acc[:0]
	}
	if len(acc) > 0 {
		parts = append(parts, part{lit: string(acc), ref: -1})
	}
	return parts
}

// literalText joins the literal pieces, with each reference replaced by stand (nothing, or a dummy segment for
// checking a templated path's literal parts at plan time).
func literalText(pieces []piece, stand string) string {
	var b strings.Builder
	for _, p := range pieces {
		if p.isRef {
			b.WriteString(stand)
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// StringTemplate is a compiled header value, or a payload sent as text.
type StringTemplate struct {
	text  string // the value when static; otherwise the value as written
	parts []part // nil when static
	refs  []ref
	body  bool // a text payload: any character may stand in it, and its cap is the body's
}

// Static reports whether the value holds no placeholder.
func (t *StringTemplate) Static() bool { return t.parts == nil }

// String returns the value as written (placeholders included), with any $${ escape already applied when static.
func (t *StringTemplate) String() string { return t.text }

// Resolve returns the header value with its placeholders interpolated as text; a value over limit bytes (0: no
// limit) is a *TooLargeError (Header.Resolve names the header in it). A resolved value that contains a control
// character other than tab (CR, LF, NUL, …) is refused with a *ResolveError (errcode.Unresolvable): a response must not
// be able to split or smuggle headers.
func (t *StringTemplate) Resolve(r *Responses, limit int) (string, error) {
	if t.parts == nil {
		return t.text, nil
	}
	room := -1 // appendText's limit: none
	if limit > 0 {
		room = limit
	}
	b := make([]byte, 0, len(t.text)+16)
	for _, p := range t.parts {
		b = append(b, p.lit...)
		if p.ref < 0 {
			continue
		}
		rf := &t.refs[p.ref]
		at := len(b)
		var err error
		if b, err = appendText(b, rf, r, room); err != nil {
			if tl, ok := err.(*TooLargeError); ok {
				tl.Part = t.part()
			}
			return "", err
		}
		if !t.body && badHeaderByte(b[at:]) >= 0 {
			return "", &ResolveError{
				Placeholder: rf.text,
				Code:        errcode.Unresolvable,
				Detail:      "placeholder " + rf.text + " resolved to a header value with a control character",
			}
		}
	}
	if limit > 0 && len(b) > limit {
		return "", &TooLargeError{Part: t.part(), Size: int64(len(b)), Limit: int64(limit)}
	}
	return string(b), nil
}

// part names the template in a *TooLargeError.
func (t *StringTemplate) part() string {
	if t.body {
		return "body"
	}
	return "header"
}

// compileText compiles a payload sent as text: placeholders are interpolated as text, and "$${" is a literal "${".
func compileText(value string) (t StringTemplate, problems []string) {
	t.body = true
	if !hasTemplate(value) {
		t.text = value
		return t, nil
	}
	pieces, perrs := splitTemplate(nil, value)
	if !anyRef(pieces) && perrs == nil {
		t.text = literalText(pieces, "")
		return t, nil
	}
	t.text = value
	t.parts = textParts(pieces, &t.refs, false, false)
	return t, perrs
}

func notEmbeddable(rf *ref, v []byte) *ResolveError {
	kind := "an object"
	if len(v) > 0 && v[0] == '[' {
		kind = "an array"
	}
	return &ResolveError{
		Placeholder: rf.text,
		Code:        errcode.NotEmbeddable,
		Detail: "placeholder " + rf.text + " is " + kind +
			"; only a string, number, boolean or null can be embedded in a longer string",
	}
}

// appendText appends the value rf names as text: a string unquoted, a number, boolean or null as its JSON text.
// With a limit (negative: none), a text that cannot fit in limit bytes together with dst is a *TooLargeError (of no
// part yet: the caller names it) before it is unquoted: a JSON string of n bytes unquotes to at least (n-2)/6 bytes.
func appendText(dst []byte, rf *ref, r *Responses, limit int) ([]byte, error) {
	v, err := r.value(rf)
	if err != nil {
		return dst, err
	}
	switch v[0] {
	case '"':
		if least := len(dst) + (len(v)-2)/6; limit >= 0 && least > limit {
			return dst, &TooLargeError{Size: int64(least), Limit: int64(limit), AtLeast: true}
		}
		// Invalid UTF-8 is replaced; AppendUnquote reports it, which is not a reason to fail here.
		dst, _ = jsontext.AppendUnquote(dst, v)
		return dst, nil
	case '{', '[':
		return dst, notEmbeddable(rf, v)
	}
	return append(dst, v...), nil
}

func unresolvable(rf *ref, why string) *ResolveError {
	return &ResolveError{Placeholder: rf.text, Code: errcode.Unresolvable, Detail: "placeholder " + rf.text + ": " + why}
}

func badResponse(rf *ref) *ResolveError {
	return unresolvable(rf, "the response of step "+quote(rf.key)+" is not valid JSON")
}

// at names where a walk failed: "" at the top of the response, otherwise the segments walked so far.
func at(rf *ref, walked int) string {
	if walked == 0 {
		return " at the top of the response of step " + quote(rf.key)
	}
	return " at " + quote(rf.key+"."+rf.path[:walked-1])
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "invalid value"
}

// badHeaderByte returns the index of the first byte a header value may not hold (a control character other than
// tab), or -1. net/http would refuse such a value at send time; refusing it here names the culprit.
func badHeaderByte[T ~string | ~[]byte](b T) int {
	for i := 0; i < len(b); i++ {
		if c := b[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}

func quote(s string) string { return strconv.Quote(s) }

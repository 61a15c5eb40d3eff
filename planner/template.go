package planner

import (
	"bytes"
	"strconv"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/errcode"
)

// ref is a compiled placeholder. step is filled in once every key of the batch is known (a reference may name a
// later step), before the Plan is published; after that a ref is read-only.
type ref struct {
	refSpec
	step int
}

// part is one run of a text template: literal text followed by an optional reference.
type part struct {
	lit   string // JSON templates: JSON-escaped string content; header and path templates: plain text
	ref   int32  // index into the template's refs, -1 for none
	query bool   // path templates: the reference stands in the query, so it is query-escaped
}

// JSONTemplate is a compiled payload: the payload's raw JSON with holes where a string value holds placeholders.
// Resolving appends literal chunks and the referenced values; it never re-parses the payload.
type JSONTemplate struct {
	raw   string     // static: the whole payload; otherwise unused
	holes *jsonHoles // nil when static
}

// jsonHoles is what a templated payload holds besides its text. It stands apart so that a static payload, the
// common case, takes 24 bytes in a Plan rather than 64.
type jsonHoles struct {
	segs []jseg
	refs []ref
}

// refList returns the payload's references, nil when it is static.
func (t *JSONTemplate) refList() []ref {
	if t.holes == nil {
		return nil
	}
	return t.holes.refs
}

// jseg is a literal chunk of JSON followed by at most one hole.
type jseg struct {
	lit string
	// ref >= 0: the hole is a whole-string placeholder, replaced by the referenced JSON value with its type.
	ref int32
	// text != nil: the hole is a string with embedded placeholders, built as one JSON string.
	text []part
}

// Static reports whether the payload holds no placeholder; Append then ignores r.
func (t *JSONTemplate) Static() bool { return t.holes == nil }

// String returns the payload when it is static, and otherwise a JSON rendering of the template in which each
// placeholder appears as written. It is meant for logs and tests.
func (t *JSONTemplate) String() string {
	if t.holes == nil {
		return t.raw
	}
	var b []byte
	for _, s := range t.holes.segs {
		b = append(b, s.lit...)
		switch {
		case s.ref >= 0:
			b = appendJSONText(b, t.holes.refs[s.ref].text, true)
		case s.text != nil:
			b = append(b, '"')
			for _, p := range s.text {
				b = append(b, p.lit...)
				if p.ref >= 0 {
					b = appendJSONText(b, t.holes.refs[p.ref].text, false)
				}
			}
			b = append(b, '"')
		}
	}
	return string(b)
}

// Append appends the resolved payload JSON to dst. A placeholder that cannot be resolved yields a *ResolveError;
// dst is then returned with its original length.
func (t *JSONTemplate) Append(dst []byte, r Responses) ([]byte, error) {
	if t.holes == nil {
		return append(dst, t.raw...), nil
	}
	start := len(dst)
	var w walker
	segs, refs := t.holes.segs, t.holes.refs
	for i := range segs {
		s := &segs[i]
		dst = append(dst, s.lit...)
		switch {
		case s.ref >= 0:
			rf := &refs[s.ref]
			v, err := w.lookup(rf, r)
			if err != nil {
				return dst[:start], err
			}
			dst = appendValidUTF8(dst, v)
		case s.text != nil:
			dst = append(dst, '"')
			for _, p := range s.text {
				dst = append(dst, p.lit...)
				if p.ref < 0 {
					continue
				}
				rf := &refs[p.ref]
				v, err := w.lookup(rf, r)
				if err != nil {
					return dst[:start], err
				}
				switch v.Kind() {
				case '"':
					// The inside of a valid JSON string is valid inside another one: copy it still escaped.
					dst = appendValidUTF8(dst, v[1:len(v)-1])
				case '{', '[':
					return dst[:start], notEmbeddable(rf, v)
				default:
					dst = append(dst, v...)
				}
			}
			dst = append(dst, '"')
		}
	}
	return dst, nil
}

// StringTemplate is a compiled header value.
type StringTemplate struct {
	text  string // the value when static; otherwise the value as written
	parts []part // nil when static
	refs  []ref
}

// Static reports whether the value holds no placeholder.
func (t *StringTemplate) Static() bool { return t.parts == nil }

// String returns the value as written (placeholders included), with any $${ escape already applied when static.
func (t *StringTemplate) String() string { return t.text }

// Resolve returns the header value with its placeholders interpolated as text. A resolved value that contains a
// control character other than tab (CR, LF, NUL, …) is refused with a *ResolveError (errcode.Unresolvable): a
// response must not be able to split or smuggle headers.
func (t *StringTemplate) Resolve(r Responses) (string, error) {
	if t.parts == nil {
		return t.text, nil
	}
	var w walker
	b := make([]byte, 0, len(t.text)+16)
	for _, p := range t.parts {
		b = append(b, p.lit...)
		if p.ref < 0 {
			continue
		}
		rf := &t.refs[p.ref]
		at := len(b)
		var err error
		if b, err = w.appendText(b, rf, r); err != nil {
			return "", err
		}
		if badHeaderByte(b[at:]) >= 0 {
			return "", &ResolveError{
				Placeholder: rf.text,
				Code:        errcode.Unresolvable,
				Detail:      "placeholder " + rf.text + " resolved to a header value with a control character",
			}
		}
	}
	return string(b), nil
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
func (w *walker) appendText(dst []byte, rf *ref, r Responses) ([]byte, error) {
	v, rerr := w.lookup(rf, r)
	if rerr != nil {
		return dst, rerr
	}
	switch v.Kind() {
	case '"':
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

// appendValidUTF8 appends b, replacing invalid UTF-8 (which a tolerant walk may return from an upstream response)
// so that a built payload is always valid JSON. In valid JSON syntax such bytes can only sit inside strings.
func appendValidUTF8(dst, b []byte) []byte {
	if utf8.Valid(b) {
		return append(dst, b...)
	}
	return append(dst, bytes.ToValidUTF8(b, []byte("\uFFFD"))...)
}

// appendJSONText appends s JSON-escaped, with surrounding quotes when quoted is set.
func appendJSONText(dst []byte, s string, quoted bool) []byte {
	const hex = "0123456789abcdef"
	if quoted {
		dst = append(dst, '"')
	}
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, s[last:i]...)
				dst = append(dst, `\ufffd`...)
				i++
				last = i
				continue
			}
			i += n
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[last:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		last = i
	}
	dst = append(dst, s[last:]...)
	if quoted {
		dst = append(dst, '"')
	}
	return dst
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

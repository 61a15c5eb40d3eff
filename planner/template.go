package planner

import (
	"bytes"
	"strconv"
	"strings"
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
	raw  string // static: the whole payload; otherwise unused
	segs []jseg // nil when static
	refs []ref
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
func (t *JSONTemplate) Static() bool { return t.segs == nil }

// String returns the payload when it is static, and otherwise a JSON rendering of the template in which each
// placeholder appears as written. It is meant for logs and tests.
func (t *JSONTemplate) String() string {
	if t.segs == nil {
		return t.raw
	}
	var b []byte
	for _, s := range t.segs {
		b = append(b, s.lit...)
		switch {
		case s.ref >= 0:
			b = appendJSONText(b, t.refs[s.ref].text, true)
		case s.text != nil:
			b = append(b, '"')
			for _, p := range s.text {
				b = append(b, p.lit...)
				if p.ref >= 0 {
					b = appendJSONText(b, t.refs[p.ref].text, false)
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
	if t.segs == nil {
		return append(dst, t.raw...), nil
	}
	start := len(dst)
	var w walker
	for i := range t.segs {
		s := &t.segs[i]
		dst = append(dst, s.lit...)
		switch {
		case s.ref >= 0:
			rf := &t.refs[s.ref]
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
				rf := &t.refs[p.ref]
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

// walker finds a referenced value in a step's response. One walker serves every placeholder of one resolution, so
// its decoder's buffers are reused.
type walker struct {
	bb      bytes.Buffer
	dec     jsontext.Decoder
	opts    [2]jsontext.Options // held here so that each Reset does not allocate its variadic slice
	scratch []byte
}

// lookup returns the raw JSON value that rf names, walking the response with a streaming decoder and skipping
// whatever is not on the path. Responses are the upstream's: duplicate member names (the first one wins) and
// invalid UTF-8 (repaired when copied) are tolerated rather than failing a step for a field it never asked about.
func (w *walker) lookup(rf *ref, r Responses) (jsontext.Value, *ResolveError) {
	var body []byte
	if r != nil {
		body = r.Response(rf.step)
	}
	if len(body) == 0 {
		return nil, unresolvable(rf, "step "+quote(rf.key)+" has no response")
	}
	w.bb = *bytes.NewBuffer(body)
	if w.opts[0] == nil {
		w.opts = [2]jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}
	}
	w.dec.Reset(&w.bb, w.opts[:]...)
	d := &w.dec
	rest := rf.path
	walked := 0 // length of rf.path already walked, for messages
	for rest != "" {
		seg, tail, _ := strings.Cut(rest, ".")
		switch d.PeekKind() {
		case '{':
			if _, err := d.ReadToken(); err != nil {
				return nil, badResponse(rf)
			}
			found := false
			for d.PeekKind() == '"' {
				name, err := d.ReadValue()
				if err != nil {
					return nil, badResponse(rf)
				}
				if w.nameIs(name, seg) {
					found = true
					break
				}
				if d.SkipValue() != nil {
					return nil, badResponse(rf)
				}
			}
			if !found {
				if d.PeekKind() != '}' {
					return nil, badResponse(rf)
				}
				return nil, unresolvable(rf, "no member "+quote(seg)+at(rf, walked))
			}
		case '[':
			idx, ok := arrayIndex(seg)
			if !ok {
				return nil, unresolvable(rf, quote(seg)+" is not an array index"+at(rf, walked))
			}
			if _, err := d.ReadToken(); err != nil {
				return nil, badResponse(rf)
			}
			for n := 0; ; n++ {
				k := d.PeekKind()
				if k == ']' {
					return nil, unresolvable(rf, "index "+seg+" out of range (length "+strconv.Itoa(n)+")"+at(rf, walked))
				}
				if k == jsontext.KindInvalid {
					return nil, badResponse(rf)
				}
				if n == idx {
					break
				}
				if d.SkipValue() != nil {
					return nil, badResponse(rf)
				}
			}
		case jsontext.KindInvalid:
			return nil, badResponse(rf)
		default:
			return nil, unresolvable(rf, "cannot take "+quote(seg)+" of a "+kindName(d.PeekKind())+at(rf, walked))
		}
		walked += len(seg) + 1
		rest = tail
	}
	v, err := d.ReadValue()
	if err != nil {
		return nil, badResponse(rf)
	}
	return v, nil
}

// nameIs compares a raw (quoted) member name with seg, unescaping only when the name holds an escape.
func (w *walker) nameIs(raw []byte, seg string) bool {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == seg
	}
	var err error
	w.scratch, err = jsontext.AppendUnquote(w.scratch[:0], raw)
	return err == nil && string(w.scratch) == seg
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

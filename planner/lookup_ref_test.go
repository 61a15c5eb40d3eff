package planner

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/jsonscan"
)

// jsontextWalker is the lookup walk batchd used before the hand-written scanner (scan.go): a jsontext.Decoder
// with duplicate names and invalid UTF-8 allowed. It is kept as the reference that FuzzLookupEquivalence holds the
// scanner to.
type jsontextWalker struct {
	bb      bytes.Buffer
	dec     jsontext.Decoder
	opts    [2]jsontext.Options // held here so that each Reset does not allocate its variadic slice
	scratch []byte
}

// lookup returns the raw JSON value that rf names, walking the response with a streaming decoder and skipping
// whatever is not on the path. Responses are the upstream's: duplicate member names (the first one wins) and
// invalid UTF-8 (repaired when copied) are tolerated rather than failing a step for a field it never asked about.
func (w *jsontextWalker) lookup(rf *ref, body []byte) (jsontext.Value, *ResolveError) {
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
			idx, ok := jsonscan.ArrayIndex(seg)
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
func (w *jsontextWalker) nameIs(raw []byte, seg string) bool {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == seg
	}
	var err error
	w.scratch, err = jsontext.AppendUnquote(w.scratch[:0], raw)
	return err == nil && string(w.scratch) == seg
}

// lookupCases are responses and paths for the equivalence checks: valid and broken JSON, escapes, duplicates,
// invalid UTF-8, and every way a walk ends.
var lookupCases = []struct{ response, path string }{
	{`{"ok":true,"result":{"new_id":4,"name":"Coca-Cola","last_update":1758289402},"total":1}`, "result.new_id"},
	{`{"ok":true,"result":{"new_id":4,"name":"Coca-Cola"},"total":1}`, "result.name"},
	{`{"ok":true,"result":{"new_id":4,"name":"Coca-Cola"},"total":1}`, "total"},
	{`{"ok":true,"result":{"new_id":4,"name":"Coca-Cola"},"total":1}`, ""},
	{` [1, "s", {"o":1}] `, "2.o"},
	{`[1, "s", {"o":1}]`, "3"},
	{`[1, "s", {"o":1}]`, "x"},
	{`[]`, "0"},
	{`[ ]`, "1"},
	{`{"x":1,"x":2}`, "x"},
	{"{\"s\":\"a\xffb\",\"k\\u00e9\":3}", "k\u00e9"},
	{"{\"s\":\"a\xffb\",\"k\\u00e9\":3}", "s"},
	{`{"\ud83d\ude00":1}`, "\U0001F600"},
	{`{"\ud83d":1,"\ud83d\u0041":2}`, "\uFFFD"},
	{`{"a\/b":1,"a\"b":2,"\t\n":3}`, "a/b"},
	{`{"a\/b":1,"a\"b":2}`, `a"b`},
	{`{"x":"\ud800"}`, "x"},
	{`{"x":"\u12"}`, "x"},
	{`{"x":"\q"}`, "x"},
	{"{\"x\":\"a\x01\"}", "x"},
	{`{"x":`, "x"},
	{`{"y":1,`, "x"},
	{`[`, "0"},
	{`{"x"}`, "x"},
	{`{"x"}`, "x.y"},
	{`{"x":}`, "x.y"},
	{`{"x":]`, "x.y"},
	{`]`, "x"},
	{`[}`, "0.a"},
	{`[}`, "0"},
	{`[1,]`, "1"},
	{`[1,}`, "1"},
	{`[1,]`, "2"},
	{`[1 2]`, "1"},
	{`{"a":1 "b":2}`, "b"},
	{`{"a":1,}`, "b"},
	{`{"a":1,"b"`, "b"},
	{`{,}`, "a"},
	{`{]`, "a"},
	{`{"a":01}`, "a"},
	{`{"a":1x}`, "a"},
	{`{"a":1x,"b":2}`, "b"},
	{`{"a":-}`, "a"},
	{`{"a":1.}`, "a"},
	{`{"a":1.5e+3}`, "a"},
	{`{"a":1e}`, "a"},
	{`{"a":trux}`, "a"},
	{`{"a":truex}`, "a"},
	{`{"a":tru}`, "a.b"},
	{`{"a":x}`, "a.b"},
	{`{"a":[1,{"b":[true,false,null]},"x"],"b":5}`, "b"},
	{`{"a":[1,{"b":[true,false,null}},"x"],"b":5}`, "b"},
	{`{"a":{"b":[}]},"b":5}`, "b"},
	{"  ", ""},
	{"  ", "a"},
	{"1 2", ""},
	{`"s"`, "0"},
	{`null`, "a"},
	{`-1`, "a"},
	{`{"a":1}x`, "a"},
	{`{"a":1}`, "a.b.c"},
	{strings.Repeat("[", 10000) + strings.Repeat("]", 10000), ""},
	{strings.Repeat("[", 10001) + strings.Repeat("]", 10001), ""},
	{`{"a":1,"b":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `,"c":2}`, "c"},
	{`{"a":1,"b":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `,"c":2}`, "c"},
	{strings.Repeat(`{"a":`, 9999) + "[1]" + strings.Repeat("}", 9999), strings.TrimSuffix(strings.Repeat("a.", 9999), ".")},
	{strings.Repeat(`{"a":`, 10000) + "[1]" + strings.Repeat("}", 10000), strings.TrimSuffix(strings.Repeat("a.", 10000), ".")},
	{strings.Repeat(`[`, 200) + `{"x":[1,2,{"y":3}]}` + strings.Repeat(`]`, 200) + `]`, "0"},
	{`[` + strings.Repeat(`[`, 200) + `{"x":[1,2,{"y":3}]}` + strings.Repeat(`]`, 200) + `,7]`, "1"},
	{`[` + strings.Repeat(`[{"a":`, 100) + `0` + strings.Repeat(`}]`, 100) + `,7]`, "1"},
	{`[` + strings.Repeat(`[{"a":`, 100) + `0` + strings.Repeat(`]}`, 100) + `,7]`, "1"},
	{`[0,0}`, "2.0"}, // found by FuzzLookupEquivalence: broken JSON, both fail, with other words
}

// checkLookupSame fails unless the scanner and the decoder walk give the same value or the same error.
func checkLookupSame(t *testing.T, response []byte, path string) {
	text := "${A}"
	if path != "" {
		text = "${A." + path + "}"
	}
	spec, _, msg := scanPlaceholder(text, 0)
	if msg != "" || spec.text != text {
		return // not a placeholder Parse would accept
	}
	rf := &ref{refSpec: spec}
	var old jsontextWalker
	got, err := byteResponses{0: response}.all().value(rf)
	want, werr := old.lookup(rf, response)
	// The index reads a response repaired to valid UTF-8, and scans each object or array it walks through whole:
	// on a response that is not valid JSON (never seen in practice: invokers normalise every body to JSON) it may
	// fail where the decoder, which stops at the value it wants, did not.
	want = bytes.ToValidUTF8(want, []byte("\uFFFD"))
	var gerr *ResolveError
	if err != nil {
		require.ErrorAs(t, err, &gerr)
	}
	valid := jsontext.Value(response).IsValid(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	switch {
	case gerr != nil && werr == nil && !valid:
	case (gerr == nil) != (werr == nil):
		t.Fatalf("response %q path %q: scanner %q, %v; decoder %q, %v", response, path, got, gerr, want, werr)
	case gerr != nil && *gerr != *werr && (valid || gerr.Code != werr.Code || gerr.Placeholder != werr.Placeholder):
		// On a response that is not JSON (never seen in practice: invokers normalise every body to JSON) the two
		// may say differently where it broke; the step fails alike.
		t.Fatalf("response %q path %q: scanner error %q, decoder error %q", response, path, gerr.Detail, werr.Detail)
	case !bytes.Equal(got, want):
		t.Fatalf("response %q path %q: scanner %q, decoder %q", response, path, got, want)
	}
}

func TestLookupEquivalence(t *testing.T) {
	for _, c := range lookupCases {
		checkLookupSame(t, []byte(c.response), c.path)
	}
	for _, s := range seedBodies {
		for _, path := range []string{"", "0", "0.key", "requests.1.payload.ids.0", "batch.1", "stop_on_error"} {
			checkLookupSame(t, []byte(s), path)
		}
	}
}

// FuzzLookupEquivalence holds the scanner to the decoder walk it replaced, on any response and path.
func FuzzLookupEquivalence(f *testing.F) {
	for _, c := range lookupCases {
		if len(c.response) < 1000 {
			f.Add([]byte(c.response), c.path)
		}
	}
	f.Fuzz(func(t *testing.T, response []byte, path string) {
		checkLookupSame(t, response, path)
	})
}

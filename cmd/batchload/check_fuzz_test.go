package main

import (
	"bytes"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// The fuzz targets hold the answer checks to a reference decoding with encoding/json (check_ref_test.go): the
// checks never accept what the reference refuses, and refuse what it accepts only for one of the reasons check.go
// documents, which whyStricter tells from the input alone:
//
//   - duplicate member names and invalid UTF-8 (raw, or a lone surrogate escape): encoding/json lets the last
//     duplicate win and replaces bad bytes with U+FFFD, so a broken answer could pass for a right one;
//   - a member name equal, ignoring case, to one the checks read ("OK", "\u212aey"): encoding/json matches it
//     case-insensitively, which batchd's contract never asks for.
//
// The case-variant test looks at every member name in the answer, not only those of the objects the checks read,
// so an input with such a name anywhere is let through whatever the checks said of it.

func FuzzCheckBatch(f *testing.F) {
	for _, seed := range []struct {
		kind  batchKind
		steps int
		body  []byte
	}{
		{batchEcho, 2, batchOf(echoStep0, echoStep1)},
		{batchEcho, 10, echoAnswer(10)},
		{batchIndependent, 2, batchOf(addStep0, addStep1)},
		{batchChain, 2, batchOf(addStep0, addStep1)},
		{batchIndependent, 3, answer([]string{"s0", "s1", "s2"}, []int{200, 424, 200}, []int64{1, 2, 3})},
		{batchEcho, 2, []byte(`{"critical_path_ms":0.7,"responses":[{"key":"s\u0030","status":200,"response":{"ok":true,"result":{"n":0,"x":[]}},"timing":{}},` + echoStep1 + `]}`)},
		{batchEcho, 2, batchOf(echoStep0, `{"key":"s1","status":200,"response":{"ok":true,"OK":false,"result":{"n":1}}}`)},
		{batchEcho, 2, batchOf(echoStep0, `{"key":"s1","status":200,"response":{"ok":false,"ok":true,"result":{"n":1}}}`)},
		{batchEcho, 0, []byte(`null`)},
	} {
		f.Add(uint8(seed.kind), uint8(seed.steps), seed.body)
	}
	f.Fuzz(func(t *testing.T, kind, steps uint8, body []byte) {
		spec := batchSpec{kind: batchKind(kind % 3), steps: int(steps % 16), prefix: fastPrefix}
		agree(t, body, checkBatch(spec, 200, body), refCheckBatch(spec, 200, body))
	})
}

func FuzzCheckAnswer(f *testing.F) {
	f.Add([]byte(`{"ok":true,"result":{"n":0}}`), 0)
	f.Add([]byte(`{"ok":true,"result":{"new_id":12}}`), 3)
	f.Add([]byte(` {"result": {"new_id": 12, "n": -3, "x": [1, {"y": null}]}, "ok": true, "total": 1}`), -3)
	f.Add([]byte(`{"ok":false,"result":{"error":1008,"description":"name: required"}}`), 0)
	f.Add([]byte(`{"Ok":true,"result":{"N":0,"New_ID":1}}`), 0)
	f.Fuzz(func(t *testing.T, body []byte, want int) {
		agree(t, body, checkEcho(body, want), refCheckEcho(body, want))
		id, err := checkNewID(body)
		refID, refErr := refCheckNewID(body)
		agree(t, body, err, refErr)
		if err == nil && id != refID {
			t.Fatalf("new_id %d, encoding/json read %d: %q", id, refID, body)
		}
	})
}

// agree fails t unless err and refErr, the checks' and the reference's verdicts on body, agree or the checks are
// stricter for a documented reason.
func agree(t *testing.T, body []byte, err, refErr error) {
	t.Helper()
	switch {
	case err == nil && refErr != nil:
		t.Fatalf("accepted what encoding/json refused (%v): %q", refErr, body)
	case err != nil && refErr == nil && whyStricter(body) == "":
		t.Fatalf("refused what encoding/json accepted, for no documented reason: %v: %q", err, body)
	}
}

// whyStricter names the refusal of check.go's that body falls under, or returns "".
func whyStricter(body []byte) string {
	lenient := []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}
	if v := jsontext.Value(body); !v.IsValid() && v.IsValid(lenient...) {
		return "duplicate member names or invalid UTF-8"
	}
	dec := jsontext.NewDecoder(bytes.NewReader(body), lenient...)
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return ""
		}
		if tok.Kind() != '"' {
			continue
		}
		// A string just read is a name when it leaves its object with an odd count of names and values.
		if k, n := dec.StackIndex(dec.StackDepth()); k != '{' || n%2 == 0 {
			continue
		}
		name := tok.String()
		for _, read := range []string{"responses", "key", "status", "response", "ok", "result", "new_id", "n"} {
			if name != read && bytes.EqualFold([]byte(name), []byte(read)) {
				return "member " + name + " is " + read + " but for case"
			}
		}
	}
}

// TestWhyStricter checks the fuzz targets' judge on the inputs it must recognize, and on those it must not.
func TestWhyStricter(t *testing.T) {
	for body, want := range map[string]bool{
		`{"ok":true,"ok":true}`:        true,
		`{"x":{"a":1,"a":1}}`:          true,
		"{\"x\":\"\xff\"}":             true,
		`{"x":"\udc00"}`:               true,
		`{"OK":true}`:                  true,
		`{"x":{"\u212aey":1}}`:         true,
		`{"x":"OK"}`:                   false, // a value, not a name
		`{"ok":true,"x":["KEY"]}`:      false,
		`{"ok":true,"result":{"n":1}}`: false,
		`{"ok":true,"ok":true`:         false, // not JSON at all: no excuse
		`{"ok":true}x`:                 false,
	} {
		if got := whyStricter([]byte(body)) != ""; got != want {
			t.Errorf("whyStricter(%s) = %v, want %v", body, got, want)
		}
	}
}

package jsonscan

import (
	"bytes"
	"slices"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBusinessFailure(t *testing.T) {
	for _, tc := range []struct {
		body string
		want bool
	}{
		{`{"ok":false}`, true},
		{`{"ok":false,"result":{"error":1008,"description":"x"}}`, true},
		{` { "ok" : false } `, true},
		{"{\n\t\"ok\":\tfalse\n}", true},
		{`{"result":{"ok":true,"list":[{"ok":false}],"s":"\"ok\":false}"},"ok":false}`, true},
		{`{"\u006fk":false}`, true},
		{`{"o\u006B":false}`, true},
		{`{"ok":true,"result":{"ok":false}}`, false},
		{`{"ok":true}`, false},
		{`{"result":{"ok":false}}`, false},
		{`[{"ok":false}]`, false},
		{`"ok":false`, false},
		{`{"ok":"false"}`, false},
		{`{"ok":falsey}`, false},
		{`{"ok":null}`, false},
		{`{"okk":false}`, false},
		{`{"Ok":false}`, false},
		{`{}`, false},
		{``, false},
		{`null`, false},
		{`{"ok":`, false},
		{`{"0":`, false},
		{`{"0":  `, false},
		{`{"a":"unterminated`, false},
		{`{"a":[1,2,{"b":"]"}],"n":-1.5e3,"t":true,"ok":false}`, true},
		{`{"a" 1,"ok":false}`, false},
		{`{"ok":0}`, false},
		{`{"ok":true,"ok":false}`, false}, // the first "ok" decides
		{`"{\"ok\":false}"`, false},
		{`{"okay":false}`, false},
		{`{"ok\u0000":false}`, false},
	} {
		assert.Equal(t, tc.want, BusinessFailure([]byte(tc.body)), "%s", tc.body)
	}
}

func FuzzBusinessFailure(f *testing.F) {
	for _, s := range []string{`{"ok":false}`, `{"a":[1,{"b":"\""}],"ok":false}`, `{"\u006fk":false}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := BusinessFailure(b) // must not panic or loop on any input
		// On a well-formed object without duplicate names, agree with a real decoder.
		var m map[string]jsontext.Value
		if json.Unmarshal(b, &m) != nil {
			return
		}
		want := bytes.Equal(bytes.TrimSpace(m["ok"]), []byte("false"))
		if got != want {
			t.Fatalf("BusinessFailure(%q) = %v, want %v", b, got, want)
		}
	})
}

func TestAppendStringAndStringLen(t *testing.T) {
	for _, s := range []string{"", "plain", `say "hi"\now`, "tab\there\n\r\x00\x1f\x7f", "Grüße ☃ 😀", "a\xffb\xc3", "<&>"} {
		got := AppendString(nil, s)
		assert.Equal(t, len(got), StringLen(s)+2, "%q", s)
		var back string
		require.NoError(t, json.Unmarshal(got, &back), "%s", got)
		assert.Equal(t, string([]rune(s)), back)
	}
	assert.Equal(t, `"a\nb\u0001\"\\"`, string(AppendString(nil, "a\nb\x01\"\\")))
}

// FuzzAppendString: whatever the bytes, AppendString writes a JSON string that decodes strictly to them (invalid
// UTF-8 replaced byte by byte), of the length StringLen says.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "x", "\x00\n\"\\", "\xff\xfe", "😀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := AppendString(nil, s)
		if len(got) != StringLen(s)+2 {
			t.Fatalf("%q: wrote %d bytes, StringLen said %d", s, len(got), StringLen(s)+2)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != string([]rune(s)) {
			t.Fatalf("%q: wrote %s (%v)", s, got, err)
		}
	})
}

func TestCompact(t *testing.T) {
	in := "{\n  \"a\" : [ 1, 2 ],\n\t\"s\": \"keep  spaces\\n\\\" here\"\r\n}\n"
	var out []byte
	Compact([]byte(in), func(b []byte) { out = append(out, b...) })
	assert.Equal(t, `{"a":[1,2],"s":"keep  spaces\n\" here"}`, string(out))
	assert.Equal(t, len(out), CompactLen([]byte(in)))
	assert.True(t, HasLineBreak([]byte(in)))
	assert.False(t, HasLineBreak(out))
}

// FuzzCompact: on valid JSON, Compact agrees with jsontext's compaction and never leaves a line break; on any
// input it ends and emits no more than it read.
func FuzzCompact(f *testing.F) {
	for _, s := range []string{"{\n\"a\": 1}", `"x\n"`, "[1,\r\n2]", "\"unterminated \n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var out []byte
		Compact(b, func(run []byte) { out = append(out, run...) })
		if len(out) > len(b) || len(out) != CompactLen(b) {
			t.Fatalf("%q: emitted %d bytes", b, len(out))
		}
		v := jsontext.Value(slices.Clone(b))
		if !v.IsValid(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)) {
			return
		}
		if err := v.Compact(); err != nil {
			return // a form jsontext rewrites (escapes) rather than compacts
		}
		if HasLineBreak(out) || !jsontext.Value(out).IsValid(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)) {
			t.Fatalf("%q: compacted to %q", b, out)
		}
	})
}

func TestStrings(t *testing.T) {
	b := []byte(`{"a":"x","b":[{"c":"y"},"z"],"\"d":{}} `)
	var got []string
	depth := Strings(b, func(start, end int, name bool) {
		kind := "value"
		if name {
			kind = "name"
		}
		got = append(got, kind+" "+string(b[start:end]))
	})
	assert.Equal(t, []string{`name "a"`, `value "x"`, `name "b"`, `name "c"`, `value "y"`, `value "z"`, `name "\"d"`}, got)
	assert.Equal(t, 3, depth)
	assert.Equal(t, 0, Strings([]byte(`"s"`), func(int, int, bool) {}))
}

func TestElements(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`[]`, nil},
		{` [ ] `, nil},
		{`[1]`, []string{`1`}},
		{`[ {"a":[1,2]} , "x,y" ,null,[[]]]`, []string{`{"a":[1,2]}`, `"x,y"`, `null`, `[[]]`}},
		{`{"a":1}`, nil},
		{`[1,`, []string{`1`}},
	} {
		var got []string
		n := Elements([]byte(tc.in), func(e []byte) { got = append(got, string(e)) })
		assert.Equal(t, tc.want, got, tc.in)
		assert.Equal(t, len(tc.want), n, tc.in)
	}
}

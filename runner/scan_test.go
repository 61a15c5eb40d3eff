package runner

import (
	"bytes"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
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
	} {
		assert.Equal(t, tc.want, businessFailure([]byte(tc.body)), "%s", tc.body)
	}
}

func FuzzBusinessFailure(f *testing.F) {
	for _, s := range []string{`{"ok":false}`, `{"a":[1,{"b":"\""}],"ok":false}`, `{"\u006fk":false}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := businessFailure(b) // must not panic or loop on any input
		// On a well-formed object without duplicate names, agree with a real decoder.
		var m map[string]jsontext.Value
		if json.Unmarshal(b, &m) != nil {
			return
		}
		want := bytes.Equal(bytes.TrimSpace(m["ok"]), []byte("false"))
		if got != want {
			t.Fatalf("businessFailure(%q) = %v, want %v", b, got, want)
		}
	})
}

package transport

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/batchd/batchd/internal/race"
)

func TestNormalizeBody(t *testing.T) {
	tests := []struct {
		name string
		ct   string
		body string
		want string
	}{
		{"json object", "application/json", `{"ok":true}`, `{"ok":true}`},
		{"json with charset", "application/json; charset=utf-8", `[1,2]`, `[1,2]`},
		{"json upper case", "Application/JSON", `1`, `1`},
		{"plus json", "application/problem+json", `{"title":"x"}`, `{"title":"x"}`},
		{"vendor plus json", "application/vnd.api+json;v=2", `{"a":1}`, `{"a":1}`},
		{"absent type valid json", "", ` {"a":1} `, ` {"a":1} `},
		{"absent type not json", "", `hello`, `"hello"`},
		{"json type invalid json", "application/json", `{"a":`, `"{\"a\":"`},
		{"text that is json", "text/plain", `{"a":1}`, `"{\"a\":1}"`},
		{"html", "text/html; charset=utf-8", "<p>\"hi\"</p>\n", `"\u003cp\u003e\"hi\"\u003c/p\u003e\n"`},
		{"empty", "application/json", ``, `null`},
		{"empty no type", "", ``, `null`},
		{"whitespace only", "text/plain", " \r\n\t", `null`},
		{"bare +json is not a suffix", "application/+json", `1`, `"1"`},
		{"json suffix not plus", "application/xjson", `1`, `"1"`},
		{"invalid utf8 text", "text/plain", "a\xffb", `"a\ufffdb"`},
		// JSON that is not valid UTF-8 is passed on as a string (repaired), never as JSON that a strict decoder
		// refuses; so is a lone surrogate escape.
		{"invalid utf8 inside json string", "application/json", "[\"a\xffb\"]", `"[\"a\ufffdb\"]"`},
		{"lone surrogate escape", "application/json", `["\ud800"]`, `"[\"\\ud800\"]"`},
		{"control chars", "text/plain", "a\x00b", `"a\u0000b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NormalizeBody(tt.ct, []byte(tt.body))
			if !json.Valid(got) {
				t.Fatalf("NormalizeBody(%q, %q) = %q: not valid JSON", tt.ct, tt.body, got)
			}
			// Compare as JSON values, so that the test does not depend on which of the equivalent escapes is used.
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &w); err != nil {
				t.Fatalf("bad want %q: %v", tt.want, err)
			}
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			if string(gj) != string(wj) {
				t.Fatalf("NormalizeBody(%q, %q) = %s, want %s", tt.ct, tt.body, got, tt.want)
			}
		})
	}
}

func TestNormalizeBodyKeepsJSONAsIs(t *testing.T) {
	body := []byte("{\n  \"ok\": true\n}")
	got := NormalizeBody("application/json", body)
	if &got[0] != &body[0] {
		t.Fatalf("valid JSON was copied; want it returned as is")
	}
}

func TestNormalizeBodyAllocs(t *testing.T) {
	if race.Enabled() {
		t.Skip("allocation counts are meaningless under -race")
	}
	body := []byte(`{"ok":true,"result":{"new_id":1}}`)
	if n := testing.AllocsPerRun(100, func() { NormalizeBody("application/json; charset=utf-8", body) }); n != 0 {
		t.Fatalf("NormalizeBody of a JSON body allocates %v times, want 0", n)
	}
}

func FuzzNormalizeBody(f *testing.F) {
	f.Add("application/json", []byte(`{"ok":true}`))
	f.Add("", []byte(`[1, "x"]`))
	f.Add("text/html", []byte("<html>\xff</html>"))
	f.Add("application/json", []byte("\"\xed\xa0\x80\""))
	f.Add("application/x+json", []byte(""))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		got := NormalizeBody(ct, body)
		if !json.Valid(got) {
			t.Fatalf("NormalizeBody(%q, %q) = %q: not valid JSON", ct, body, got)
		}
		if !utf8.Valid(got) {
			t.Fatalf("NormalizeBody(%q, %q) = %q: not valid UTF-8", ct, body, got)
		}
	})
}

package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/planner"
)

func TestCSVTemplate(t *testing.T) {
	const header = "id,name,note\n"
	for _, tt := range []struct {
		name, template, csv string
		want                string // the NDJSON written
		err                 string // a part of the error
	}{
		{name: "whole string is a JSON string", template: `{"requests": [{"key": "a", "path": "Demo/Echo", "payload": {"id": "${row.id}", "n": 1}}]}`,
			csv: header + "42,x,\n7,y,\n",
			want: `{"requests":[{"key":"a","path":"Demo/Echo","payload":{"id":"42","n":1}}]}` + "\n" +
				`{"requests":[{"key":"a","path":"Demo/Echo","payload":{"id":"7","n":1}}]}` + "\n"},
		{name: "inside a longer string, escaped", template: `[{"path": "Demo/Echo", "body": "name: ${row.name}!"}]`,
			csv:  header + `1,"say ""hi""` + "\n" + `\ and	tab",` + "\n",
			want: `[{"path":"Demo/Echo","body":"name: say \"hi\"\n\\ and\ttab!"}]` + "\n"},
		{name: "a value's ${ is escaped for batchd", template: `[{"path": "Demo/Echo", "body": ["${row.name}", "x${row.name}y"]}]`,
			csv:  header + "1,${A.result},\n",
			want: `[{"path":"Demo/Echo","body":["$${A.result}","x$${A.result}y"]}]` + "\n"},
		{name: "a value ending in $ before a template {", template: `[{"path": "Demo/Echo", "body": "${row.name}{x}"}]`,
			csv:  header + "1,a$,\n",
			want: `[{"path":"Demo/Echo","body":"a$${x}"}]` + "\n"},
		{name: "a value ending in $ before a placeholder", template: `[{"path": "Demo/Echo", "body": "${row.name}${A}"}]`,
			csv: header + "1,a$,\n", err: `CSV row 1: the value of column "name" ends with "$" right before a batchd placeholder`},
		{name: "batchd placeholders and escapes are kept", template: `{"requests": [{"key": "a", "path": "Producer/Add", "payload": {"name": "${row.name}"}},
				{"key": "b", "path": "Producer/Get", "payload": {"ids": ["${a.result.new_id}"], "lit": "$${row.name} $${a}"}}]}`,
			csv: header + "1,Fanta,\n",
			want: `{"requests":[{"key":"a","path":"Producer/Add","payload":{"name":"Fanta"}},` +
				`{"key":"b","path":"Producer/Get","payload":{"ids":["${a.result.new_id}"],"lit":"$${row.name} $${a}"}}]}` + "\n"},
		{name: "path segment and query value", template: `{"requests": [{"key": "a", "method": "PUT", "path": "/customers/${row.id}?name=${row.name}", "payload": {"p": "${row.id}"},
				"rollback": {"path": "customers/${row.id}"}}]}`,
			csv: header + "a/b c,x&y=z ?,\n",
			want: `{"requests":[{"key":"a","method":"PUT","path":"/customers/a%2Fb%20c?name=x%26y%3Dz+%3F","payload":{"p":"a/b c"},` +
				`"rollback":{"path":"customers/a%2Fb%20c"}}]}` + "\n"},
		{name: "bare array and batch forms' paths", template: `{"batch": [{"path": "x/${row.id}"}]}`,
			csv: header + "1/2,,\n", want: `{"batch":[{"path":"x/1%2F2"}]}` + "\n"},
		{name: "a member named path elsewhere is text", template: `[{"path": "Demo/Echo", "body": {"path": "${row.id}"}}]`,
			csv: header + "1/2,,\n", want: `[{"path":"Demo/Echo","body":{"path":"1/2"}}]` + "\n"},
		{name: "empty cell", template: `["${row.note}"]`, csv: header + "1,2,\n", want: `[""]` + "\n"},
		{name: "unicode and a byte order mark", template: `["${row.id}:${row.name}"]`, csv: "\ufeff" + header + "é,日本,\n",
			want: `["é:日本"]` + "\n"},
		{name: "pretty template, one line out", template: "{\n  \"requests\": [\n    {\"key\": \"a\",\n     \"path\": \"Demo/Echo\"}\n  ]\n}\n",
			csv: header + "1,2,3\n", want: `{"requests":[{"key":"a","path":"Demo/Echo"}]}` + "\n"},
		{name: "header only", template: `["${row.id}"]`, csv: header, want: ""},
		{name: "missing column", template: `["${row.email}"]`, csv: header + "1,2,3\n",
			err: `${row.email} names no column of the CSV header; columns: "id", "name", "note"`},
		{name: "empty column name", template: `["${row.}"]`, csv: header, err: "${row.} names no column"},
		{name: "unterminated", template: `["${row.id"]`, csv: header, err: "${row. without its closing }"},
		{name: "inside a placeholder", template: `["${A.result.${row.id}}"]`, csv: header, err: "inside a batchd placeholder"},
		{name: "in a member name", template: `{"${row.id}": 1}`, csv: header, err: "string values only, not in member names"},
		{name: "template not JSON", template: `{"requests": [`, csv: header, err: "the template is not JSON"},
		{name: "two values", template: `{} {}`, csv: header, err: "more than one JSON value"},
		{name: "empty template", template: ``, csv: header, err: "the template is empty"},
		{name: "empty CSV", template: `[]`, csv: "", err: "the CSV is empty"},
		{name: "duplicate column", template: `[]`, csv: "a,a\n", err: `names column "a" twice`},
		{name: "short row", template: `["${row.id}"]`, csv: header + "1,2,3\n4,5\n", err: "CSV row 2: record on line 3: wrong number of fields",
			want: `["1"]` + "\n"},
		{name: "invalid UTF-8", template: `["${row.id}"]`, csv: header + "\xff,2,3\n", err: `CSV row 1: column "id" is not valid UTF-8 text`},
		{name: "a row makes duplicate members", template: `{"a": 1, "a": "${row.id}"}`, csv: header + "1,2,3\n", err: "duplicate object member name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			n, err := csvLines(strings.NewReader(tt.csv), []byte(tt.template), &out)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.want, out.String())
			assert.Equal(t, strings.Count(tt.want, "\n"), n)
		})
	}
}

func TestCSVRowBound(t *testing.T) {
	huge := "id\n\"" + strings.Repeat("x", maxRecord+(64<<10))
	_, err := csvLines(strings.NewReader(huge), []byte(`["${row.id}"]`), io.Discard)
	assert.ErrorContains(t, err, "a row is over")
}

// The CSV is read as it is written: a row is turned into its line before the next row is read.
func TestCSVIsStreamed(t *testing.T) {
	pr, pw := io.Pipe()
	lines := make(chan string, 4)
	done := make(chan error, 1)
	go func() {
		_, err := csvLines(pr, []byte(`["${row.id}"]`), writerFunc(func(b []byte) (int, error) {
			lines <- string(b)
			return len(b), nil
		}))
		done <- err
	}()
	_, _ = io.WriteString(pw, "id\n1\n")
	assert.Equal(t, `["1"]`+"\n", <-lines, "row 1 is written while the CSV is still open")
	_, _ = io.WriteString(pw, "2\n")
	assert.Equal(t, `["2"]`+"\n", <-lines)
	require.NoError(t, pw.Close())
	require.NoError(t, <-done)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// FuzzCSVTemplate checks the templating against batchd's own planner: a value filled into a payload string
// between any template text must read, once batchd resolves the line, exactly as batchd's own placeholder puts a
// step's string response there. So no value can become a placeholder, an escape, or break the JSON.
func FuzzCSVTemplate(f *testing.F) {
	for _, s := range [][3]string{
		{"", "plain", ""}, {"copy of ", "${A.x}", "!"}, {"", "a$", "{x}"}, {"", "a$", "${Z}"}, {"$", "$", "$"},
		{"", "$${", ""}, {"$$", "{", "}"}, {"x", "\"\\\n\t\u2028", "y"}, {"", "\xff", ""}, {"${Z} ", "$", "$${"},
		{"", "a\r\nb", ""}, {"", "}${", "{"}, {"$${row.x}", "v", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, prefix, value, suffix string) {
		if !utf8.ValidString(prefix) || !utf8.ValidString(suffix) {
			return // the template is the user's JSON; only the CSV's values are fuzzed for encoding
		}
		str := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		tmpl := `{"requests": [{"key": "Z", "path": "Demo/Echo"},
			{"key": "a", "path": "Demo/Echo", "payload": {"v": ` + str(prefix+"${row.x}"+suffix) + `}}]}`
		var csvBuf bytes.Buffer
		cw := csv.NewWriter(&csvBuf)
		_ = cw.WriteAll([][]string{{"x"}, {value}})
		// The value as a CSV reader reads it back (a quoted "\r\n" becomes "\n").
		rows, err := csv.NewReader(bytes.NewReader(csvBuf.Bytes())).ReadAll()
		if err != nil || len(rows) != 2 {
			return
		}
		value = rows[1][0]

		var out bytes.Buffer
		n, err := csvLines(&csvBuf, []byte(tmpl), &out)
		if err != nil {
			switch msg := err.Error(); {
			case strings.Contains(msg, "template string at"):
				return // prefix or suffix holds a ${row.…} of its own
			case strings.Contains(msg, "not valid UTF-8"):
				require.False(t, utf8.ValidString(value), err)
			case strings.Contains(msg, "right before a batchd placeholder"):
				require.True(t, strings.HasSuffix(value, "$"), err)
			default:
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		require.Equal(t, 1, n)
		line := out.Bytes()
		require.Equal(t, 1, bytes.Count(line, []byte("\n")), "one line: %q", line)
		require.True(t, json.Valid(line), "%q", line)

		// Whether batchd reads "${row.x}" there as a placeholder: a "$" before it may make it the "$${" escape,
		// text, which the CSV rows leave alone. A placeholder of a key no step has is listed as unknown.
		_, probe := planner.Parse([]byte(strings.Replace(tmpl, "${row.x}", "${Q}", 1)), planner.Config{})
		var pe *planner.Error
		if !errors.As(probe, &pe) || !slices.ContainsFunc(pe.Problems, func(p planner.Problem) bool {
			return strings.Contains(p.Detail, "${Q}")
		}) {
			return
		}
		// The reference: batchd's planner puts step Z's response, the JSON string value, in place of ${Z}.
		ref, err := planner.Parse([]byte(strings.Replace(tmpl, "${row.x}", "${Z}", 1)), planner.Config{})
		if err != nil {
			return // prefix or suffix is not a valid template for batchd, whatever the value
		}
		got, err := planner.Parse(bytes.TrimSpace(line), planner.Config{})
		require.NoError(t, err, "batchd refuses the line built from a valid template: %q", line)
		zBody := []byte(str(value))
		resp := func(step int) []byte { return zBody }
		want, wantErr := ref.Steps[1].Body.Append(nil, planner.NewResponses(2, resp, nil))
		have, haveErr := got.Steps[1].Body.Append(nil, planner.NewResponses(2, resp, nil))
		if wantErr != nil {
			require.Error(t, haveErr, "reference failed with %v", wantErr)
			return
		}
		require.NoError(t, haveErr)
		var wantV, haveV any
		require.NoError(t, json.Unmarshal(want, &wantV))
		require.NoError(t, json.Unmarshal(have, &haveV), "%q", have)
		require.Equal(t, wantV, haveV, "line %q", line)
	})
}

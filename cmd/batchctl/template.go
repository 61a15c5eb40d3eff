package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/client"
)

// A CSV template is a batch written as JSON in which ${row.COLUMN} stands for the value of COLUMN in the current
// row. Each CSV row (after the header, which names the columns) becomes one line of NDJSON: the template with
// every ${row.COLUMN} replaced, compacted onto one line. The rules:
//
//   - ${row.COLUMN} is replaced in string values only. A string that is exactly "${row.x}" becomes the value as a
//     JSON string ("42" stays the string "42"); inside a longer string ("copy of ${row.x}") the value is inserted
//     as text. Either way it is JSON-escaped, and every "${" in it is written "$${", so that batchd reads the
//     value as literal text, never as a placeholder.
//   - In a step's "path" (and a rollback's), the value is percent-escaped as one path segment ("a/b" → "a%2Fb"),
//     or as a query value after the first "?" ("a b&c" → "a+b%26c"), as batchd escapes a placeholder's value.
//   - COLUMN is the header's name exactly (case and spaces included); a name the header lacks, an empty name or
//     an unterminated ${row. stops before anything is read or sent, naming the columns there are.
//   - "$${" is batchd's escape for a literal "${" and is left alone: "$${row.x}" reaches batchd as is and means
//     the text "${row.x}". Every other ${…} is a batchd placeholder and is left alone ("${A.result.new_id}").
//   - A ${row.x} inside a batchd placeholder ("${A.result.${row.x}}") or in an object member name is refused:
//     a row's data never decides which step or field a placeholder reads, nor the names of a payload.
//   - An empty cell is the empty string. A row with more or fewer cells than the header stops the run, naming
//     the row.
//   - A value ending in "$" right before a batchd placeholder cannot be written in batchd's syntax ("$" followed
//     by "${" is its escape): that row stops the run.
//
// Rows are read one at a time and each line is written as soon as it is built, so a CSV of any size is never held
// whole; a row is at most maxRecord bytes.

// maxTemplate is the largest template read; maxRecord the largest CSV row.
const (
	maxTemplate = 8 << 20
	maxRecord   = 16 << 20
)

// csvTemplate is a template compiled against a CSV header.
type csvTemplate struct {
	tokens []templateToken
}

// templateToken is one JSON token of the template: as it stands, or, for a string value holding ${row.…}, the
// pieces it is built from.
type templateToken struct {
	tok    jsontext.Token
	pieces []templatePiece // nil: write tok
	path   bool            // the string is a step's path: values are percent-escaped
}

// templatePiece is literal text of the template (batchd's syntax, written as it stands) or a column's value.
type templatePiece struct {
	lit  string
	col  int    // -1 for literal text
	name string // the column's name, for messages
}

// compileTemplate reads a JSON template and resolves its ${row.…} references against header.
func compileTemplate(src []byte, header []string) (*csvTemplate, error) {
	cols := make(map[string]int, len(header))
	for i, h := range header {
		if _, dup := cols[h]; dup {
			return nil, fmt.Errorf("the CSV header names column %q twice; rename one", h)
		}
		cols[h] = i
	}
	dec := jsontext.NewDecoder(bytes.NewReader(src))
	t := &csvTemplate{}
	ended := false // the template's value is complete
	for {
		tok, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("the template is not JSON: %w", err)
		}
		if ended {
			return nil, errors.New("the template holds more than one JSON value; write one batch")
		}
		ended = dec.StackDepth() == 0
		tt := templateToken{tok: tok.Clone()}
		if tok.Kind() == '"' {
			s := tok.String()
			kind, n := dec.StackIndex(dec.StackDepth())
			isName := kind == '{' && n%2 == 1
			ptr := string(dec.StackPointer())
			pieces, refs, err := splitRow(s, cols, header)
			switch {
			case err != nil:
				return nil, fmt.Errorf("template string at %s: %w", ptrOrRoot(ptr), err)
			case refs && isName:
				return nil, fmt.Errorf("template member name %q at %s: ${row.…} is replaced in string values only, not in member names", s, ptrOrRoot(ptr))
			case refs:
				tt.pieces, tt.path = pieces, isStepPath(ptr)
			}
		}
		t.tokens = append(t.tokens, tt)
	}
	if len(t.tokens) == 0 {
		return nil, errors.New("the template is empty; write a batch as JSON")
	}
	return t, nil
}

func ptrOrRoot(p string) string {
	if p == "" {
		return "the top level"
	}
	return p
}

// isStepPath reports whether a JSON pointer names a step's path or its rollback's, in any batch form:
// /requests/N/path, /batch/N/path, /N/path, and …/rollback/path.
func isStepPath(ptr string) bool {
	segs := strings.Split(strings.TrimPrefix(ptr, "/"), "/")
	if len(segs) > 0 && (segs[0] == "requests" || segs[0] == "batch") {
		segs = segs[1:]
	}
	if len(segs) < 2 {
		return false
	}
	if _, err := strconv.Atoi(segs[0]); err != nil {
		return false
	}
	rest := strings.Join(segs[1:], "/")
	return rest == "path" || rest == "rollback/path"
}

// splitRow splits a template string into literal text and column references, scanning left to right as batchd
// does: "$${" is its escape and is kept, "${row.NAME}" a reference, any other "${…}" a batchd placeholder, kept.
// refs reports whether the string holds a reference.
func splitRow(s string, cols map[string]int, header []string) (pieces []templatePiece, refs bool, err error) {
	lit := 0
	for i := 0; i < len(s); {
		j := strings.IndexByte(s[i:], '$')
		if j < 0 {
			break
		}
		i += j
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			i += 3
		case strings.HasPrefix(s[i:], "${row."):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, false, fmt.Errorf("%q: ${row. without its closing }", clip(s))
			}
			name := s[i+len("${row.") : i+end]
			col, ok := cols[name]
			switch {
			case name == "":
				return nil, false, fmt.Errorf("%q: ${row.} names no column; columns: %s", clip(s), columnList(header))
			case !ok:
				return nil, false, fmt.Errorf("%q: ${row.%s} names no column of the CSV header; columns: %s", clip(s), name, columnList(header))
			}
			pieces = append(pieces, templatePiece{lit: s[lit:i], col: -1}, templatePiece{col: col, name: name})
			refs = true
			i += end + 1
			lit = i
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				i += 2 // unterminated: batchd says what is wrong with it
				continue
			}
			if strings.Contains(s[i+2:i+end], "${row.") {
				return nil, false, fmt.Errorf("%q: a ${row.…} inside a batchd placeholder; a row's data may not decide what a placeholder reads", clip(s))
			}
			i += end + 1
		default:
			i++
		}
	}
	pieces = append(pieces, templatePiece{lit: s[lit:], col: -1})
	return pieces, refs, nil
}

func columnList(header []string) string {
	q := make([]string, len(header))
	for i, h := range header {
		q[i] = strconv.Quote(h)
	}
	return strings.Join(q, ", ")
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// appendLine appends the template filled with row as one line of NDJSON (with its newline) to dst.
func (t *csvTemplate) appendLine(dst []byte, row []string) ([]byte, error) {
	buf := bytes.NewBuffer(dst)
	enc := jsontext.NewEncoder(buf) // checks every token: structure, duplicate names, valid UTF-8
	for _, tt := range t.tokens {
		tok := tt.tok
		if tt.pieces != nil {
			s, err := fill(tt.pieces, row, tt.path)
			if err != nil {
				return dst, err
			}
			tok = jsontext.String(s)
		}
		if err := enc.WriteToken(tok); err != nil {
			return dst, err
		}
	}
	line := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if !jsontext.Value(line[len(dst):]).IsValid() {
		return dst, errors.New("the line built is not valid JSON")
	}
	return append(line, '\n'), nil
}

// fill builds a template string from its pieces and a row: literal text as it stands, each value escaped so that
// batchd reads it as literal text (and, in a path, percent-escaped).
func fill(pieces []templatePiece, row []string, path bool) (string, error) {
	vals := make([]string, len(pieces))
	inQuery := false
	for i, p := range pieces {
		if p.col < 0 {
			inQuery = inQuery || strings.Contains(p.lit, "?")
			continue
		}
		v := row[p.col]
		if !utf8.ValidString(v) {
			return "", fmt.Errorf("column %q is not valid UTF-8 text", p.name)
		}
		switch {
		case path && inQuery:
			v = url.QueryEscape(v)
		case path:
			v = url.PathEscape(v)
		}
		vals[i] = client.Literal(v)
	}
	var b strings.Builder
	for i, p := range pieces {
		if p.col < 0 {
			b.WriteString(p.lit)
			continue
		}
		v := vals[i]
		if strings.HasSuffix(v, "$") {
			next := following(pieces, vals, i+1)
			switch {
			case strings.HasPrefix(next, "${"):
				return "", fmt.Errorf("the value of column %q ends with \"$\" right before a batchd placeholder, which batchd's syntax cannot write; put a space or other text between them in the template", p.name)
			case strings.HasPrefix(next, "{"):
				v += "$" // "$$" + "{" is batchd's "$${", the literal "${"
			}
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// following is the text that comes after piece i-1 once the pieces are written: up to two bytes are enough.
func following(pieces []templatePiece, vals []string, i int) string {
	var s string
	for ; i < len(pieces) && len(s) < 2; i++ {
		if pieces[i].col < 0 {
			s += pieces[i].lit
		} else {
			s += vals[i]
		}
	}
	return s
}

// csvLines reads a CSV (the header first) and writes one NDJSON line per row to w, filled into the template. It
// returns the number of lines written; an error names the row (rows count from 1 after the header; the header is
// line 1 of the file).
func csvLines(csvIn io.Reader, templateSrc []byte, w io.Writer) (int, error) {
	br := &boundedReader{r: csvIn, max: maxRecord}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return 0, errors.New("the CSV is empty; its first row must name the columns")
	}
	if err != nil {
		return 0, fmt.Errorf("reading the CSV header: %w", err)
	}
	header = append([]string(nil), header...)
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff") // a byte order mark, as spreadsheets write
	}
	t, err := compileTemplate(templateSrc, header)
	if err != nil {
		return 0, err
	}
	var line []byte
	n := 0
	for {
		br.reset()
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("CSV row %d: %w", n+1, err)
		}
		line, err = t.appendLine(line[:0], row)
		if err != nil {
			return n, fmt.Errorf("CSV row %d: %w", n+1, err)
		}
		if _, err := w.Write(line); err != nil {
			return n, err
		}
		n++
	}
}

// boundedReader fails a read once more than max bytes were read since the last reset: one CSV row's worth.
type boundedReader struct {
	r    io.Reader
	max  int
	read int
}

func (b *boundedReader) reset() { b.read = 0 }

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.read > b.max {
		return 0, fmt.Errorf("a row is over %d bytes (an unterminated quote?)", b.max)
	}
	n, err := b.r.Read(p)
	b.read += n
	return n, err
}

package transport_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// volatile are the members whose values differ from one run to the next: clocks and durations. They are compared
// by presence and type, not value.
var volatile = map[string]bool{"last_update": true, "queued_ms": true, "started_ms": true, "duration_ms": true,
	"critical_path_ms": true}

// normalize decodes a JSON document with every volatile member's number set to 0.
func normalize(t *testing.T, doc []byte) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(doc, &v), "%s", doc)
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if _, isNum := e.(float64); isNum && volatile[k] {
					x[k] = 0.0
				} else {
					x[k] = walk(e)
				}
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		}
		return v
	}
	return walk(v)
}

// updateReadme rewrites the answers of README.md that differ from batchd's, pretty-printed:
// go test ./transport/ -run TestReadmeRunsInOrder -update-readme
var updateReadme = flag.Bool("update-readme", false, "write batchd's answers into README.md where they differ")

// TestReadmeRunsInOrder runs every curl example of README.md against the demo API, in the order a reader meets
// them, on one fresh batchd (`make run`), and checks that each answer shown right after its curl is the answer
// batchd gives: the same JSON, clocks and durations aside (last_update and the *_ms timings), and line by line for
// a streamed answer. So the README cannot drift from what it documents, ids included. An example against another
// upstream (its block says "-upstream") is not one a reader runs against `make run`, and is not run.
func TestReadmeRunsInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the batchd binary")
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	base := startBinary(t)
	client := &http.Client{Timeout: 30 * time.Second}

	const answerGap = 4 // most lines between a curl's closing fence and its answer's opening fence
	var (
		last    []byte // the answer of the last curl run, until its block is compared
		lastEnd int
		ran     int
		checked int
	)
	type fix struct {
		b    block
		text string
	}
	var fixes []fix
	blocks := fencedBlocks(string(readme))
	for i, b := range blocks {
		where := fmt.Sprintf("README.md:%d", b.line)
		switch b.lang {
		case "sh", "bash", "shell", "console":
			if strings.Contains(b.text, "-upstream") || (i > 0 && strings.Contains(proseBefore(string(readme), b.line), "-upstream")) {
				t.Logf("%s: an example against another upstream, not run", where)
				last = nil
				continue
			}
			var reqs []*http.Request
			for _, args := range curlCommands(b.text) {
				req := curlRequest(t, args)
				if req == nil {
					t.Logf("%s: a curl that reads a file the reader has, not run", where)
					reqs = nil
					break
				}
				if strings.Contains(req.URL.Host, "localhost:8080") {
					reqs = append(reqs, req)
				}
			}
			last = nil
			for _, req := range reqs {
				u, err := url.Parse(base + req.URL.RequestURI())
				require.NoError(t, err)
				req.URL, req.Host, req.RequestURI = u, u.Host, ""
				resp, err := client.Do(req)
				require.NoError(t, err, where)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err, where)
				last, lastEnd = body, b.end
				ran++
			}
		case "json", "text":
			if last == nil || b.line-lastEnd > answerGap {
				continue
			}
			shown := []byte(strings.TrimSpace(b.text))
			got := bytes.TrimSpace(last)
			last = nil
			if *updateReadme && !sameAnswer(t, b.lang, shown, got) {
				var pretty bytes.Buffer
				if b.lang == "json" && json.Indent(&pretty, got, "", "  ") == nil {
					got = pretty.Bytes()
				}
				fixes = append(fixes, fix{b, string(got)})
				continue
			}
			if b.lang == "text" {
				shownLines, gotLines := strings.Split(string(shown), "\n"), strings.Split(string(got), "\n")
				require.Len(t, gotLines, len(shownLines), "%s: the stream has another number of lines:\n%s", where, got)
				for k := range shownLines {
					assert.Equal(t, normalize(t, []byte(shownLines[k])), normalize(t, []byte(gotLines[k])),
						"%s: line %d of the stream differs", where, k+1)
				}
			} else {
				assert.Equal(t, normalize(t, shown), normalize(t, got), "%s: the README shows another answer than batchd gives:\n%s",
					where, got)
			}
			checked++
		}
	}
	if len(fixes) > 0 {
		lines := strings.Split(string(readme), "\n")
		for k := len(fixes) - 1; k >= 0; k-- {
			f := fixes[k]
			lines = append(lines[:f.b.line], append(strings.Split(f.text, "\n"), lines[f.b.end-1:]...)...)
		}
		require.NoError(t, os.WriteFile(filepath.Join("..", "README.md"), []byte(strings.Join(lines, "\n")), 0o644))
		t.Fatalf("README.md: %d answers rewritten; run the test again", len(fixes))
	}
	t.Logf("README.md: %d curl examples run in order, %d answers compared", ran, checked)
	assert.GreaterOrEqual(t, ran, 10)
	assert.GreaterOrEqual(t, checked, 8)
}

// sameAnswer reports whether the answer shown and the one got are the same, volatile members aside.
func sameAnswer(t *testing.T, lang string, shown, got []byte) bool {
	if lang != "text" {
		return assert.ObjectsAreEqual(normalize(t, shown), normalize(t, got))
	}
	a, b := strings.Split(string(shown), "\n"), strings.Split(string(got), "\n")
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !assert.ObjectsAreEqual(normalize(t, []byte(a[k])), normalize(t, []byte(b[k]))) {
			return false
		}
	}
	return true
}

// proseBefore returns the lines of md before line (1-based) back to the previous fenced block or heading.
func proseBefore(md string, line int) string {
	lines := strings.Split(md, "\n")
	var out []string
	for i := line - 2; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "```") || strings.HasPrefix(l, "#") {
			break
		}
		out = append(out, l)
	}
	return strings.Join(out, " ")
}

// TestTestingDocListsEveryFuzzTarget: docs/testing.md names every fuzz target of the module, so that none is added
// without being told to the reader (and none is listed that is gone).
func TestTestingDocListsEveryFuzzTarget(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "testing.md"))
	require.NoError(t, err)
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`(?:[\\w/]+_test\\.go:)?(Fuzz\\w+)`").FindAllStringSubmatch(string(doc), -1) {
		listed[m[1]] = true
	}
	found := map[string]bool{}
	target := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	require.NoError(t, filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		for _, m := range target.FindAllStringSubmatch(string(src), -1) {
			found[m[1]] = true
		}
		return err
	}))
	for name := range found {
		assert.True(t, listed[name], "docs/testing.md does not list %s", name)
	}
	for name := range listed {
		assert.True(t, found[name], "docs/testing.md lists %s, which no test file has", name)
	}
}

package planner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckPath(t *testing.T) {
	accepted := []string{
		"Producer/Add",
		"/Producer/Add",
		"users/42",
		"users?active=1",
		"/users?active=1&q=a%20b",
		"users?",
		"users?a=/b/../c",       // the query is not a path
		"users?next=http://x/y", // nor is a URL inside it
		"a/b.c/d..e/...",
		"a/%41",
		"a/%252e%252e", // decoded once: the segment is the text "%2e%2e"
		"a/b:c",        // ':' after the first segment is data
		"a/@b",
		"a/b@c",
		"Grüße/ü",
		"a b/c",
		"a/${x}",
		"a;b/c",
		"a/b;c=1",
		"a/..x;y",
		"v1/batches",
		"batch/x",
		"v2/batch",
		"xv1/batch",
	}
	for _, p := range accepted {
		t.Run("ok "+p, func(t *testing.T) {
			assert.NoError(t, CheckPath(p))
		})
	}

	refused := []struct {
		path   string
		reason Reason
		detail string
	}{
		{"", ReasonInvalidPath, "empty"},
		{"/", ReasonInvalidPath, "empty"},
		{"?x=1", ReasonInvalidPath, "empty"},
		{"/?x=1", ReasonInvalidPath, "empty"},
		{"https://evil.test/x", ReasonInvalidPath, "scheme"},
		{"https:x", ReasonInvalidPath, "scheme"},
		{"javascript:alert(1)", ReasonInvalidPath, "scheme"},
		{"/http:/x", ReasonInvalidPath, "scheme"},
		{"a%3Ab/c", ReasonInvalidPath, "scheme"},
		{"//evil.test/x", ReasonInvalidPath, "host"},
		{"//x", ReasonInvalidPath, "host"},
		{"///x", ReasonInvalidPath, "host"},
		{"@evil.test", ReasonInvalidPath, "@"},
		{"user@evil.test/x", ReasonInvalidPath, "@"},
		{"%40evil/x", ReasonInvalidPath, "@"},
		{".", ReasonInvalidPath, `"."`},
		{"..", ReasonInvalidPath, `".."`},
		{"a/./b", ReasonInvalidPath, `"."`},
		{"a/../b", ReasonInvalidPath, `".."`},
		{"a/..", ReasonInvalidPath, `".."`},
		{"a/%2e%2e/b", ReasonInvalidPath, `".."`},
		{"a/%2E%2e", ReasonInvalidPath, `".."`},
		{"a/.%2e", ReasonInvalidPath, `".."`},
		{"a/..;x/b", ReasonInvalidPath, `".."`},
		{"a/.;x", ReasonInvalidPath, `"."`},
		{"a/..%3Bx", ReasonInvalidPath, `".."`},
		{"%2e/a", ReasonInvalidPath, `"."`},
		{"a//b", ReasonInvalidPath, "empty path segment"},
		{"a/", ReasonInvalidPath, "empty path segment"},
		{"a/?x", ReasonInvalidPath, "empty path segment"},
		{"a%2Fb", ReasonInvalidPath, `"/"`},
		{"a/%2f..", ReasonInvalidPath, `"/"`},
		{"a%5Cb", ReasonInvalidPath, `"\\"`},
		{`a\b`, ReasonInvalidPath, "backslash"},
		{`\\evil\x`, ReasonInvalidPath, "backslash"},
		{"a/b\x00", ReasonInvalidPath, "control"},
		{"a/b\r\nHost: x", ReasonInvalidPath, "control"},
		{"a\tb", ReasonInvalidPath, "control"},
		{"a\x7f", ReasonInvalidPath, "control"},
		{"a/%00", ReasonInvalidPath, "control"},
		{"a/%0d%0a", ReasonInvalidPath, "control"},
		{"a/%7F", ReasonInvalidPath, "control"},
		{"a#frag", ReasonInvalidPath, "#"},
		{"a/%zz", ReasonInvalidPath, "percent"},
		{"a/%4", ReasonInvalidPath, "percent"},
		{"a/%", ReasonInvalidPath, "percent"},
		{"a?x=1#f", ReasonInvalidPath, "#"},
		{"a?x=\x00", ReasonInvalidPath, "control"},
		{"a?x=\r\n", ReasonInvalidPath, "control"},
		{`a?x=\`, ReasonInvalidPath, "backslash"},
		{"a?x=a b", ReasonInvalidPath, "percent-encoded"},
		{`a?x="`, ReasonInvalidPath, "percent-encoded"},
		{"a?x=ü", ReasonInvalidPath, "percent-encoded"},
		{"a?x=%zz", ReasonInvalidPath, "percent-escape"},
		{"a?x=%4", ReasonInvalidPath, "percent-escape"},
		{"batch", ReasonNestedBatch, "batch endpoint"},
		{"/batch", ReasonNestedBatch, ""},
		{"BATCH", ReasonNestedBatch, ""},
		{"v1/batch", ReasonNestedBatch, ""},
		{"/V1/Batch", ReasonNestedBatch, ""},
		{"api/v1/batch", ReasonNestedBatch, ""},
		{"v1/batch?x=1", ReasonNestedBatch, ""},
		{"%62atch", ReasonNestedBatch, ""},
		{"%76%31/%62%61%74%63%68", ReasonNestedBatch, ""},
		{"v1/batch;jsessionid=1", ReasonNestedBatch, ""},
		{"v1;x/batch", ReasonNestedBatch, ""},
		{"batch;x", ReasonNestedBatch, ""},
	}
	for _, c := range refused {
		t.Run("refused "+c.path, func(t *testing.T) {
			err := CheckPath(c.path)
			var pe *PathError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, c.reason, pe.Reason)
			assert.Equal(t, c.path, pe.Path)
			assert.Contains(t, pe.Detail, c.detail)
			assert.Contains(t, err.Error(), pe.Detail)
		})
	}
}

func TestBlocked(t *testing.T) {
	list := []string{" /Item/Import ", "Other/Method/"}
	for _, p := range []string{"Item/Import", "item/import", "ITEM/IMPORT", "It%65m/Import", "Other/Method",
		// A format suffix, trailing dots or spaces: routed to the same method by some frameworks.
		"Item/Import.json", "Item/Import.", "Item/Import..", "Item/Import%20", "Item/Import%2E", "Item/Import. ",
		"Item/Import.json.bak", "Other/Method.xml"} {
		assert.True(t, blocked(p, list), p)
	}
	for _, p := range []string{"Item/Importer", "Item", "Item/Import/x", "x/Item/Import", "Item/Importer.json",
		"Item.json/Import2", ".Item/Import2"} {
		assert.False(t, blocked(p, list), p)
	}
	assert.False(t, blocked("Item/Import", nil))
	assert.False(t, blocked("Item/Import", []string{"", "/"}))
}

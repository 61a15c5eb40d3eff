package planner

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/errcode"
)

// Servers that take path parameters (Tomcat, Spring, Jetty) drop ";…" from a segment before routing: "..;" is then
// "..", and "Item/Import;x" is Item/Import. Regression: both went through to the upstream.
func TestPathParametersDoNotDodgeChecks(t *testing.T) {
	for _, p := range []string{"Producer/..;/admin", "..;/admin", "x/.;x=1/y", "x/%2e%2e;/y", "x/..;jsessionid=1"} {
		err := CheckPath(p)
		var pe *PathError
		require.ErrorAs(t, err, &pe, p)
		assert.Equal(t, ReasonInvalidPath, pe.Reason, p)
	}
	for _, p := range []string{"v1/batch;x=1", "batch;", "/V1;a=b/Batch;c"} {
		err := CheckPath(p)
		var pe *PathError
		require.ErrorAs(t, err, &pe, p)
		assert.Equal(t, ReasonNestedBatch, pe.Reason, p)
	}
	for _, p := range []string{"Item/Import;jsessionid=1", "item;x/IMPORT", "Item/;x/Import", "Item/Import%3Bx", "/Item/Import;?a=1"} {
		probs := refusal(t, `[{"path":"`+p+`"}]`, Config{Blocked: []string{"Item/Import"}})
		assert.Equal(t, ReasonBlocked, probs[0].Reason, p)
	}
	// Parameters are not refused as such: a path that routes elsewhere is fine.
	for _, p := range []string{"users/a;b", "matrix;x=1/y", "Item/Importer;x"} {
		assert.NoError(t, CheckPath(p), p)
		mustParse(t, `[{"path":"`+p+`"}]`, Config{Blocked: []string{"Item/Import"}})
	}
}

func TestResolvedPathParametersDoNotDodgeChecks(t *testing.T) {
	plan := mustParse(t, `[{"key":"A","path":"a"},
		{"key":"B","path":"Item/${A.v}"},
		{"key":"C","path":"users/${A.dots}/x"},
		{"key":"D","path":"v1/${A.batch}"}]`, Config{Blocked: []string{"Item/Import"}})
	r := responses{0: `{"v":"Import;x","dots":"..;","batch":"batch;y"}`}
	for _, i := range []int{1, 2, 3} {
		_, err := plan.Steps[i].Path.Resolve(r.all(), 0)
		var re *ResolveError
		require.True(t, errors.As(err, &re), "step %d: %v", i, err)
		assert.Equal(t, errcode.ResolvedPathRefused, re.Code)
	}
}

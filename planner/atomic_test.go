package planner

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAtomicAndTimings(t *testing.T) {
	p := mustParse(t, `{"requests": [{"key": "a", "path": "x"}]}`, Config{})
	assert.False(t, p.Atomic)
	assert.False(t, p.Timings)
	assert.False(t, p.StopOnError)

	p = mustParse(t, `{"atomic": true, "timings": true, "batch": [{"path": "x"}]}`, Config{})
	assert.True(t, p.Atomic)
	assert.True(t, p.Timings)
	assert.True(t, p.StopOnError, "atomic implies stop_on_error")

	p = mustParse(t, `{"atomic": true, "stop_on_error": false, "requests": [{"key": "a", "path": "x"}]}`, Config{})
	assert.True(t, p.StopOnError, "atomic wins over an explicit stop_on_error: false")

	p = mustParse(t, `{"timings": false, "atomic": false, "requests": [{"key": "a", "path": "x"}]}`, Config{})
	assert.False(t, p.Atomic)
	assert.False(t, p.Timings)

	probs := refusal(t, `{"atomic": 1, "timings": "yes", "requests": [{"key": "a", "path": "x"}]}`, Config{})
	require.Len(t, probs, 2)
	assert.Equal(t, Problem{Reason: ReasonInvalidJSON, Detail: `"atomic" must be a boolean, not a number`}, probs[0])
	assert.Equal(t, Problem{Reason: ReasonInvalidJSON, Detail: `"timings" must be a boolean, not a string`}, probs[1])
}

func TestParseRollback(t *testing.T) {
	p := mustParse(t, `{"atomic": true, "requests": [
		{"key": "Add", "path": "Producer/Add", "payload": {"name": "x"},
		 "rollback": {"path": "/Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
		{"key": "Edit", "path": "Producer/Edit", "payload": {"id": "${Add.result.new_id}", "name": "y"},
		 "rollback": {"method": "put", "path": "Producer/${Add.result.new_id}/Name",
		              "headers": {"x-undo": "of ${self.result.ids.0}"}, "body": {"name": "${Edit.result.old}"}}},
		{"key": "Get", "path": "Producer/Get"}
	]}`, Config{})
	add, edit, get := p.Steps[0], p.Steps[1], p.Steps[2]
	assert.Nil(t, get.Rollback)

	require.NotNil(t, add.Rollback)
	assert.Equal(t, "POST", add.Rollback.Method, "default method")
	assert.Equal(t, "Producer/Delete", add.Rollback.Name)
	assert.Empty(t, add.Rollback.Headers)
	resp := responses{0: `{"ok":true,"result":{"new_id":4}}`, 1: `{"ok":true,"result":{"ids":[4],"old":"x"}}`}
	path, err := add.Rollback.Path.Resolve(resp.all(), 0)
	require.NoError(t, err)
	assert.Equal(t, "Producer/Delete", path)
	body, err := add.Rollback.Body.Append(nil, resp.all())
	require.NoError(t, err)
	assert.Equal(t, `{"ids": [4]}`, string(body), "${self…} is the step's own response")

	require.NotNil(t, edit.Rollback)
	assert.Equal(t, "PUT", edit.Rollback.Method, "upper-cased")
	assert.Equal(t, []int{0}, edit.Deps, "a rollback's references add no dependency")
	path, err = edit.Rollback.Path.Resolve(resp.all(), 0)
	require.NoError(t, err)
	assert.Equal(t, "Producer/4/Name", path)
	require.Len(t, edit.Rollback.Headers, 1)
	assert.Equal(t, "X-Undo", edit.Rollback.Headers[0].Name)
	v, err := edit.Rollback.Headers[0].Value.Resolve(resp.all(), 0)
	require.NoError(t, err)
	assert.Equal(t, "of 4", v)
	body, err = edit.Rollback.Body.Append(nil, resp.all())
	require.NoError(t, err)
	assert.Equal(t, `{"name": "x"}`, string(body), "the step's own key is the same as self")

	// A rollback is validated in any batch; it runs only in an atomic one.
	p = mustParse(t, `{"requests": [{"key": "a", "path": "x", "rollback": {"path": "y", "payload": null}}]}`, Config{})
	require.NotNil(t, p.Steps[0].Rollback)
	assert.Nil(t, p.Steps[0].Rollback.Body, "a null payload is none")

	p = mustParse(t, `{"atomic": true, "requests": [{"key": "a", "path": "x", "rollback": null}]}`, Config{})
	assert.Nil(t, p.Steps[0].Rollback, "a null rollback is none")
}

func TestParseRollbackRejects(t *testing.T) {
	cfg := Config{Blocked: []string{"Item/Import"}}
	for _, tc := range []struct {
		name   string
		steps  string
		reason Reason
		detail string // a substring
	}{
		{"not an object", `{"key":"a","path":"x","rollback":"y"}`, ReasonInvalidJSON, `"rollback" must be an object, not a string`},
		{"missing path", `{"key":"a","path":"x","rollback":{"payload":{}}}`, ReasonInvalidPath, `rollback: missing "path"`},
		{"path not a string", `{"key":"a","path":"x","rollback":{"path":1}}`, ReasonInvalidJSON, `"rollback.path" must be a string`},
		{"absolute URL", `{"key":"a","path":"x","rollback":{"path":"https://evil.test/x"}}`, ReasonInvalidPath, `rollback path "https://evil.test/x" refused`},
		{"dot segment", `{"key":"a","path":"x","rollback":{"path":"a/../b"}}`, ReasonInvalidPath, "rollback path"},
		{"blocked", `{"key":"a","path":"x","rollback":{"path":"Item/Import"}}`, ReasonBlocked, `rollback method "Item/Import" may not be called`},
		{"nested batch", `{"key":"a","path":"x","rollback":{"path":"v1/batch"}}`, ReasonNestedBatch, "rollback path"},
		{"method", `{"key":"a","path":"x","rollback":{"path":"y","method":"TRACE"}}`, ReasonInvalidMethod, "rollback method TRACE"},
		{"unknown field", `{"key":"a","path":"x","rollback":{"path":"y","depends_on":["a"]}}`, ReasonInvalidJSON, `unknown rollback field "depends_on"`},
		{"payload and body", `{"key":"a","path":"x","rollback":{"path":"y","payload":1,"body":2}}`, ReasonInvalidJSON, `rollback: both "payload" and "body"`},
		{"bad header", `{"key":"a","path":"x","rollback":{"path":"y","headers":{"Host":"h"}}}`, ReasonInvalidHeader, `rollback header "Host" may not be set`},
		{"malformed placeholder", `{"key":"a","path":"x","rollback":{"path":"y","payload":"${self.}"}}`, ReasonPlaceholder, "rollback.payload: malformed placeholder"},
		{"unknown ref", `{"key":"a","path":"x","rollback":{"path":"y","payload":"${nope.id}"}}`, ReasonUnknownRef, "rollback placeholder ${nope.id} names no step of this batch"},
		{"reference to a non-dependency", `{"key":"a","path":"x","rollback":{"path":"y/${b.id}"}},{"key":"b","path":"x"}`,
			ReasonUnknownRef, `rollback placeholder ${b.id} names step "b", which this step does not depend on`},
		{"reference to a dependent", `{"key":"a","path":"x","rollback":{"path":"y","headers":{"X":"${b.id}"}}},{"key":"b","path":"x","payload":"${a}"}`,
			ReasonUnknownRef, `rollback placeholder ${b.id} names step "b", which this step does not depend on`},
		{"self outside a rollback", `{"key":"a","path":"x","payload":{"id":"${self.id}"}}`, ReasonUnknownRef, `placeholder ${self.id}: ${self…} may only be used in a "rollback"`},
		{"too deep", `{"key":"a","path":"x","rollback":{"path":"y","payload":` + strings.Repeat("[", 62) + strings.Repeat("]", 62) + `}}`,
			ReasonInvalidJSON, `"rollback.payload" nests 66 levels deep`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probs := refusal(t, `{"atomic": true, "requests": [`+tc.steps+`]}`, cfg)
			require.Len(t, probs, 1, "%+v", probs)
			assert.Equal(t, "a", probs[0].Key)
			assert.Equal(t, tc.reason, probs[0].Reason)
			assert.Contains(t, probs[0].Detail, tc.detail)
		})
	}
}

func TestParseRequireRollback(t *testing.T) {
	body := `{"atomic": true, "requests": [
		{"key": "add", "path": "Producer/Add", "rollback": {"path": "Producer/Delete"}},
		{"key": "edit", "path": "Producer/Edit", "method": "PATCH"},
		{"key": "get", "path": "Producer/Get", "method": "GET"},
		{"key": "head", "path": "Producer/Get", "method": "head"},
		{"key": "post", "path": "Producer/Get"}
	]}`
	mustParse(t, body, Config{}) // not required by default

	probs := refusal(t, body, Config{RequireRollback: true})
	require.Len(t, probs, 2, "%+v", probs)
	for k, key := range []string{"edit", "post"} {
		assert.Equal(t, key, probs[k].Key)
		assert.Equal(t, ReasonMissingRollback, probs[k].Reason)
		assert.Contains(t, probs[k].Detail, `no "rollback"`)
	}

	// Only atomic batches need rollbacks.
	mustParse(t, strings.Replace(body, `"atomic": true`, `"atomic": false`, 1), Config{RequireRollback: true})
}

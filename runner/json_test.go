package runner_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/errcode"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

func TestAppendJSON(t *testing.T) {
	results := []runner.Result{
		{Index: 0, Key: "ProducerAdd", Status: 200, Body: []byte(`{"ok":true,"result":{"new_id":4}}`)},
		{Index: 1, Key: "q\"uote", Status: 424, Body: errcode.Body(errcode.DependencyFailed, "dependency ProducerAdd failed")},
		{Index: 2, Key: "2", Status: 204},
	}
	const items = `{"key":"ProducerAdd","status":200,"response":{"ok":true,"result":{"new_id":4}}},` +
		`{"key":"q\"uote","status":424,"response":{"ok":false,"result":{"error":4240,"description":"dependency ProducerAdd failed"}}},` +
		`{"key":"2","status":204,"response":null}`
	for _, tc := range []struct {
		form planner.Form
		want string
	}{
		{planner.FormRequests, `{"responses":[` + items + `]}`},
		{planner.FormBatch, `{"responses":[` + items + `]}`},
		{planner.FormArray, `[` + items + `]`},
	} {
		got := runner.AppendJSON(nil, tc.form, results)
		assert.Equal(t, tc.want, string(got))
		assert.True(t, json.Valid(got))
		// Appends to what dst holds.
		assert.Equal(t, "x"+tc.want, string(runner.AppendJSON([]byte("x"), tc.form, results)))
	}
	assert.Equal(t, `{"responses":[]}`, string(runner.AppendJSON(nil, planner.FormRequests, nil)))
	assert.Equal(t, `[]`, string(runner.AppendJSON(nil, planner.FormArray, nil)))
}

func TestAppendLine(t *testing.T) {
	r := runner.Result{Index: 3, Key: "A", Status: 200, Body: []byte(`{"ok":true}`), Duration: time.Second}
	got := runner.AppendLine(nil, &r)
	assert.Equal(t, "{\"index\":3,\"key\":\"A\",\"status\":200,\"response\":{\"ok\":true}}\n", string(got))
	require.True(t, json.Valid(got))
}

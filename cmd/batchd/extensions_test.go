package main

// End-to-end tests of the opt-in extensions beyond idempotency (README "Atomic batches",
// "Streaming results", "Step timings"): the real service through run(), with the embedded demo API.

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/batchtest"
)

func (in *instance) extBatch(t *testing.T, body string) batchtest.Answer {
	t.Helper()
	status, _, b := in.send(t, body)
	require.Equal(t, http.StatusOK, status, "%s", b)
	var a batchtest.Answer
	require.NoError(t, json.Unmarshal(b, &a), "%s", b)
	return a
}

const atomicAddTwiceThenFail = `{"atomic": true, "requests": [
	{"key": "add1", "path": "Producer/Add", "payload": {"name": "Fanta"},
	 "rollback": {"path": "Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
	{"key": "add2", "path": "Producer/Add", "payload": {"name": "Sprite"},
	 "rollback": {"path": "Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
	{"key": "fail", "path": "Demo/Fail", "payload": {"description": "the third call fails"}, "depends_on": ["add1", "add2"]}
]}`

func TestAtomicBatchIsRolledBack(t *testing.T) {
	in := start(t)
	a := in.extBatch(t, atomicAddTwiceThenFail)
	require.Len(t, a.Responses, 3)
	for _, r := range a.Responses[:2] {
		assert.Equal(t, 200, r.Status, "%s keeps its own status", r.Key)
		assert.Contains(t, string(r.Response), `"new_id"`, "%s keeps its own response", r.Key)
		require.NotNil(t, r.RolledBack, r.Key)
		assert.True(t, *r.RolledBack, r.Key)
		assert.Equal(t, 200, r.RollbackStatus, r.Key)
	}
	require.NotNil(t, a.Responses[2].RolledBack)
	assert.False(t, *a.Responses[2].RolledBack, "the failed step has nothing to undo")
	require.NotNil(t, a.Atomic)
	assert.False(t, a.Atomic.Committed)
	assert.Empty(t, a.Atomic.RollbackFailures)
	assert.Nil(t, a.CriticalPath, "no timings unless asked")

	assert.Zero(t, in.producers(t), "both producers were deleted again")
	assert.Equal(t, 2.0, in.metric(t, `batchd_rollbacks_total{outcome="ok"}`))
	assert.Equal(t, 0.0, in.metric(t, `batchd_rollbacks_total{outcome="failed"}`))

	// The same batch without the failing step commits, and nothing is rolled back.
	a = in.extBatch(t, strings.Replace(atomicAddTwiceThenFail, `"path": "Demo/Fail"`, `"path": "Demo/Echo"`, 1))
	assert.True(t, a.Atomic.Committed)
	assert.Equal(t, 2, in.producers(t))
	assert.Equal(t, 2.0, in.metric(t, `batchd_rollbacks_total{outcome="ok"}`))
}

func TestAtomicFailedRollbackIsLoud(t *testing.T) {
	in := start(t)
	a := in.extBatch(t, `{"atomic": true, "requests": [
		{"key": "add", "path": "Producer/Add", "payload": {"name": "Fanta"},
		 "rollback": {"path": "Demo/Fail", "payload": {"status": 503, "error": 77, "description": "cannot undo"}}},
		{"key": "fail", "path": "Demo/Fail", "depends_on": ["add"]},
		{"key": "never", "path": "Producer/Add", "payload": {"name": "x"}, "depends_on": ["fail"]}
	]}`)
	assert.Equal(t, 424, a.Responses[2].Status, "a dependent of the failed step")
	assert.False(t, *a.Responses[0].RolledBack)
	assert.Equal(t, 503, a.Responses[0].RollbackStatus)
	require.Len(t, a.Atomic.RollbackFailures, 1)
	f := a.Atomic.RollbackFailures[0]
	assert.Equal(t, "add", f.Key)
	assert.Equal(t, 503, f.Status)
	assert.Contains(t, string(f.Response), "cannot undo")
	assert.Equal(t, 1, in.producers(t), "the step stays done, and the answer says so")
	assert.Equal(t, 1.0, in.metric(t, `batchd_rollbacks_total{outcome="failed"}`))
	assert.Contains(t, in.logs.String(), `"msg":"rollback failed"`)
}

func TestAtomicRequireRollback(t *testing.T) {
	in := start(t, "-atomic-require-rollback")
	body := `{"atomic": true, "requests": [
		{"key": "add", "path": "Producer/Add", "payload": {"name": "x"}, "rollback": {"path": "Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
		{"key": "edit", "path": "Producer/Edit", "payload": {"id": "${add.result.new_id}", "name": "y"}}]}`
	status, _, b := in.send(t, body)
	require.Equal(t, http.StatusBadRequest, status, "%s", b)
	var r refusal
	require.NoError(t, json.Unmarshal(b, &r))
	require.Len(t, r.Result.Details, 1)
	assert.Equal(t, "edit", r.Result.Details[0].Key)
	assert.Equal(t, "missing_rollback", r.Result.Details[0].Reason)
	assert.Zero(t, in.producers(t), "nothing ran")
	assert.Equal(t, 1.0, in.metric(t, `batchd_batches_rejected_total{reason="missing_rollback"}`))

	// Not atomic: no rollback needed.
	status, _, b = in.send(t, strings.Replace(body, `"atomic": true`, `"atomic": false`, 1))
	assert.Equal(t, http.StatusOK, status, "%s", b)
}

func TestRequireRollbackFlagAndEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want bool
	}{
		{nil, nil, false},
		{[]string{"-atomic-require-rollback"}, nil, true},
		{[]string{"-atomic-require-rollback=false"}, map[string]string{"BATCHD_ATOMIC_REQUIRE_ROLLBACK": "true"}, false},
		{nil, map[string]string{"BATCHD_ATOMIC_REQUIRE_ROLLBACK": "1"}, true},
	} {
		c, err := parseConfig(tc.args, env(tc.env), io.Discard)
		require.NoError(t, err, "%v %v", tc.args, tc.env)
		assert.Equal(t, tc.want, c.requireRollback, "%v %v", tc.args, tc.env)
	}
	_, err := parseConfig(nil, env(map[string]string{"BATCHD_ATOMIC_REQUIRE_ROLLBACK": "maybe"}), io.Discard)
	var ue *usageError
	assert.ErrorAs(t, err, &ue)
}

// TestStreamedResults reads the NDJSON answer line by line: the Echo step's line must arrive while the Sleep step
// is still sleeping. Lines come in completion order, so the first line read names the Echo step: it was written
// and flushed before the Sleep step ended, which is what the test asserts (an order, not a duration).
func TestStreamedResults(t *testing.T) {
	in := start(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, in.base+"/v1/batch", strings.NewReader(`{"requests": [
		{"key": "sleep", "path": "Demo/Sleep", "payload": {"ms": 300}},
		{"key": "echo", "path": "Demo/Echo", "payload": {"hello": "world"}},
		{"key": "after", "path": "Demo/Echo", "payload": "${sleep.result.slept_ms}"}]}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := in.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))

	type line struct {
		Index    *int            `json:"index"`
		Key      string          `json:"key"`
		Status   int             `json:"status"`
		Response json.RawMessage `json:"response"`
		Steps    int             `json:"steps"`
		Failed   int             `json:"failed"`
	}
	br := bufio.NewReader(resp.Body)
	next := func() (line, string) {
		s, err := br.ReadString('\n')
		require.NoError(t, err, "partial line %q", s)
		var l line
		require.NoError(t, json.Unmarshal([]byte(s), &l), s)
		return l, s
	}

	first, raw := next()
	assert.Equal(t, "echo", first.Key, "the finished step arrives first, before the sleeping one ends: %s", raw)
	require.NotNil(t, first.Index)
	assert.Equal(t, 1, *first.Index)
	assert.JSONEq(t, `{"ok":true,"result":{"hello":"world"}}`, string(first.Response))

	seen := map[string]int{first.Key: 1}
	var rest []string
	for {
		l, raw := next()
		if l.Index == nil {
			assert.Equal(t, 3, l.Steps, "summary: %s", raw)
			assert.Zero(t, l.Failed)
			break
		}
		seen[l.Key]++
		rest = append(rest, l.Key)
		if l.Key == "after" {
			assert.JSONEq(t, `{"ok":true,"result":300}`, string(l.Response))
		}
	}
	assert.Equal(t, []string{"sleep", "after"}, rest, "completion order")
	assert.Equal(t, map[string]int{"sleep": 1, "echo": 1, "after": 1}, seen, "every key exactly once")
	_, err = br.ReadByte()
	assert.Equal(t, io.EOF, err, "the summary is the last line")
}

func TestStepTimings(t *testing.T) {
	in := start(t)
	a := in.extBatch(t, `{"timings": true, "requests": [
		{"key": "a", "path": "Demo/Sleep", "payload": {"ms": 20}},
		{"key": "b", "path": "Demo/Sleep", "payload": {"ms": 20}, "depends_on": ["a"]},
		{"key": "c", "path": "Demo/Echo"},
		{"key": "x", "path": "Demo/Echo", "depends_on": ["f"]},
		{"key": "f", "path": "Demo/Fail"}]}`)
	require.NotNil(t, a.CriticalPath)
	assert.Nil(t, a.Atomic, "not atomic")
	byKey := map[string]int{}
	for i, r := range a.Responses {
		byKey[r.Key] = i
		require.NotNil(t, r.Timing, r.Key)
		assert.Nil(t, r.RolledBack)
		if r.Key == "x" {
			assert.Nil(t, r.Timing.Started, "x never started")
			continue
		}
		require.NotNil(t, r.Timing.Started, r.Key)
		require.NotNil(t, r.Timing.Duration, r.Key)
		assert.GreaterOrEqual(t, *r.Timing.Started, r.Timing.Queued, r.Key)
		assert.LessOrEqual(t, *r.Timing.Duration, *a.CriticalPath, r.Key)
	}
	ta, tb := a.Responses[byKey["a"]].Timing, a.Responses[byKey["b"]].Timing
	const us = 0.002 // each figure is truncated to the microsecond, and sums of them are float sums
	assert.GreaterOrEqual(t, tb.Queued+us, *ta.Started+*ta.Duration, "b became ready when a ended")
	assert.GreaterOrEqual(t, *a.CriticalPath+us, *ta.Duration+*tb.Duration, "the chain a → b")
	assert.GreaterOrEqual(t, *a.CriticalPath, 40.0, "two 20 ms sleeps in a chain")

	// Without "timings" the answer is the plain one.
	status, _, b := in.send(t, `{"requests": [{"key": "a", "path": "Demo/Echo"}]}`)
	require.Equal(t, http.StatusOK, status)
	assert.NotContains(t, string(b), "timing")
	assert.NotContains(t, string(b), "critical_path_ms")
}

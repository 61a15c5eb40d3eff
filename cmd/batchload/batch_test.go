package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Rules of README "Requests", "Placeholders" that the scenario batches must follow.
var (
	keyRE         = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	placeholderRE = regexp.MustCompile(`\$\{([A-Za-z0-9_-]+)((?:\.[^.}]+)+)\}`)
)

// decodeStrict decodes a request the way the contract reads it: no unknown shapes, no duplicate members.
func decodeStrict(t *testing.T, body []byte) map[string]json.RawMessage {
	t.Helper()
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	require.NoError(t, dec.Decode(&top))
	assert.False(t, dec.More(), "trailing data")
	return top
}

func TestBatchBodiesFollowTheContract(t *testing.T) {
	for _, tc := range []struct {
		spec      batchSpec
		wantPaths func(i int) string
		chained   bool
	}{
		{batchSpec{kind: batchIndependent, steps: 50, prefix: fastPrefix}, func(int) string { return "fast/Item/Add" }, false},
		{batchSpec{kind: batchIndependent, steps: 50, prefix: slowPrefix}, func(int) string { return "slow/Item/Add" }, false},
		{batchSpec{kind: batchIndependent, steps: 10, prefix: fastPrefix}, func(int) string { return "fast/Item/Add" }, false},
		{batchSpec{kind: batchChain, steps: 10, prefix: slowPrefix}, func(i int) string {
			if i == 0 {
				return "slow/Item/Add"
			}
			return fmt.Sprintf("slow/Item/Get/${s%d.result.new_id}", i-1)
		}, true},
		{batchSpec{kind: batchEcho, steps: 10}, func(int) string { return "Demo/Echo" }, false},
	} {
		t.Run(fmt.Sprintf("kind%d_%d_%s", tc.spec.kind, tc.spec.steps, tc.spec.prefix), func(t *testing.T) {
			top := decodeStrict(t, tc.spec.body())
			assert.ElementsMatch(t, []string{"stop_on_error", "requests"}, keysOf(top))
			assert.JSONEq(t, "false", string(top["stop_on_error"]))
			var steps []map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(top["requests"], &steps))
			require.Len(t, steps, tc.spec.steps)
			require.LessOrEqual(t, len(steps), 50, "-max-steps defaults to 50")

			seen := map[string]int{}
			for i, st := range steps {
				assert.ElementsMatch(t, []string{"key", "path", "payload"}, keysOf(st))
				var key, path string
				require.NoError(t, json.Unmarshal(st["key"], &key))
				require.NoError(t, json.Unmarshal(st["path"], &path))
				assert.Regexp(t, keyRE, key)
				assert.Equal(t, stepKey(i), key)
				_, dup := seen[key]
				assert.False(t, dup, "duplicate key %s", key)
				seen[key] = i

				assert.Equal(t, tc.wantPaths(i), path)
				assert.False(t, strings.HasPrefix(path, "/"), "paths are joined under the upstream base")
				for seg := range strings.SplitSeq(placeholderRE.ReplaceAllString(path, "X"), "/") {
					assert.NotContains(t, []string{"", ".", ".."}, seg, "refused path segment in %q", path)
				}
				assert.NotContains(t, strings.ToLower(path), "batch")

				// Placeholders only in chains, each naming the step before, which appears earlier.
				refs := placeholderRE.FindAllStringSubmatch(path, -1)
				if !tc.chained || i == 0 {
					assert.Empty(t, refs)
				} else if assert.Len(t, refs, 1) {
					assert.Equal(t, stepKey(i-1), refs[0][1])
					assert.Equal(t, ".result.new_id", refs[0][2])
					assert.Less(t, seen[refs[0][1]], i)
				}
				assert.NotContains(t, string(st["payload"]), "${", "payloads carry no placeholder")
			}
		})
	}
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDirectBodiesMatchTheBatchPayloads(t *testing.T) {
	spec := batchSpec{kind: batchIndependent, steps: 3, prefix: fastPrefix}
	var req batchRequest
	require.NoError(t, json.Unmarshal(spec.body(), &req))
	for i := range spec.steps {
		want, err := json.Marshal(req.Requests[i].Payload)
		require.NoError(t, err)
		assert.JSONEq(t, string(want), string(spec.directBody(i)))
	}
	assert.JSONEq(t, `{"n":0}`, string(batchSpec{kind: batchEcho, steps: 1}.directBody(0)))
}

// answer builds a batchd answer for spec with the given per-step statuses and ids.
func answer(keys []string, statuses []int, ids []int64) []byte {
	var b strings.Builder
	b.WriteString(`{"responses":[`)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"key":%q,"status":%d,"response":{"ok":true,"result":{"new_id":%d}}}`, k, statuses[i], ids[i])
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func TestCheckBatch(t *testing.T) {
	indep := batchSpec{kind: batchIndependent, steps: 3, prefix: fastPrefix}
	chain := batchSpec{kind: batchChain, steps: 3, prefix: slowPrefix}
	keys := []string{"s0", "s1", "s2"}
	ok := []int{200, 200, 200}
	for _, tc := range []struct {
		name    string
		spec    batchSpec
		status  int
		body    []byte
		wantErr string
	}{
		{"independent ok, ids in any order", indep, 200, answer(keys, ok, []int64{9, 3, 5}), ""},
		{"chain ok", chain, 200, answer(keys, ok, []int64{3, 5, 9}), ""},
		{"chain out of order", chain, 200, answer(keys, ok, []int64{3, 9, 5}), "did not run in order"},
		{"batch refused", indep, 400, []byte(`{"ok":false}`), "HTTP 400"},
		{"not JSON", indep, 200, []byte(`nope`), "unexpected batch answer"},
		{"result not an object", indep, 200, []byte(`{"responses":[{"key":"s0","status":200,"response":{"ok":true,"result":[1]}}]}`), "unexpected batch answer"},
		{"failing step quoted as sent", indep, 200, []byte(`{"responses":[{"key":"s0","status":502,"response":{"ok":false,"result":{"error":5020,"description":"upstream down"}}},{"key":"s1","status":200,"response":{"ok":true,"result":{"new_id":2}}},{"key":"s2","status":200,"response":{"ok":true,"result":{"new_id":3}}}]}`), `status 502: {"ok":false,"result":{"error":5020,"description":"upstream down"}}`},
		{"too few results", indep, 200, answer(keys[:2], ok, []int64{1, 2}), "2 results, want 3"},
		{"results out of request order", indep, 200, answer([]string{"s1", "s0", "s2"}, ok, []int64{1, 2, 3}), `key "s1", want "s0"`},
		{"step failed", indep, 200, answer(keys, []int{200, 424, 200}, []int64{1, 2, 3}), "step s1: status 424"},
		{"no new_id", indep, 200, []byte(`{"responses":[{"key":"s0","status":200,"response":{"ok":true,"result":{}}},{"key":"s1","status":200,"response":{"ok":true,"result":{"new_id":2}}},{"key":"s2","status":200,"response":{"ok":true,"result":{"new_id":3}}}]}`), "no positive result.new_id"},
		{"business error", indep, 200, []byte(`{"responses":[{"key":"s0","status":200,"response":{"ok":false,"result":{"error":1}}},{"key":"s1","status":200,"response":{"ok":true,"result":{"new_id":2}}},{"key":"s2","status":200,"response":{"ok":true,"result":{"new_id":3}}}]}`), "ok is not true"},
		{"echo ok", batchSpec{kind: batchEcho, steps: 2}, 200, []byte(`{"responses":[{"key":"s0","status":200,"response":{"ok":true,"result":{"n":0}}},{"key":"s1","status":200,"response":{"ok":true,"result":{"n":1}}}]}`), ""},
		{"echo wrong payload", batchSpec{kind: batchEcho, steps: 2}, 200, []byte(`{"responses":[{"key":"s0","status":200,"response":{"ok":true,"result":{"n":0}}},{"key":"s1","status":200,"response":{"ok":true,"result":{"n":0}}}]}`), `not {"n": 1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkBatch(tc.spec, tc.status, tc.body)
			if tc.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.wantErr)
			}
		})
	}
}

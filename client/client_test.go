package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/client"
)

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(startBatchd(t), cfg)
	require.NoError(t, err)
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestNewValidatesTheBaseURL(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"localhost:8080", "must start with http:// or https://"},
		{"ftp://x", "must start with http:// or https://"},
		{"http://", "names no host"},
		{"http://x/?a=1", "no query"},
		{"http://u:p@x/", "no query, fragment or user info"},
		{"http://x/%zz", "invalid URL escape"},
	} {
		_, err := client.New(tt.url, client.Config{})
		require.Error(t, err, tt.url)
		assert.Contains(t, err.Error(), tt.want, tt.url)
	}
	c, err := client.New("https://batchd.example/prefix/", client.Config{})
	require.NoError(t, err)
	assert.Equal(t, "https://batchd.example/prefix", c.BaseURL())
}

func TestRunReadsResultsByKeyAndInOrder(t *testing.T) {
	c := newClient(t, client.Config{})
	b := (&client.Batch{}).Add(
		// Listed before the step it waits for: order in the request is not execution order.
		client.Step{Key: "ProducerGet", Path: "Producer/Get", Payload: map[string]any{"ids": []string{client.Ref("ProducerAdd", "result", "new_id")}}},
		client.Step{Key: "ProducerAdd", Path: "Producer/Add", Payload: map[string]string{"name": "Coca-Cola"}},
		client.Step{Key: "Fail", Path: "Demo/Fail", Payload: json.RawMessage(`{"description":"nope"}`)},
		client.Step{Key: "Dependent", Path: "Demo/Echo", DependsOn: []string{"Fail"}},
	)
	var seen []string
	body, err := json.Marshal(b)
	require.NoError(t, err)
	ans, err := c.RunStream(ctx(t), body, func(r client.Result) { seen = append(seen, r.Key) })
	require.NoError(t, err)

	require.Len(t, ans.Results, 4)
	for i, key := range []string{"ProducerGet", "ProducerAdd", "Fail", "Dependent"} {
		assert.Equal(t, key, ans.Results[i].Key)
		assert.Equal(t, i, ans.Results[i].Index)
	}
	assert.ElementsMatch(t, []string{"ProducerGet", "ProducerAdd", "Fail", "Dependent"}, seen)
	assert.Less(t, indexOf(seen, "ProducerAdd"), indexOf(seen, "ProducerGet"), "streamed in completion order")
	assert.Equal(t, 2, ans.Failed, "Fail and its dependent, as batchd counts them")
	assert.False(t, ans.OK())

	get, ok := ans.Result("ProducerGet")
	require.True(t, ok)
	var got struct {
		Result []struct {
			ID   int
			Name string
		}
	}
	require.NoError(t, get.Decode(&got))
	require.Len(t, got.Result, 1)
	assert.Equal(t, "Coca-Cola", got.Result[0].Name)
	add, _ := ans.Result("ProducerAdd")
	assert.JSONEq(t, `{"ok":true,"result":{"new_id":1}}`, string(add.Response))
	_, isErr := add.ErrorResult()
	assert.False(t, isErr)

	fail, _ := ans.Result("Fail")
	er, ok := fail.ErrorResult()
	require.True(t, ok)
	assert.Equal(t, client.ErrorResult{Code: 1000, Description: "nope"}, er)
	dep, _ := ans.Result("Dependent")
	assert.Equal(t, 424, dep.Status)
	er, ok = dep.ErrorResult()
	require.True(t, ok)
	assert.Equal(t, 4240, er.Code)
	_, ok = ans.Result("nope")
	assert.False(t, ok)
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// The answer rebuilt from the stream is the JSON answer batchd writes itself.
func TestAnswerMarshalsAsBatchdsJSONAnswer(t *testing.T) {
	base := startBatchd(t)
	c, err := client.New(base, client.Config{})
	require.NoError(t, err)
	batch := `{"atomic": true, "requests": [
		{"key": "a", "path": "Demo/Echo", "payload": {"x": [1, 2.5, "s\u00e9", null, {"y": true}]},
		 "rollback": {"path": "Demo/Echo", "payload": {"undo": "${self.result.x.0}"}}},
		{"key": "b", "path": "Demo/Echo", "payload": "text", "depends_on": ["a"]},
		{"key": "c", "path": "Demo/Fail", "payload": {"status": 409}, "depends_on": ["b"]},
		{"key": "d", "path": "Demo/Echo", "depends_on": ["c"]}]}`

	ans, err := c.RunJSON(ctx(t), []byte(batch))
	require.NoError(t, err)
	mine, err := json.Marshal(ans)
	require.NoError(t, err)

	resp, err := http.Post(base+"/v1/batch", "application/json", strings.NewReader(batch))
	require.NoError(t, err)
	defer resp.Body.Close()
	theirs, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.JSONEq(t, string(theirs), string(mine))

	a, _ := ans.Result("a")
	assert.True(t, a.RolledBack)
	require.NotNil(t, a.RollbackStatus)
	assert.Equal(t, 200, *a.RollbackStatus)
	require.NotNil(t, ans.Atomic)
	assert.False(t, ans.Atomic.Committed)
	assert.Equal(t, 2, ans.Failed)
}

func TestRunTimings(t *testing.T) {
	c := newClient(t, client.Config{})
	ans, err := c.Run(ctx(t), &client.Batch{Timings: true, Steps: []client.Step{
		{Key: "slow", Path: "Demo/Sleep", Payload: map[string]int{"ms": 20}},
		{Key: "after", Path: "Demo/Echo", DependsOn: []string{"slow"}},
		{Key: "skipped", Path: "Demo/Echo", Payload: client.Ref("nope")},
	}})
	var refused *client.Error
	require.ErrorAs(t, err, &refused, "${nope} names no step")
	assert.Nil(t, ans)

	ans, err = c.Run(ctx(t), &client.Batch{Timings: true, StopOnError: true, Steps: []client.Step{
		{Key: "slow", Path: "Demo/Sleep", Payload: map[string]int{"ms": 20}},
		{Key: "after", Path: "Demo/Echo", DependsOn: []string{"slow"}},
	}})
	require.NoError(t, err)
	require.NotNil(t, ans.CriticalPathMS)
	slow, after := ans.Results[0], ans.Results[1]
	require.NotNil(t, slow.Timing)
	require.NotNil(t, slow.Timing.DurationMS)
	require.NotNil(t, after.Timing.StartedMS)
	assert.GreaterOrEqual(t, *slow.Timing.DurationMS, 20.0)
	assert.GreaterOrEqual(t, after.Timing.QueuedMS, *slow.Timing.StartedMS+*slow.Timing.DurationMS-0.001)
	assert.GreaterOrEqual(t, *ans.CriticalPathMS, *slow.Timing.DurationMS)
	assert.True(t, ans.OK())
}

func TestRefusalIsATypedError(t *testing.T) {
	c := newClient(t, client.Config{})
	_, err := c.RunJSON(ctx(t), []byte(`{"requests": [
		{"key": "a", "path": "https://evil.test/x"},
		{"key": "b", "path": "Producer/Get", "payload": {"ids": ["${nope.result.id}"]}},
		{"key": "c", "path": "Item/Import"}]}`), client.Header("X-Request-Id", "refusal-1"))
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 400, e.Status)
	assert.Equal(t, 4000, e.Code)
	assert.Equal(t, "refusal-1", e.RequestID)
	assert.Contains(t, e.Description, "3 problems")
	require.Len(t, e.Details, 3)
	assert.Equal(t, "a", e.Details[0].Key)
	assert.Equal(t, "invalid_path", e.Details[0].Reason)
	assert.Equal(t, "unknown_ref", e.Details[1].Reason)
	assert.Contains(t, e.Details[1].Problem, "${nope.result.id}")
	assert.Equal(t, "blocked", e.Details[2].Reason)
	assert.Contains(t, e.Error(), "batchd answered 400 (error 4000): batch refused")

	_, err = c.PlanJSON(ctx(t), []byte(`{"requests": [`))
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 4000, e.Code)

	// A body that is not an ErrorResult keeps its text.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "bad gateway from a proxy", http.StatusBadGateway)
	}))
	defer plain.Close()
	pc, err := client.New(plain.URL, client.Config{})
	require.NoError(t, err)
	_, err = pc.Run(ctx(t), &client.Batch{Steps: []client.Step{{Key: "a", Path: "x"}}})
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 502, e.Status)
	assert.Zero(t, e.Code)
	assert.Equal(t, 7*time.Second, e.RetryAfter)
	assert.Contains(t, e.Error(), "bad gateway from a proxy")
}

func TestBareArrayDefaultsKeysToIndexes(t *testing.T) {
	c := newClient(t, client.Config{})
	ans, err := c.RunJSON(ctx(t), []byte(`[{"path":"/Demo/Echo","body":{"a":1}},{"path":"Demo/Echo","body":{"b":"${0.result.a}"}}]`))
	require.NoError(t, err)
	r, ok := ans.Result("1")
	require.True(t, ok)
	assert.JSONEq(t, `{"ok":true,"result":{"b":1}}`, string(r.Response))
}

func TestPlan(t *testing.T) {
	c := newClient(t, client.Config{})
	b := &client.Batch{Steps: []client.Step{
		{Key: "A", Path: "Producer/Add", Payload: map[string]string{"name": "x"}},
		{Key: "B", Path: "Demo/Echo"},
		{Key: "C", Path: "Producer/Get", Payload: map[string]any{"ids": []string{client.Ref("A", "result", "new_id")}}, DependsOn: []string{"B"}},
		{Key: "D", Method: "GET", Path: "Demo/Echo/" + client.Ref("C", "result", "0", "id")},
	}}
	p, err := c.Plan(ctx(t), b)
	require.NoError(t, err)
	assert.Equal(t, 3, p.Levels)
	assert.Equal(t, []string{"A", "C", "D"}, p.CriticalPath)
	levels := p.ByLevel()
	require.Len(t, levels, 3)
	assert.Equal(t, []string{"A", "B"}, keys(levels[0]))
	assert.Equal(t, []string{"A", "B"}, levels[1][0].DependsOn)
	assert.Equal(t, "GET", levels[2][0].Method)
	assert.Equal(t, "Demo/Echo/${C.result.0.id}", levels[2][0].Path)

	// Nothing ran: a Producer/Add now gets the first id.
	ans, err := c.Run(ctx(t), &client.Batch{Steps: b.Steps[:1]})
	require.NoError(t, err)
	assert.JSONEq(t, `{"ok":true,"result":{"new_id":1}}`, string(ans.Results[0].Response))

	// A batch that asks for a dry run itself is answered with its plan by Run too.
	ans, err = c.RunJSON(ctx(t), []byte(`{"dry_run": true, "requests": [{"key": "A", "path": "Demo/Echo"}]}`))
	require.NoError(t, err)
	require.NotNil(t, ans.Plan)
	assert.False(t, ans.OK())
	assert.Equal(t, 1, ans.Plan.Levels)
}

func keys(steps []client.PlanStep) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Key)
	}
	return out
}

func TestLiteralIsNeverResolved(t *testing.T) {
	c := newClient(t, client.Config{})
	for _, s := range []string{"${A.result}", "$${A}", "$$${A}", "a$", "${", "$", "}${x}{"} {
		ans, err := c.Run(ctx(t), &client.Batch{Steps: []client.Step{
			{Key: "A", Path: "Demo/Echo", Payload: map[string]string{"v": client.Literal(s)}},
		}})
		require.NoError(t, err, s)
		var got struct{ Result struct{ V string } }
		require.NoError(t, ans.Results[0].Decode(&got))
		assert.Equal(t, s, got.Result.V)
	}
}

func TestIdempotencyKeyReplaysTheAnswer(t *testing.T) {
	c := newClient(t, client.Config{Header: http.Header{"Authorization": {"Bearer t1"}}})
	b := &client.Batch{Steps: []client.Step{{Key: "add", Path: "Producer/Add", Payload: map[string]string{"name": "once"}}}}
	first, err := c.Run(ctx(t), b, client.IdempotencyKey("import-7"))
	require.NoError(t, err)
	again, err := c.Run(ctx(t), b, client.IdempotencyKey("import-7"))
	require.NoError(t, err)
	assert.JSONEq(t, string(first.Results[0].Response), string(again.Results[0].Response))
	other, err := c.Run(ctx(t), b)
	require.NoError(t, err)
	assert.JSONEq(t, `{"ok":true,"result":{"new_id":2}}`, string(other.Results[0].Response), "ran only twice")
}

func TestMaxAnswerBoundsWhatIsRead(t *testing.T) {
	c := newClient(t, client.Config{MaxAnswer: 4 << 10})
	_, err := c.Run(ctx(t), &client.Batch{Steps: []client.Step{
		{Key: "big", Path: "Demo/Echo", Payload: strings.Repeat("x", 8<<10)},
	}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Config.MaxAnswer")
	ans, err := c.Run(ctx(t), &client.Batch{Steps: []client.Step{{Key: "small", Path: "Demo/Echo", Payload: "x"}}})
	require.NoError(t, err)
	assert.True(t, ans.OK())
}

// An answer cut short is ErrIncomplete with what arrived. batchd cannot be made to cut a stream at a chosen
// line, so a loopback server writes one.
func TestStreamCutShort(t *testing.T) {
	for name, body := range map[string]string{
		"no summary": `{"index":1,"key":"b","status":200,"response":{"ok":true}}` + "\n",
		"cut line":   `{"index":1,"key":"b","status":200,"response":{"ok":true}}` + "\n" + `{"index":0,"key":"a","sta`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				assert.Equal(t, "application/x-ndjson", r.Header.Get("Accept"))
				w.Header().Set("Content-Type", "application/x-ndjson")
				_, _ = io.WriteString(w, body)
			}))
			defer srv.Close()
			c, err := client.New(srv.URL, client.Config{})
			require.NoError(t, err)
			ans, err := c.RunJSON(ctx(t), []byte(`[]`))
			require.ErrorIs(t, err, client.ErrIncomplete)
			require.Len(t, ans.Results, 1)
			r, ok := ans.Result("b")
			assert.True(t, ok)
			assert.Equal(t, 1, r.Index)
		})
	}
}

// readStream through a loopback server: whatever the bytes, no panic, and a nil error only for a consistent
// answer (steps 0…n-1 once each).
func FuzzReadStream(f *testing.F) {
	f.Add([]byte("{\"index\":0,\"key\":\"a\",\"status\":200,\"response\":null}\n{\"steps\":1,\"failed\":0,\"duration_ms\":1}\n"))
	f.Add([]byte("{\"index\":0,\"key\":\"a\",\"rolled_back\":true,\"rollback_status\":200}\n{\"steps\":1,\"failed\":0}\n"))
	f.Add([]byte("{\"index\":5,\"key\":\"a\",\"status\":200}\n{\"steps\":1,\"failed\":0}\n"))
	f.Add([]byte("{\"steps\":0,\"failed\":0}\n"))
	f.Add([]byte("\n\r\n{\"index\":0,\"key\":\"a\",\"status\":1}\r\n{\"index\":0,\"key\":\"a\",\"status\":1}\n{\"steps\":2,\"failed\":0}"))
	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = w.Write(*body.Load())
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.Config{MaxAnswer: 1 << 16})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, b []byte) {
		body.Store(&b)
		ans, err := c.RunJSON(context.Background(), []byte(`[]`))
		if err != nil {
			return
		}
		for i, r := range ans.Results {
			if r.Index != i {
				t.Fatalf("result %d has index %d", i, r.Index)
			}
			if got, ok := ans.Result(r.Key); !ok || !bytes.Equal(got.Response, ans.Results[indexOfKey(ans, r.Key)].Response) {
				t.Fatalf("result %q not found by key", r.Key)
			}
		}
		if _, err := json.Marshal(ans); err != nil {
			t.Fatalf("answer does not marshal: %v", err)
		}
	})
}

func indexOfKey(a *client.Answer, key string) int {
	for i := len(a.Results) - 1; i >= 0; i-- {
		if a.Results[i].Key == key {
			return i
		}
	}
	return -1
}

// The REST helpers' fields of a step are written with the names batchd reads, and only when set.
func TestStepRESTHelperFields(t *testing.T) {
	b := &client.Batch{Steps: []client.Step{
		{Key: "del", Method: "DELETE", Path: "customers/7", OKStatus: []int{404}},
		{Key: "each", Path: "orders", ForEach: client.Ref("L", "result"), When: "exists " + client.Ref("L", "result", "0"),
			CaptureHeaders: []string{"ETag"}},
		{Key: "plain", Path: "Demo/Echo"},
	}}
	got, err := json.Marshal(b)
	require.NoError(t, err)
	assert.JSONEq(t, `{"requests": [
		{"key": "del", "method": "DELETE", "path": "customers/7", "ok_status": [404]},
		{"key": "each", "path": "orders", "for_each": "${L.result}", "when": "exists ${L.result.0}", "capture_headers": ["ETag"]},
		{"key": "plain", "path": "Demo/Echo"}]}`, string(got))
}

// A fan-out step's items and a step's captured headers, as batchd streams them, are read into the result and
// written back in the answer's JSON form; an empty list of items or of headers stays in the answer. (A loopback
// server writes the lines: the REST helpers are not on every batchd.)
func TestItemsAndHeadersRoundTrip(t *testing.T) {
	lines := `{"index":1,"key":"each","status":200,"response":[{"id":1},null],"items":[{"status":201,"response":{"id":1}},{"status":204,"response":null}]}
{"index":0,"key":"get","status":200,"response":{"ok":true},"headers":{"ETag":"\"v1\""}}
{"index":2,"key":"none","status":200,"response":[],"items":[],"headers":{}}
{"steps":3,"failed":0,"duration_ms":1.5}
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, lines)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.Config{})
	require.NoError(t, err)
	ans, err := c.RunJSON(ctx(t), []byte(`[]`))
	require.NoError(t, err)
	each, _ := ans.Result("each")
	require.Len(t, each.Items, 2)
	assert.Equal(t, 204, each.Items[1].Status)
	assert.Equal(t, "null", string(each.Items[1].Response))
	get, _ := ans.Result("get")
	assert.Equal(t, map[string]string{"ETag": `"v1"`}, get.Headers)
	assert.Nil(t, get.Items)
	out, err := json.Marshal(ans)
	require.NoError(t, err)
	assert.JSONEq(t, `{"responses": [
		{"key":"get","status":200,"response":{"ok":true},"headers":{"ETag":"\"v1\""}},
		{"key":"each","status":200,"response":[{"id":1},null],"items":[{"status":201,"response":{"id":1}},{"status":204,"response":null}]},
		{"key":"none","status":200,"response":[],"items":[],"headers":{}}]}`, string(out))
}

package transport

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/idempotency"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// TestAnswerForms: the answer written whole, written to a client in chunks (bodies over a chunk written
// directly), and counted, are the same bytes; the bound holds it.
func TestAnswerForms(t *testing.T) {
	large := []byte(`{"ok":true,"result":"` + strings.Repeat("z", 3*chunk) + `"}`)
	for _, body := range []string{
		`{"requests":[{"key":"a","path":"x"},{"key":"b","path":"y"}]}`,
		`[{"path":"x"},{"path":"y"}]`,
		`{"timings":true,"atomic":true,"requests":[{"key":"a","path":"x","rollback":{"path":"u"}},{"key":"b-q","path":"y"}]}`,
	} {
		plan, err := planner.Parse([]byte(body), planner.Config{})
		require.NoError(t, err)
		results := []runner.Result{
			{Index: 0, Key: plan.Steps[0].Key, Status: 200, Body: large, Executed: true, Duration: time.Millisecond,
				Rollback: &runner.RollbackResult{Status: 500, Body: []byte(`{"e":1}`)}},
			{Index: 1, Key: plan.Steps[1].Key, Status: 424, Body: []byte(`{"ok":false}`), Failed: true},
		}
		whole := wire{}
		whole.answer(plan, results)
		var client bytes.Buffer
		chunked := wire{w: &client}
		chunked.answer(plan, results)
		require.NoError(t, chunked.err)
		assert.Equal(t, string(whole.buf), client.String(), body)
		assert.Equal(t, int64(len(whole.buf)), answerSize(plan, results))
		assert.GreaterOrEqual(t, answerBound(plan, results), int64(len(whole.buf)))
		assert.True(t, jsontext.Value(whole.buf).IsValid(), "%.300s", whole.buf)
	}
}

// fuzzAPI is the upstream of FuzzBudgetBalance, in process: POST /<n>/<kind> answers about n bytes of kind json
// (a JSON object), text, utf8 (JSON holding invalid UTF-8), pretty (indented JSON) or fail (a 500).
type fuzzAPI struct{}

func (fuzzAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	n, _ := strconv.Atoi(parts[0])
	fill := strings.Repeat("v", n)
	switch parts[len(parts)-1] {
	case "text":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "line\n"+fill)
	case "utf8":
		_, _ = io.WriteString(w, "{\"s\":\"\xff"+fill+"\"}")
	case "pretty":
		_, _ = io.WriteString(w, "{\n  \"id\": 1,\n  \"s\": \""+fill+"\"\n}\n")
	case "fail":
		w.WriteHeader(500)
		_, _ = io.WriteString(w, `{"ok":false}`)
	default:
		_, _ = io.WriteString(w, `{"ok":true,"result":{"id":7,"s":"`+fill+`"}}`)
	}
}

// FuzzBudgetBalance: for random batches over random response sizes, kinds and dependencies, under random batch
// and process budgets, answered as JSON or as a stream, with or without an Idempotency-Key, every answer is valid
// JSON (every line of a stream), and once every batch has ended the process budget holds nothing: every byte
// reserved was released.
func FuzzBudgetBalance(f *testing.F) {
	f.Add([]byte{3, 1, 0, 40, 2, 9, 200, 1, 4, 0, 0, 0})
	f.Add([]byte{8, 255, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte{1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, seed []byte) {
		next := func() int {
			if len(seed) == 0 {
				return 0
			}
			b := seed[0]
			seed = seed[1:]
			return int(b)
		}
		steps := 1 + next()%8
		batchLimit := int64(1+next()) << 10 // 1 KiB … 256 KiB
		pool := budget.NewPool(int64(64+next()) << 10)
		kinds := []string{"json", "text", "utf8", "pretty", "fail"}
		var b strings.Builder
		b.WriteString(`{"requests":[`)
		for i := range steps {
			if i > 0 {
				b.WriteString(",")
			}
			size := next() * next() // 0 … 64 KiB
			kind := kinds[next()%len(kinds)]
			payload := "null"
			if i > 0 {
				switch next() % 4 {
				case 1:
					payload = `"${s` + strconv.Itoa(next()%i) + `}"`
				case 2:
					payload = `["${s` + strconv.Itoa(next()%i) + `.result.s}","${s` + strconv.Itoa(next()%i) + `.result.s}"]`
				case 3:
					payload = `{"x":"id ${s` + strconv.Itoa(next()%i) + `.result.id}"}`
				}
			}
			fmt.Fprintf(&b, `{"key":"s%d","path":"%d/%s","payload":%s}`, i, size, kind, payload)
		}
		b.WriteString("]}")
		stream, keyed := next()%2 == 1, next()%2 == 1

		rn := runner.New(NewInProcessInvoker(fuzzAPI{}, 1<<20), runner.Config{MaxCallBody: 32 << 10})
		cfg := Config{Runner: rn, Memory: pool, MaxBatchBytes: batchLimit, MaxBody: 1 << 20}
		if keyed {
			cfg.Idempotency = idempotency.New(idempotency.Config{
				Store:     idempotency.NewMemory(idempotency.MemoryConfig{MaxBytes: 256 << 10}),
				MaxAnswer: 16 << 10,
			})
		}
		srv := New(cfg)
		for try := range 2 { // with a key, the second is a replay or the 409 of an answer not stored
			req := httptest.NewRequest(http.MethodPost, "/v1/batch", strings.NewReader(b.String()))
			req.Header.Set("Content-Type", "application/json")
			if stream {
				req.Header.Set("Accept", MIMENDJSON)
			}
			if keyed {
				req.Header.Set("Idempotency-Key", "k")
			}
			w := httptest.NewRecorder()
			srv.Handler().ServeHTTP(w, req)
			out := w.Body.Bytes()
			if w.Code == 200 && stream {
				for _, line := range bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n")) {
					if !jsontext.Value(line).IsValid() {
						t.Fatalf("try %d: stream line is not valid JSON: %.200q\nbatch %s", try, line, b.String())
					}
				}
			} else if !jsontext.Value(out).IsValid() {
				t.Fatalf("try %d: status %d, answer is not valid JSON: %.200q\nbatch %s", try, w.Code, out, b.String())
			}
			if w.Code != 200 && w.Code != 503 && w.Code != 409 {
				t.Fatalf("try %d: status %d: %.300s", try, w.Code, out)
			}
			if inUse := pool.InUse(); inUse != 0 {
				t.Fatalf("try %d: %d bytes still reserved after the batch ended\nbatch %s", try, inUse, b.String())
			}
			if !keyed {
				break
			}
		}
	})
}

// TestCappedBufferReserves: a capped buffer reserves every allocation before making it, holds no more than it
// allocated, and gives back everything it is discarded with.
func TestCappedBufferReserves(t *testing.T) {
	acct, err := budget.NewPool(0).Open(0, 0)
	require.NoError(t, err)
	buf, err := newCappedBuffer(-1, 100_000, acct)
	require.NoError(t, err)
	require.NoError(t, buf.readFrom(bytes.NewReader(make([]byte, 70_000))))
	assert.Equal(t, int64(cap(buf.buf)), acct.Used(), "reserved what it holds")
	body, err := buf.body("application/octet-stream") // not JSON: a string, reserved before it is built
	require.NoError(t, err)
	assert.Equal(t, int64(cap(body)), acct.Used(), "the raw buffer released, the string kept")
	buf.bud.Release(int64(cap(body)))
	assert.Zero(t, acct.Used())

	over, err := newCappedBuffer(10, 10, acct)
	require.NoError(t, err)
	assert.ErrorIs(t, over.readFrom(bytes.NewReader(make([]byte, 11))), errOverCap)
	over.discard()
	assert.Zero(t, acct.Used())

	small, err := budget.NewPool(0).Open(600, 0)
	require.NoError(t, err)
	refused, err := newCappedBuffer(-1, 100_000, small)
	require.NoError(t, err)
	err = refused.readFrom(bytes.NewReader(make([]byte, 2000)))
	var be *budget.Error
	require.ErrorAs(t, err, &be, "the growth past the budget is refused")
	refused.discard()
	assert.Zero(t, small.Used())
}

// TestLinesAndMillis: a streamed step line, rollback line and summary, with durations in milliseconds to the
// microsecond and a step never run timed by its queueing alone.
func TestLinesAndMillis(t *testing.T) {
	plan := func(body string) *planner.Plan {
		p, err := planner.Parse([]byte(body), planner.Config{})
		require.NoError(t, err)
		return p
	}
	line := func(f func(o *wire)) string {
		var o wire
		f(&o)
		return string(o.buf)
	}
	p := plan(`{"atomic": true, "timings": true, "requests": [{"key": "A", "path": "a", "rollback": {"path": "u"}}, {"key": "B", "path": "b"}]}`)
	us := time.Microsecond
	r := runner.Result{Index: 0, Key: "A", Status: 200, Body: []byte(`{"ok":true}`), Executed: true,
		Queued: 0, Started: 1050 * us, Duration: 12*time.Millisecond + 5*us}
	assert.Equal(t, `{"queued_ms":0,"started_ms":1.05,"duration_ms":12.005}`, line(func(o *wire) { o.timing(&r) }))
	assert.Equal(t, "{\"index\":0,\"key\":\"A\",\"status\":200,\"response\":{\"ok\":true},"+
		"\"timing\":{\"queued_ms\":0,\"started_ms\":1.05,\"duration_ms\":12.005}}\n", line(func(o *wire) { o.line(p, &r) }))
	never := runner.Result{Key: "B", Queued: 999 * us}
	assert.Equal(t, `{"queued_ms":0.999}`, line(func(o *wire) { o.timing(&never) }))

	r.Rollback = &runner.RollbackResult{OK: true, Status: 204, Executed: true}
	assert.Equal(t, "{\"index\":0,\"key\":\"A\",\"rolled_back\":true,\"rollback_status\":204}\n", line(func(o *wire) { o.rollbackLine(&r) }))

	b := runner.Result{Index: 1, Key: "B", Status: 500, Body: []byte("null"), Failed: true, Outcome: runner.OutcomeError}
	sum := line(func(o *wire) { o.summary(p, []runner.Result{r, b}, 20*time.Millisecond+100*us) })
	assert.Equal(t, `{"steps":2,"failed":1,"duration_ms":20.1,"critical_path_ms":12.005,"atomic":{"committed":false,"rollback_failures":[]}}`+"\n", sum)

	plain := plan(`[{"path": "a"}]`)
	assert.Equal(t, "{\"index\":0,\"key\":\"A\",\"status\":200,\"response\":{\"ok\":true}}\n", line(func(o *wire) { o.line(plain, &r) }))
	assert.Equal(t, "{\"steps\":1,\"failed\":0,\"duration_ms\":0.001}\n",
		line(func(o *wire) { o.summary(plain, []runner.Result{{}}, time.Microsecond) }))
}

// TestRESTMembers: a fan-out step's items and a step's captured headers, in the answer and in a stream line.
func TestRESTMembers(t *testing.T) {
	plan, err := planner.Parse([]byte(`{"requests": [{"key": "L", "path": "l", "capture_headers": ["ETag", "X-Missing"]},
		{"key": "F", "path": "f/${item}", "for_each": "${L.result}"}]}`), planner.Config{})
	require.NoError(t, err)
	results := []runner.Result{
		{Index: 0, Key: "L", Status: 200, Body: []byte(`{"result": [1, 2]}`), Header: http.Header{"Etag": {`"v1"`}}},
		{Index: 1, Key: "F", Status: 409, Body: []byte(`[{"a": 1}, {"e": 2}]`), Failed: true, Items: []runner.Item{
			{Status: 200, Body: []byte(`{"a": 1}`)}, {Status: 409, Body: []byte(`{"e": 2}`), Failed: true}}},
	}
	o := wire{}
	o.answer(plan, results)
	assert.Equal(t, `{"responses":[{"key":"L","status":200,"response":{"result": [1, 2]},"headers":{"ETag":"\"v1\""}},`+
		`{"key":"F","status":409,"response":[{"a": 1}, {"e": 2}],"items":[{"status":200,"response":{"a": 1}},{"status":409,"response":{"e": 2}}]}]}`,
		string(o.buf))
	assert.GreaterOrEqual(t, answerBound(plan, results), int64(len(o.buf)))
	line := wire{}
	line.line(plan, &results[1])
	assert.Equal(t, `{"index":1,"key":"F","status":409,"response":[{"a": 1}, {"e": 2}],"items":[{"status":200,"response":{"a": 1}},{"status":409,"response":{"e": 2}}]}`+"\n",
		string(line.buf), "one line: only line breaks are compacted away")
}

package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/idempotency"
	"github.com/batchd/batchd/runner"
)

var _ Idempotency = (*idempotency.Guard)(nil)

func TestWantsStream(t *testing.T) {
	for _, tc := range []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{"*/*"}, false},
		{[]string{"application/json"}, false},
		{[]string{"application/x-ndjson"}, true},
		{[]string{"Application/X-NDJSON"}, true},
		{[]string{"application/json", "application/x-ndjson"}, true},
		{[]string{"application/x-ndjson, application/json"}, true},
		{[]string{"application/x-ndjson;q=0.9, */*;q=1"}, true},
		{[]string{"application/json;q=1, application/x-ndjson;q=0.5"}, false},
		{[]string{"application/x-ndjson;q=0"}, false},
		{[]string{"application/x-ndjson;q=x"}, false},
		{[]string{"text/html;;, application/x-ndjson"}, true},
	} {
		assert.Equal(t, tc.want, WantsStream(tc.accept), "%q", tc.accept)
	}
}

// streamLine is any line of a streamed answer.
type streamLine struct {
	Index          *int            `json:"index"`
	Key            string          `json:"key"`
	Status         int             `json:"status"`
	Response       json.RawMessage `json:"response"`
	RolledBack     *bool           `json:"rolled_back"`
	RollbackStatus int             `json:"rollback_status"`
	Timing         json.RawMessage `json:"timing"`
	Steps          int             `json:"steps"`
	Failed         int             `json:"failed"`
	CriticalPath   *float64        `json:"critical_path_ms"`
	Atomic         *struct {
		Committed        bool              `json:"committed"`
		RollbackFailures []json.RawMessage `json:"rollback_failures"`
	} `json:"atomic"`
}

func readLine(t *testing.T, r *bufio.Reader) (streamLine, string) {
	t.Helper()
	s, err := r.ReadString('\n')
	require.NoError(t, err, "line so far %q", s)
	var l streamLine
	require.NoError(t, json.Unmarshal([]byte(s), &l), "%q", s)
	return l, s
}

func streamRequest(t *testing.T, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/v1/batch", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := http.DefaultTransport.RoundTrip(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestStreamFlushesEachLine holds step "slow" at the invoker until the test has read the line of step "fast" from
// the response: the line can only arrive if it was written and flushed while the batch still ran.
func TestStreamFlushesEachLine(t *testing.T) {
	release := make(chan struct{})
	inv := invokerFunc(func(ctx context.Context, c runner.Call) (runner.Response, error) {
		if c.Key == "slow" {
			select {
			case <-release:
			case <-time.After(20 * time.Second): // a safety bound, never what is measured
				return runner.Response{Status: 599, Body: []byte(`"not released"`)}, nil
			}
		}
		return runner.Response{Status: 200, Body: []byte(`{"ok":true,"result":"` + c.Key + `"}`)}, nil
	})
	_, ts := newTestServer(t, inv, &recordingObserver{}, io.Discard)
	resp := streamRequest(t, ts.URL, `{"timings": true, "requests": [
		{"key": "slow", "path": "Demo/Sleep"},
		{"key": "fast", "path": "Demo/Echo"},
		{"key": "after", "path": "Demo/Echo", "depends_on": ["slow"]}]}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
	assert.NotEmpty(t, resp.Header.Get("X-Request-Id"))
	br := bufio.NewReader(resp.Body)

	first, raw := readLine(t, br)
	close(release)
	assert.Equal(t, "fast", first.Key, "the finished step's line arrives while another still runs: %s", raw)
	require.NotNil(t, first.Index)
	assert.Equal(t, 1, *first.Index)
	assert.Equal(t, 200, first.Status)
	assert.JSONEq(t, `{"ok":true,"result":"fast"}`, string(first.Response))
	assert.NotEmpty(t, first.Timing, "timings: true adds timing to each line")

	seen := map[string]int{first.Key: 1}
	var order []string
	for {
		l, raw := readLine(t, br)
		if l.Index == nil { // the summary
			assert.Equal(t, 3, l.Steps, raw)
			assert.Zero(t, l.Failed)
			require.NotNil(t, l.CriticalPath, raw)
			assert.Nil(t, l.Atomic)
			break
		}
		seen[l.Key]++
		order = append(order, l.Key)
	}
	assert.Equal(t, []string{"slow", "after"}, order, "completion order")
	assert.Equal(t, map[string]int{"slow": 1, "fast": 1, "after": 1}, seen, "every key exactly once")
	_, err := br.ReadByte()
	assert.Equal(t, io.EOF, err, "the summary is the last line")
}

func TestStreamAtomicRollbackLines(t *testing.T) {
	_, ts := newTestServer(t, nil, &recordingObserver{}, io.Discard)
	resp := streamRequest(t, ts.URL, `{"atomic": true, "requests": [
		{"key": "add", "path": "Producer/Add", "payload": {"name": "x"},
		 "rollback": {"path": "Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
		{"key": "fail", "path": "Demo/Fail", "depends_on": ["add"]}]}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	require.Len(t, lines, 4, "%s", b)
	var ls []streamLine
	for _, s := range lines {
		var l streamLine
		require.NoError(t, json.Unmarshal([]byte(s), &l), s)
		ls = append(ls, l)
	}
	assert.Equal(t, "add", ls[0].Key)
	assert.Nil(t, ls[0].RolledBack, "a step's line comes before its rollback")
	assert.Equal(t, "fail", ls[1].Key)
	assert.Equal(t, "add", ls[2].Key, "the rollback line: %s", lines[2])
	require.NotNil(t, ls[2].RolledBack)
	assert.True(t, *ls[2].RolledBack)
	assert.Equal(t, 200, ls[2].RollbackStatus)
	assert.Zero(t, ls[2].Status, "a rollback line has no status of the step")
	assert.Nil(t, ls[3].Index)
	require.NotNil(t, ls[3].Atomic, lines[3])
	assert.False(t, ls[3].Atomic.Committed)
	assert.Empty(t, ls[3].Atomic.RollbackFailures)
	assert.Equal(t, 1, ls[3].Failed)
}

func TestStreamRefusalIsJSON(t *testing.T) {
	_, ts := newTestServer(t, nil, &recordingObserver{}, io.Discard)
	resp := streamRequest(t, ts.URL, `{"requests": [{"key": "a", "path": "https://evil.test/"}]}`)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"error":4000`)
}

// recordingIdempotency records the answer the handler finishes with.
type recordingIdempotency struct {
	mu       sync.Mutex
	status   int
	ct       string
	body     []byte
	finished int
}

func (r *recordingIdempotency) Begin(http.ResponseWriter, *http.Request, []byte, bool) (func(int, string, []byte), int64, bool) {
	return func(status int, ct string, body []byte) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.finished++; r.finished == 1 {
			r.status, r.ct, r.body = status, ct, append([]byte(nil), body...)
		}
	}, 4 << 20, false
}

func TestStreamRecordsTheWholeAnswer(t *testing.T) {
	idem := &recordingIdempotency{}
	srv, ts := newTestServer(t, nil, &recordingObserver{}, io.Discard)
	srv.cfg.Idempotency = idem
	resp := streamRequest(t, ts.URL, `[{"path": "Demo/Echo", "body": 1}, {"path": "Demo/Echo", "body": 2}]`)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	idem.mu.Lock()
	defer idem.mu.Unlock()
	assert.Equal(t, http.StatusOK, idem.status)
	assert.Equal(t, "application/x-ndjson", idem.ct)
	assert.Equal(t, string(b), string(idem.body), "the recorded answer is the streamed body")
	assert.Equal(t, 3, strings.Count(string(b), "\n"))
}

// TestIdempotencyKeysTheFormSent: through the real handler and guard, the Idempotency-Key fingerprint is the form of
// the answer actually sent (WantsStream), not whether Accept names application/x-ndjson. Every retry is checked
// against the first answer byte for byte: Producer/Add would answer another new_id had the batch run again.
func TestIdempotencyKeysTheFormSent(t *testing.T) {
	const body = `[{"key": "add", "path": "Producer/Add", "payload": {"name": "Fanta"}}]`
	type retry struct {
		accept     string
		status     int    // 200: a replay of the first answer; 422: key reused
		replayedCT string // the replayed answer's Content-Type
	}
	for _, tc := range []struct {
		name, accept string
		firstCT      string
		retries      []retry
	}{
		{
			name: "JSON preferred to NDJSON is a JSON answer", accept: "application/json, application/x-ndjson;q=0.5",
			firstCT: "application/json",
			retries: []retry{
				{accept: "application/json", status: http.StatusOK, replayedCT: "application/json"},
				{accept: "", status: http.StatusOK, replayedCT: "application/json"},
				{accept: "*/*", status: http.StatusOK, replayedCT: "application/json"},
				{accept: "application/json, application/x-ndjson;q=0.5", status: http.StatusOK, replayedCT: "application/json"},
				{accept: "application/x-ndjson", status: http.StatusUnprocessableEntity},
			},
		},
		{
			name: "a stream is another answer than JSON", accept: "application/x-ndjson",
			firstCT: MIMENDJSON,
			retries: []retry{
				{accept: "application/json", status: http.StatusUnprocessableEntity},
				{accept: "", status: http.StatusUnprocessableEntity},
				{accept: "application/json, application/x-ndjson;q=0.5", status: http.StatusUnprocessableEntity},
				{accept: "application/x-ndjson", status: http.StatusOK, replayedCT: MIMENDJSON},
				{accept: "application/x-ndjson, application/json", status: http.StatusOK, replayedCT: MIMENDJSON},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, ts := newTestServer(t, nil, &recordingObserver{}, io.Discard)
			srv.cfg.Idempotency = idempotency.New(idempotency.Config{Store: idempotency.NewMemory(idempotency.MemoryConfig{})})
			send := func(accept string) (*http.Response, []byte) {
				hdr := []string{idempotency.HeaderKey, "k"}
				if accept != "" {
					hdr = append(hdr, "Accept", accept)
				}
				return post(t, ts.URL+"/v1/batch", "application/json", body, hdr...)
			}
			resp, first := send(tc.accept)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", first)
			require.Equal(t, tc.firstCT, resp.Header.Get("Content-Type"))
			require.Contains(t, string(first), `"new_id":1`)
			assert.Empty(t, resp.Header.Get(idempotency.HeaderReplayed))

			for _, r := range tc.retries {
				resp, b := send(r.accept)
				if !assert.Equal(t, r.status, resp.StatusCode, "Accept %q: %s", r.accept, b) {
					continue
				}
				if r.status != http.StatusOK {
					assert.Contains(t, string(b), `"error":4220`, "Accept %q", r.accept)
					assert.Empty(t, resp.Header.Get(idempotency.HeaderReplayed), "Accept %q", r.accept)
					continue
				}
				assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed), "Accept %q", r.accept)
				assert.Equal(t, r.replayedCT, resp.Header.Get("Content-Type"), "Accept %q: the form stored", r.accept)
				assert.Equal(t, string(first), string(b), "Accept %q: the first answer, byte for byte", r.accept)
			}
		})
	}
}

// holdingIdempotency holds the first finish that records an answer until release is closed, having closed called:
// a test can look at what the client has received while the answer is being recorded.
type holdingIdempotency struct {
	Idempotency
	called, release chan struct{}
	once            *sync.Once
}

func (h holdingIdempotency) Begin(w http.ResponseWriter, r *http.Request, body []byte, stream bool) (func(int, string, []byte), int64, bool) {
	finish, limit, answered := h.Idempotency.Begin(w, r, body, stream)
	if answered {
		return finish, limit, answered
	}
	return func(status int, contentType string, b []byte) {
		if status != 0 {
			h.once.Do(func() { close(h.called); <-h.release })
		}
		finish(status, contentType, b)
	}, limit, answered
}

// A streamed answer is recorded for its Idempotency-Key before its summary line is written: a client that retries
// as soon as it has read the summary gets the answer replayed, never "still running".
func TestStreamRecordsItsAnswerBeforeTheSummary(t *testing.T) {
	srv, ts := newTestServer(t, nil, &recordingObserver{}, io.Discard)
	h := holdingIdempotency{
		Idempotency: idempotency.New(idempotency.Config{Store: idempotency.NewMemory(idempotency.MemoryConfig{})}),
		called:      make(chan struct{}), release: make(chan struct{}), once: &sync.Once{},
	}
	srv.cfg.Idempotency = h
	var released sync.Once
	free := func() { released.Do(func() { close(h.release) }) }
	t.Cleanup(free) // before the server closes: a failed test must not leave the handler held
	const body = `[{"key": "add", "path": "Producer/Add", "payload": {"name": "Fanta"}}]`
	send := func() *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.URL+"/v1/batch", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", MIMENDJSON)
		req.Header.Set(idempotency.HeaderKey, "k")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := send()
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	select {
	case <-h.called:
	case <-time.After(10 * time.Second):
		t.Fatal("the answer was never recorded")
	}
	// batchd is recording the answer now. Whatever the client reads meanwhile is a step's line, never the summary.
	wait := time.After(300 * time.Millisecond)
	for held := true; held; {
		select {
		case l := <-lines:
			require.Contains(t, l, `"index"`, "the summary was written before the answer was recorded")
		case <-wait:
			held = false
		}
	}
	free()
	var last string
	for l := range lines {
		last = l
	}
	assert.NotContains(t, last, `"index"`, "the stream ends with its summary")

	retry := send()
	assert.Equal(t, http.StatusOK, retry.StatusCode)
	assert.Equal(t, "true", retry.Header.Get(idempotency.HeaderReplayed))
}

package transport_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/jobs"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// jobServer is a server with the jobs routes on the in-memory engine, wired as cmd/batchd wires it: the runner's
// invoker is inv (the demo API when nil), and the engine runs batches with RunJobBatch.
func jobServer(t *testing.T, inv runner.Invoker, jc transport.JobsConfig) (*transport.Server, *httptest.Server, *jobs.Engine) {
	t.Helper()
	// The spec's request body of POST /v1/jobs is NDJSON, which the validator reads as a string.
	openapi3filter.RegisterBodyDecoder(transport.MIMENDJSON, openapi3filter.PlainBodyDecoder)
	t.Cleanup(func() { openapi3filter.UnregisterBodyDecoder(transport.MIMENDJSON) })
	api := demoapi.New(demoapi.Config{})
	if inv == nil {
		inv = transport.NewInProcessInvoker(api, 8<<20)
	}
	rn := runner.New(inv, runner.Config{})
	store := jobs.NewMemory(jobs.MemoryConfig{Dir: t.TempDir()})
	eng := jobs.New(jobs.Config{Store: store, Workers: 2, Poll: 10 * time.Millisecond})
	jc.Engine = eng
	srv := transport.New(transport.Config{Runner: rn, Demo: api, Jobs: jc, Planner: planner.Config{Blocked: []string{"Item/Import"}}})
	eng.Start(srv.RunJobBatch)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, eng.Shutdown(ctx))
		_ = store.Close()
	})
	return srv, ts, eng
}

func ndjson(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

var ndjsonHeader = http.Header{"Content-Type": {"application/x-ndjson"}}

func withKey(key string) http.Header {
	h := ndjsonHeader.Clone()
	h.Set("Idempotency-Key", key)
	return h
}

// waitJobDone polls GET /v1/jobs/{id} until the job has ended, for at most 20s.
func waitJobDone(t *testing.T, base, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/v1/jobs/" + id)
		require.NoError(t, err)
		var j map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&j))
		resp.Body.Close()
		b := j["batches"].(map[string]any)
		ended := b["done"].(float64)+b["skipped"].(float64) == b["total"].(float64)
		if (j["status"] == "done" || j["status"] == "cancelled") && ended {
			return j
		}
		require.True(t, time.Now().Before(deadline), "job %s not done within 20s: %v", id, j)
		time.Sleep(10 * time.Millisecond)
	}
}

func postJob(t *testing.T, base string, h http.Header, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/v1/jobs", strings.NewReader(body))
	require.NoError(t, err)
	req.Header = h.Clone()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

func jobID(t *testing.T, b []byte) string {
	var a struct{ ID string }
	require.NoError(t, json.Unmarshal(b, &a), "%s", b)
	return a.ID
}

// TestJobsMatchSpec sends every kind of jobs request to a live server and checks request and answer against
// openapi.yaml, and what each answer says.
func TestJobsMatchSpec(t *testing.T) {
	s := loadSpec(t)
	_, ts, _ := jobServer(t, nil, transport.JobsConfig{MaxBatches: 5, MaxBody: 4 << 10})
	client := ts.Client()
	good := ndjson(`{"requests":[{"key":"add","path":"Producer/Add","payload":{"name":"Fanta"}},`+
		`{"key":"get","path":"Producer/Get","payload":{"ids":["${add.result.new_id}"]}}]}`,
		`[{"path":"Demo/Echo","body":{"n":2}}]`, `{"batch":[{"path":"Demo/Fail","payload":{"status":409}}]}`)

	code, h, b := postJob(t, ts.URL, withKey("spec-key"), good)
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	id := jobID(t, b)
	assert.Equal(t, "/v1/jobs/"+id, h.Get("Location"))
	assert.JSONEq(t, `{"id":"`+id+`","status":"queued","batches":3}`, string(b))
	waitJobDone(t, ts.URL, id)

	for _, x := range []exchange{
		{name: "submit", method: "POST", path: "/v1/jobs", header: ndjsonHeader, body: good, status: 202, specAccepts: true},
		{name: "same key, same body: the same job", method: "POST", path: "/v1/jobs", header: withKey("spec-key"),
			body: good, status: 202, specAccepts: true,
			check: func(t *testing.T, h http.Header, b []byte) {
				assert.Equal(t, id, jobID(t, b))
				assert.Equal(t, "true", h.Get("Idempotent-Replayed"))
				assert.Contains(t, string(b), `"status":"done"`)
			}},
		{name: "same key, another body", method: "POST", path: "/v1/jobs", header: withKey("spec-key"),
			body: ndjson(`[{"path":"Demo/Echo"}]`), status: 422, specAccepts: true},
		{name: "bad lines", method: "POST", path: "/v1/jobs", header: ndjsonHeader, status: 400, specAccepts: true,
			body: ndjson(`[{"path":"Demo/Echo"}]`, `{"requests":[{"key":"a","path":"https://x"}]}`, ``,
				`[{"path":"Item/Import"},{"path":"Demo/Echo","payload":"${nope.x}"}]`, `{`),
			check: func(t *testing.T, _ http.Header, b []byte) {
				var e struct {
					Result struct {
						Description string
						Details     []struct {
							Line   int
							Key    string
							Reason string
						}
					}
				}
				require.NoError(t, json.Unmarshal(b, &e))
				assert.Equal(t, "job refused: 4 bad lines; nothing was queued", e.Result.Description)
				var got []string
				for _, d := range e.Result.Details {
					got = append(got, fmt.Sprintf("%d %s %s", d.Line, d.Key, d.Reason))
				}
				assert.Equal(t, []string{"2 a invalid_path", "3  no_steps", "4 0 blocked", "4 1 unknown_ref", "5  invalid_json"}, got)
			}},
		{name: "no lines", method: "POST", path: "/v1/jobs", header: ndjsonHeader, body: "", status: 400},
		{name: "too many lines", method: "POST", path: "/v1/jobs", header: ndjsonHeader, status: 413, specAccepts: true,
			body: strings.Repeat(`[{"path":"Demo/Echo"}]`+"\n", 6)},
		{name: "body too large", method: "POST", path: "/v1/jobs", header: ndjsonHeader, status: 413, specAccepts: true,
			body: ndjson(`[{"path":"Demo/Echo","body":"` + strings.Repeat("x", 5<<10) + `"}]`)},
		{name: "not NDJSON", method: "POST", path: "/v1/jobs", body: good, status: 415,
			header: http.Header{"Content-Type": {"application/json"}}},
		{name: "bad Idempotency-Key", method: "POST", path: "/v1/jobs", header: withKey(strings.Repeat("k", 256)),
			body: good, status: 400},
		{name: "status", method: "GET", path: "/v1/jobs/" + id, status: 200, specAccepts: true,
			check: func(t *testing.T, _ http.Header, b []byte) {
				var j struct {
					Status                     string
					Batches                    struct{ Total, Done, Failed, Skipped int }
					Steps                      struct{ Done, Failed int }
					Created, Started, Finished *time.Time
				}
				require.NoError(t, json.Unmarshal(b, &j), "%s", b)
				assert.Equal(t, "done", j.Status)
				assert.Equal(t, struct{ Total, Done, Failed, Skipped int }{3, 3, 1, 0}, j.Batches)
				assert.Equal(t, struct{ Done, Failed int }{4, 1}, j.Steps)
				require.NotNil(t, j.Finished)
				assert.False(t, j.Finished.Before(*j.Started))
				assert.False(t, j.Started.Before(*j.Created))
			}},
		{name: "unknown job", method: "GET", path: "/v1/jobs/0123456789abcdef0123456789abcdef", status: 404, specAccepts: true},
		{name: "not an id", method: "GET", path: "/v1/jobs/nope", status: 404, specAccepts: true},
		{name: "results, bad query", method: "GET", path: "/v1/jobs/" + id + "/results?wait=maybe", status: 400},
		{name: "results, unknown query", method: "GET", path: "/v1/jobs/" + id + "/results?from=2", status: 400, specAccepts: true},
		{name: "results of an unknown job", method: "GET", path: "/v1/jobs/0123456789abcdef0123456789abcdef/results", status: 404, specAccepts: true},
		{name: "cancel a job that ended", method: "DELETE", path: "/v1/jobs/" + id, status: 200, specAccepts: true,
			check: func(t *testing.T, _ http.Header, b []byte) { assert.Contains(t, string(b), `"status":"done"`) }},
		{name: "cancel an unknown job", method: "DELETE", path: "/v1/jobs/0123456789abcdef0123456789abcdef", status: 404, specAccepts: true},
	} {
		t.Run(x.name, func(t *testing.T) { s.run(t, client, ts.URL, x) })
	}

	t.Run("results", func(t *testing.T) {
		for _, q := range []string{"", "?wait=true"} {
			req := httptest.NewRequest(http.MethodGet, ts.URL+"/v1/jobs/"+id+"/results"+q, nil)
			in, err := s.checkRequest(t, req)
			require.NoError(t, err)
			resp, err := client.Get(ts.URL + "/v1/jobs/" + id + "/results" + q)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			opts := *s.opts
			opts.ExcludeResponseBody = true
			in.Options = &opts
			assert.NoError(t, s.checkResponse(t.Context(), in, resp.StatusCode, resp.Header, b))
			lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			require.Len(t, lines, 3)
			for i, line := range lines {
				assert.NoError(t, s.checkSchema(t, "JobResultLine", []byte(line)), "%s", line)
				var rec struct {
					Line   int
					Answer json.RawMessage
				}
				require.NoError(t, json.Unmarshal([]byte(line), &rec))
				assert.Equal(t, i+1, rec.Line)
				assert.NoError(t, s.checkSchema(t, "BatchAnswer", rec.Answer), "%s", rec.Answer)
			}
			assert.Contains(t, lines[0], `"new_id":`)
			assert.Contains(t, lines[1], `{"n":2}`)
			assert.Contains(t, lines[2], `"status":409`)
		}
	})
}

// TestJobCancelMatchesSpec cancels a running job: 202, then no further batch starts.
func TestJobCancelMatchesSpec(t *testing.T) {
	s := loadSpec(t)
	_, ts, _ := jobServer(t, nil, transport.JobsConfig{})
	var lines []string
	for range 200 {
		lines = append(lines, `[{"path":"Demo/Sleep","body":{"ms":100}}]`) // 10 s of work for 2 workers
	}
	code, _, b := postJob(t, ts.URL, ndjsonHeader, ndjson(lines...))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	id := jobID(t, b)
	var atCancel float64
	s.run(t, ts.Client(), ts.URL, exchange{name: "cancel", method: "DELETE", path: "/v1/jobs/" + id, status: 202,
		specAccepts: true, check: func(t *testing.T, _ http.Header, b []byte) {
			var j struct {
				Status  string
				Batches struct{ Done float64 }
			}
			require.NoError(t, json.Unmarshal(b, &j))
			assert.Equal(t, "cancelled", j.Status)
			atCancel = j.Batches.Done
		}})
	j := waitJobDone(t, ts.URL, id)
	assert.Equal(t, "cancelled", j["status"])
	batches := j["batches"].(map[string]any)
	assert.Equal(t, float64(200), batches["done"].(float64)+batches["skipped"].(float64))
	assert.Positive(t, batches["skipped"].(float64))
	// 2 workers, each with at most one batch running and one answer being stored when the cancel came.
	assert.LessOrEqual(t, batches["done"].(float64), atCancel+4, "no batch started after the cancel")
}

// recordingUpstream answers {"ok":true,"result":{"id":1}} and records the Idempotency-Key and Authorization of every
// call by path.
type recordingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	keys map[string][]string
	auth map[string]string
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{keys: map[string][]string{}, auth: map[string]string{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.keys[r.URL.Path] = append(u.keys[r.URL.Path], r.Header.Get("Idempotency-Key"))
		u.auth[r.URL.Path] = r.Header.Get("Authorization")
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "fail") {
			_, _ = io.WriteString(w, `{"ok":false,"result":{"error":1,"description":"no"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true,"result":{"id":1}}`)
	}))
	t.Cleanup(u.Close)
	return u
}

// TestJobStepsCarryIdempotencyKey: every call of a job's step carries Idempotency-Key <job>:<line>:<step key>, a
// step's own key wins, a rollback's call gets its own key, and the submission's Authorization reaches every step;
// an interactive batch's calls carry no key.
func TestJobStepsCarryIdempotencyKey(t *testing.T) {
	up := newRecordingUpstream(t)
	base, _ := url.Parse(up.URL + "/api/")
	hi, err := transport.NewHTTPInvoker(transport.HTTPConfig{Base: base})
	require.NoError(t, err)
	_, ts, _ := jobServer(t, hi, transport.JobsConfig{})
	h := ndjsonHeader.Clone()
	h.Set("Authorization", "Bearer job-token")
	code, _, b := postJob(t, ts.URL, h, ndjson(
		`{"requests":[{"key":"a","path":"one/a"},{"key":"b","path":"one/b","headers":{"Idempotency-Key":"mine"}}]}`,
		`{"atomic":true,"requests":[{"key":"add","path":"two/add","rollback":{"path":"two/undo"}},{"key":"f","path":"two/fail","depends_on":["add"]}]}`))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	id := jobID(t, b)
	waitJobDone(t, ts.URL, id)

	resp, err := http.Post(ts.URL+"/v1/batch", "application/json", strings.NewReader(`[{"path":"batch/x"}]`))
	require.NoError(t, err)
	resp.Body.Close()

	up.mu.Lock()
	defer up.mu.Unlock()
	assert.Equal(t, map[string][]string{
		"/api/one/a":    {id + ":1:a"},
		"/api/one/b":    {"mine"},
		"/api/two/add":  {id + ":2:add"},
		"/api/two/fail": {id + ":2:f"},
		"/api/two/undo": {id + ":2:add:rollback"},
		"/api/batch/x":  {""},
	}, up.keys)
	for _, p := range []string{"/api/one/a", "/api/one/b", "/api/two/add", "/api/two/undo"} {
		assert.Equal(t, "Bearer job-token", up.auth[p], p)
	}
}

// TestJobResultsWaitOutlivesReadTimeout: a results stream that waits longer than the server's ReadTimeout for a
// job's lines still gets every line (the request's context is not cut at the read deadline).
func TestJobResultsWaitOutlivesReadTimeout(t *testing.T) {
	srv, _, _ := jobServer(t, nil, transport.JobsConfig{})
	hs := srv.HTTPServer("127.0.0.1:0", time.Minute)
	hs.ReadTimeout = 200 * time.Millisecond
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config = hs
	ts.Start()
	t.Cleanup(ts.Close)
	var lines []string
	for range 8 {
		lines = append(lines, `[{"path":"Demo/Sleep","body":{"ms":150}}]`)
	}
	code, _, b := postJob(t, ts.URL, ndjsonHeader, ndjson(lines...))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	resp, err := http.Get(ts.URL + "/v1/jobs/" + jobID(t, b) + "/results?wait=true")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	n := 0
	for sc.Scan() {
		n++
		assert.True(t, bytes.HasPrefix(sc.Bytes(), fmt.Appendf(nil, `{"line":%d,`, n)), "%s", sc.Bytes())
	}
	require.NoError(t, sc.Err())
	assert.Equal(t, 8, n, "8 lines of 150 ms on 2 workers take about 600 ms, three read timeouts")
}

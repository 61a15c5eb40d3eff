package client_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/client"
)

// jobsAPI is a loopback server answering the jobs endpoints with the wire form batchd documents for them (POST
// /v1/jobs, GET /v1/jobs/{id}, GET /v1/jobs/{id}/results, DELETE /v1/jobs/{id}), recording what it was sent.
// It checks the client's side of that wire form; the end-to-end tests against batchd's jobs are separate.
type jobsAPI struct {
	mu       sync.Mutex
	requests []string // "METHOD path?query"
	lines    []string // the NDJSON lines of the last job submitted
	header   http.Header
	results  string // the body of GET …/results
}

func (j *jobsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.requests = append(j.requests, r.Method+" "+r.URL.RequestURI())
	j.header = r.Header.Clone()
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/jobs":
		j.lines = nil
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			j.lines = append(j.lines, sc.Text())
		}
		if len(j.lines) == 2 && j.lines[1] == "bad" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"ok":false,"result":{"error":4000,"description":"job refused: 1 bad line","details":[{"line":2,"reason":"invalid_json","problem":"not JSON"}]}}`)
			return
		}
		w.Header().Set("Location", "/v1/jobs/j-1")
		if r.Header.Get("Idempotency-Key") == "again" {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		w.WriteHeader(202)
		fmt.Fprintf(w, `{"id":"j-1","status":"queued","batches":%d}`, len(j.lines))
	case r.URL.Path == "/v1/jobs/j-1" && (r.Method == "GET" || r.Method == "DELETE"):
		status := "running"
		if r.Method == "DELETE" {
			status = "cancelled"
		}
		fmt.Fprintf(w, `{"id":"j-1","status":%q,"batches":{"total":3,"done":2,"failed":1,"skipped":0},"steps":{"done":20,"failed":1},
			"results":{"bytes":513,"max_bytes":268435456,"not_stored":1},
			"created":"2026-12-02T07:00:00.000Z","started":"2026-12-02T07:00:01.120Z","finished":null}`, status)
	case r.Method == "GET" && r.URL.Path == "/v1/jobs/j-1/results":
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, j.results)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		_, _ = io.WriteString(w, `{"ok":false,"result":{"error":4040,"description":"no job \"nope\""}}`)
	}
}

func startJobsAPI(t *testing.T) (*jobsAPI, *client.Client) {
	api := &jobsAPI{}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.Config{Header: http.Header{"Authorization": {"Bearer t"}}})
	require.NoError(t, err)
	return api, c
}

func TestSubmitJob(t *testing.T) {
	api, c := startJobsAPI(t)
	body := `{"requests":[{"key":"a","path":"Demo/Echo"}]}` + "\n" + `[{"path":"Demo/Echo"}]` + "\n"
	job, err := c.SubmitJob(ctx(t), strings.NewReader(body), client.IdempotencyKey("nightly-42"))
	require.NoError(t, err)
	assert.Equal(t, &client.SubmittedJob{ID: "j-1", Status: "queued", Batches: 2, Location: "/v1/jobs/j-1"}, job)
	assert.Equal(t, "application/x-ndjson", api.header.Get("Content-Type"))
	assert.Equal(t, "nightly-42", api.header.Get("Idempotency-Key"))
	assert.Equal(t, "Bearer t", api.header.Get("Authorization"))
	assert.Len(t, api.lines, 2)
	job, err = c.SubmitJob(ctx(t), strings.NewReader(body), client.IdempotencyKey("again"))
	require.NoError(t, err)
	assert.True(t, job.Replayed, "Idempotent-Replayed: true")

	_, err = c.SubmitJob(ctx(t), strings.NewReader("{}\nbad\n"))
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 400, e.Status)
	require.Len(t, e.Details, 1)
	assert.Equal(t, client.Problem{Line: 2, Reason: "invalid_json", Problem: "not JSON"}, e.Details[0])
}

func TestJobStatusAndCancel(t *testing.T) {
	api, c := startJobsAPI(t)
	s, err := c.Job(ctx(t), "j-1")
	require.NoError(t, err)
	assert.Equal(t, "running", s.Status)
	assert.False(t, s.Ended())
	assert.Equal(t, 3, s.Batches.Total)
	assert.Equal(t, 2, s.Batches.Done)
	assert.Equal(t, 1, s.Batches.Failed)
	assert.Equal(t, 20, s.Steps.Done)
	require.NotNil(t, s.Started)
	assert.Equal(t, "2026-12-02T07:00:01.12Z", s.Started.UTC().Format(time.RFC3339Nano))
	assert.Nil(t, s.Finished)
	assert.Equal(t, int64(513), s.Results.Bytes)
	assert.Equal(t, int64(268435456), s.Results.MaxBytes)
	assert.Equal(t, 1, s.Results.NotStored)
	assert.Contains(t, string(s.Raw), `"started":"2026-12-02T07:00:01.120Z"`, "Raw is the answer as batchd wrote it")

	s, err = c.CancelJob(ctx(t), "j-1")
	require.NoError(t, err)
	assert.Equal(t, "cancelled", s.Status)
	assert.True(t, s.Ended())
	assert.Contains(t, string(s.Raw), `"status":"cancelled"`)

	_, err = c.Job(ctx(t), "nope")
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 404, e.Status)
	assert.Equal(t, 4040, e.Code)

	_, err = c.Job(ctx(t), "")
	assert.ErrorContains(t, err, "job id is required")
	_, err = c.Job(ctx(t), "a/../b")
	require.ErrorAs(t, err, &e, "the id is one escaped segment, so it reaches no other route")
	assert.Equal(t, []string{"GET /v1/jobs/j-1", "DELETE /v1/jobs/j-1", "GET /v1/jobs/nope", "GET /v1/jobs/a%2F..%2Fb"},
		api.requests)
}

func TestJobResults(t *testing.T) {
	api, c := startJobsAPI(t)
	api.results = `{"line":1,"answer":{"responses":[{"key":"a","status":200,"response":{"ok":true}}]}}` + "\n" +
		"\n" + `{"line":2,"answer":[{"key":"0","status":404,"response":null}]}` + "\r\n"
	var lines []int
	var raws []string
	for r, err := range c.JobResults(ctx(t), "j-1", true) {
		require.NoError(t, err)
		lines = append(lines, r.Line)
		raws = append(raws, string(r.Raw))
	}
	assert.Equal(t, []int{1, 2}, lines)
	assert.Equal(t, `{"line":2,"answer":[{"key":"0","status":404,"response":null}]}`, raws[1])
	assert.Equal(t, "GET /v1/jobs/j-1/results?wait=true", api.requests[0])

	// Stopping the loop early closes the stream.
	for range c.JobResults(ctx(t), "j-1", false) {
		break
	}
	assert.Equal(t, "GET /v1/jobs/j-1/results", api.requests[1])

	for name, tt := range map[string]struct{ body, err string }{
		"cut mid-line": {`{"line":1,"answer":{}}` + "\n" + `{"line":2,"ans`, "ended before its last line"},
		"not a result": {`{"answer":{}}` + "\n", `is not {"line": n, "answer": …}`},
		"not JSON":     {"<html>\n", `is not {"line": n, "answer": …}`},
	} {
		t.Run(name, func(t *testing.T) {
			api.mu.Lock()
			api.results = tt.body
			api.mu.Unlock()
			var err error
			for _, e := range c.JobResults(ctx(t), "j-1", false) {
				err = e
			}
			assert.ErrorContains(t, err, tt.err)
		})
	}

	for _, err := range c.JobResults(ctx(t), "nope", false) {
		var e *client.Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, 404, e.Status)
	}
}

func TestJobResultsLineBound(t *testing.T) {
	api := &jobsAPI{results: `{"line":1,"answer":"` + strings.Repeat("x", 2000) + `"}` + "\n"}
	srv := httptest.NewServer(api)
	defer srv.Close()
	c, err := client.New(srv.URL, client.Config{MaxAnswer: 1000})
	require.NoError(t, err)
	for _, err := range c.JobResults(ctx(t), "j-1", false) {
		assert.ErrorContains(t, err, "over 1000 bytes")
	}
}

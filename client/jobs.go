package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"time"
)

// Job statuses. A job is queued, then running, and ends done or cancelled.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobDone      = "done"
	JobCancelled = "cancelled"
)

// SubmittedJob is batchd's answer to a job it accepted.
type SubmittedJob struct {
	ID      string `json:"id"`
	Status  string `json:"status"`  // "queued"
	Batches int    `json:"batches"` // lines accepted, one batch each
	// Location is the job's status URL as batchd answered it (/v1/jobs/{id}).
	Location string `json:"-"`
	// Replayed: the job was submitted before with this IdempotencyKey, and Status is its current one.
	Replayed bool `json:"-"`
}

// JobStatus is a job's progress.
type JobStatus struct {
	ID      string `json:"id"`
	Status  string `json:"status"` // JobQueued, JobRunning, JobDone or JobCancelled
	Batches struct {
		Total  int `json:"total"`
		Done   int `json:"done"`   // batches that ended, failed ones included
		Failed int `json:"failed"` // batches in which some step failed
		// Skipped are batches never run because the job was cancelled.
		Skipped int `json:"skipped"`
	} `json:"batches"`
	Steps struct {
		Done   int `json:"done"`
		Failed int `json:"failed"`
	} `json:"steps"`
	// Results is what batchd keeps of the answers: Bytes stored, MaxBytes their cap (batchd's
	// -job-max-result-bytes), NotStored the lines past it, which keep a summary instead of their answer.
	Results struct {
		Bytes     int64 `json:"bytes"`
		MaxBytes  int64 `json:"max_bytes"`
		NotStored int   `json:"not_stored"`
	} `json:"results"`
	Created  *time.Time `json:"created"`
	Started  *time.Time `json:"started"`  // nil until a batch started
	Finished *time.Time `json:"finished"` // nil until the job ended
	// Raw is the status as batchd answered it, members and times as it wrote them.
	Raw json.RawMessage `json:"-"`
}

// Ended reports whether the job will make no more progress: done, cancelled, or any status after running.
func (s *JobStatus) Ended() bool { return s.Status != JobQueued && s.Status != JobRunning }

// JobResult is one line of a job's results: the answer of the batch on line Line of the job (from 1).
type JobResult struct {
	Line   int             `json:"line"`
	Answer json.RawMessage `json:"answer"` // the batch's answer, as POST /v1/batch would have answered it
	// Raw is the whole line as batchd sent it, without its newline.
	Raw json.RawMessage `json:"-"`
}

// SubmitJob submits a job: ndjson holds one batch per line, in any form batchd accepts, and is streamed to batchd
// (never held whole here). batchd validates every line before anything runs; a job with a bad line is an *Error
// whose Details name the lines. With IdempotencyKey, submitting again returns the same job.
func (c *Client) SubmitJob(ctx context.Context, ndjson io.Reader, opts ...RequestOption) (*SubmittedJob, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/jobs", nil, ndjson, "application/x-ndjson", opts)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var j SubmittedJob
	if _, err := c.decode(resp.Body, &j); err != nil {
		return nil, err
	}
	if j.ID == "" {
		return nil, errors.New("client: batchd accepted the job but answered no id")
	}
	j.Location = resp.Header.Get("Location")
	j.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return &j, nil
}

// Job returns a job's status; an unknown id is an *Error with Status 404.
func (c *Client) Job(ctx context.Context, id string) (*JobStatus, error) {
	path, err := jobPath(id)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil, "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return c.jobStatus(resp.Body)
}

// CancelJob cancels a job: no further batch of it starts (running ones finish). It returns the job's status.
func (c *Client) CancelJob(ctx context.Context, id string) (*JobStatus, error) {
	path, err := jobPath(id)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodDelete, path, nil, nil, "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return c.jobStatus(resp.Body)
}

// jobStatus reads a job's status from batchd's answer.
func (c *Client) jobStatus(r io.Reader) (*JobStatus, error) {
	var s JobStatus
	raw, err := c.decode(r, &s)
	if err != nil {
		return nil, err
	}
	s.Raw = raw
	return &s, nil
}

// JobResults reads a job's results, one batch's answer per line in line order. Without wait it reads the results
// there are now; with wait, batchd streams them until the job ends. The request is made when the loop starts and
// its connection closed when the loop ends; an error ends the sequence. A stream cut mid-line is ErrIncomplete.
//
//	for r, err := range c.JobResults(ctx, id, true) {
//		if err != nil { … }
//		fmt.Println(r.Line, string(r.Answer))
//	}
func (c *Client) JobResults(ctx context.Context, id string, wait bool) iter.Seq2[JobResult, error] {
	return func(yield func(JobResult, error) bool) {
		path, err := jobPath(id)
		if err != nil {
			yield(JobResult{}, err)
			return
		}
		var q url.Values
		if wait {
			q = url.Values{"wait": {"true"}}
		}
		resp, err := c.do(ctx, http.MethodGet, path+"/results", q, nil, "", []RequestOption{Header("Accept", "application/x-ndjson")})
		if err != nil {
			yield(JobResult{}, err)
			return
		}
		defer resp.Body.Close()
		lr := newLineReader(resp.Body, c.maxAnswer)
		for {
			line, err := lr.next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(JobResult{}, fmt.Errorf("client: reading job %s's results: %w", id, err))
				return
			}
			r := JobResult{Raw: json.RawMessage(append([]byte(nil), line...))}
			if err := json.Unmarshal(r.Raw, &r); err != nil || r.Line < 1 {
				yield(JobResult{}, fmt.Errorf("client: a line of job %s's results is not {\"line\": n, \"answer\": …}: %.200q", id, line))
				return
			}
			if !yield(r, nil) {
				return
			}
		}
	}
}

// jobPath is the path of a job's status.
func jobPath(id string) (string, error) {
	if id == "" {
		return "", errors.New("client: a job id is required")
	}
	return "/v1/jobs/" + url.PathEscape(id), nil
}

// decode reads a JSON answer of at most MaxAnswer bytes into v, and returns it.
func (c *Client) decode(r io.Reader, v any) (json.RawMessage, error) {
	raw, err := c.readAll(r)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("client: batchd's answer is not what was expected (%v): %.200q", err, raw)
	}
	return raw, nil
}

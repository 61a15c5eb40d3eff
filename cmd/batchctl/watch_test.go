package main

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/client"
)

func status(st string, total, done, failed int) *client.JobStatus {
	s := &client.JobStatus{ID: "j-1", Status: st}
	s.Batches.Total, s.Batches.Done, s.Batches.Failed = total, done, failed
	s.Steps.Done, s.Steps.Failed = done*10, failed
	return s
}

// replay polls a recorded sequence of statuses, one per poll, on a clock that advances one second per poll.
type replay struct {
	seq   []*client.JobStatus
	polls int
	clock time.Time
}

func (r *replay) poll(context.Context) (*client.JobStatus, error) {
	if r.polls >= len(r.seq) {
		return nil, errors.New("polled past the end of the sequence")
	}
	s := r.seq[r.polls]
	r.polls++
	r.clock = r.clock.Add(time.Second)
	return s, nil
}

func (r *replay) now() time.Time { return r.clock }

func TestWatchPlainLines(t *testing.T) {
	started := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	finished := started.Add(41 * time.Second)
	done := status("done", 1000, 1000, 3)
	done.Started, done.Finished = &started, &finished
	r := &replay{seq: []*client.JobStatus{
		status("queued", 1000, 0, 0),
		status("running", 1000, 0, 0),
		status("running", 1000, 20, 0),
		status("running", 1000, 20, 0), // no change: no line
		status("running", 1000, 100, 3),
		done,
	}}
	var out bytes.Buffer
	last, err := watch(t.Context(), r.poll, &plainRenderer{w: &out}, time.Millisecond, r.now)
	require.NoError(t, err)
	assert.Equal(t, done, last)
	assert.Equal(t, 6, r.polls)
	assert.Equal(t, `job j-1 queued: 0/1000 batches (0%), 0 failed
job j-1 running: 0/1000 batches (0%), 0 failed, 0.0 batches/s
job j-1 running: 20/1000 batches (2%), 0 failed, 10.0 batches/s, ETA 1m38s
job j-1 running: 100/1000 batches (10%), 3 failed, 25.0 batches/s, ETA 36s
job j-1 done: 1000/1000 batches, 3 failed; 10000 steps, 3 failed; in 41s
`, out.String())
}

func TestWatchStopsOnCancelAndOnError(t *testing.T) {
	r := &replay{seq: []*client.JobStatus{status("running", 10, 1, 0), status("cancelled", 10, 4, 0)}}
	var out bytes.Buffer
	last, err := watch(t.Context(), r.poll, &plainRenderer{w: &out}, time.Millisecond, r.now)
	require.NoError(t, err)
	assert.Equal(t, "cancelled", last.Status)
	assert.Contains(t, out.String(), "job j-1 cancelled: 4/10 batches, 0 failed; 40 steps, 0 failed\n")

	r = &replay{seq: []*client.JobStatus{status("running", 10, 1, 0)}}
	_, err = watch(t.Context(), r.poll, &plainRenderer{w: &out}, time.Millisecond, r.now)
	assert.ErrorContains(t, err, "polled past the end")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r = &replay{seq: []*client.JobStatus{status("running", 10, 1, 0)}}
	_, err = watch(ctx, r.poll, &plainRenderer{w: &out}, time.Hour, r.now)
	assert.ErrorIs(t, err, context.Canceled, "Ctrl-C stops the watch at once, whatever the interval")
}

func TestMeterWindow(t *testing.T) {
	var m meter
	t0 := time.Unix(0, 0)
	p := m.add(t0, status("running", 1000, 500, 0)) // resumed mid-job: the 500 already done are no rate
	assert.False(t, p.known)
	p = m.add(t0.Add(10*time.Second), status("running", 1000, 600, 0))
	assert.InDelta(t, 10.0, p.rate, 1e-9)
	assert.Equal(t, 40*time.Second, p.eta)
	// 40 s later at a new pace: the window holds only the last 30 s or so.
	for i := 1; i <= 40; i++ {
		p = m.add(t0.Add(time.Duration(10+i)*time.Second), status("running", 1000, 600+i, 0))
	}
	assert.InDelta(t, 1.0, p.rate, 1e-9)
	assert.LessOrEqual(t, len(m.samples), 32)
	for i := range 1000 {
		m.add(t0.Add(time.Duration(60*1000+i)*time.Millisecond), status("running", 1000, 700, 0))
	}
	assert.LessOrEqual(t, len(m.samples), maxSamples)
}

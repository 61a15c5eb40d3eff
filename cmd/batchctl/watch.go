package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/batchd/batchd/client"
)

// renderer shows a job's progress: each status polled, with the progress measured over the last polls.
type renderer interface {
	update(s *client.JobStatus, p progress)
	// end shows the last status, that of a job that ended.
	end(s *client.JobStatus, p progress)
}

// progress is what the polls so far tell about a job's pace.
type progress struct {
	rate  float64       // batches per second over the recent polls; 0 while unknown
	eta   time.Duration // time left at that rate; 0 while unknown
	known bool          // rate and eta are measured
}

// rateWindow is how far back the rate is measured: long enough to smooth batches that end in bursts, short
// enough to follow a change of pace.
const rateWindow = 30 * time.Second

// meter measures a job's rate from its polls: batches done per second between the oldest poll within rateWindow
// and the newest. It keeps at most maxSamples polls.
type meter struct {
	samples []sample
}

type sample struct {
	at   time.Time
	done int
}

const maxSamples = 256

func (m *meter) add(at time.Time, s *client.JobStatus) progress {
	m.samples = append(m.samples, sample{at, s.Batches.Done})
	for len(m.samples) > 2 && (at.Sub(m.samples[0].at) > rateWindow || len(m.samples) > maxSamples) {
		m.samples = m.samples[1:]
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 {
		return progress{}
	}
	p := progress{rate: max(float64(last.done-first.done)/dt, 0), known: true}
	if left := s.Batches.Total - s.Batches.Done; left > 0 && p.rate > 0 {
		p.eta = max(time.Duration(float64(left)/p.rate*float64(time.Second)).Round(time.Second), time.Second)
	}
	return p
}

// watch polls a job every interval until it ends (or ctx does), showing each status through r; it returns the
// last status.
func watch(ctx context.Context, poll func(context.Context) (*client.JobStatus, error), r renderer,
	interval time.Duration, now func() time.Time) (*client.JobStatus, error) {
	var m meter
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s, err := poll(ctx)
		if err != nil {
			return nil, err
		}
		p := m.add(now(), s)
		if s.Ended() {
			r.end(s, p)
			return s, nil
		}
		r.update(s, p)
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-tick.C:
		}
	}
}

// plainRenderer writes one line per change of a job's status or counts, for logs and pipes:
//
//	job j-1 running: 120/1000 batches (12%), 3 failed, 24.0 batches/s, ETA 37s
type plainRenderer struct {
	w    io.Writer
	last string // the counts last written, to write a line only on a change
}

func (r *plainRenderer) update(s *client.JobStatus, p progress) {
	counts := fmt.Sprintf("%s %d %d %d", s.Status, s.Batches.Done, s.Batches.Total, s.Batches.Failed)
	if counts == r.last {
		return
	}
	r.last = counts
	fmt.Fprintf(r.w, "job %s %s: %s\n", s.ID, s.Status, describe(s, p))
}

func (r *plainRenderer) end(s *client.JobStatus, p progress) {
	fmt.Fprintf(r.w, "job %s %s: %s\n", s.ID, s.Status, summarize(s))
}

// describe is a running job's progress: "120/1000 batches (12%), 3 failed, 24.0 batches/s, ETA 37s".
func describe(s *client.JobStatus, p progress) string {
	out := fmt.Sprintf("%d/%d batches", s.Batches.Done, s.Batches.Total)
	if s.Batches.Total > 0 {
		out += fmt.Sprintf(" (%d%%)", s.Batches.Done*100/s.Batches.Total)
	}
	out += fmt.Sprintf(", %d failed", s.Batches.Failed)
	if !p.known {
		return out
	}
	out += fmt.Sprintf(", %.1f batches/s", p.rate)
	if p.eta > 0 {
		out += ", ETA " + p.eta.String()
	}
	return out
}

// summarize is an ended job's outcome: "1000/1000 batches, 3 failed; 10000 steps, 4 failed; in 41s".
func summarize(s *client.JobStatus) string {
	out := fmt.Sprintf("%d/%d batches, %d failed; %d steps, %d failed", s.Batches.Done, s.Batches.Total,
		s.Batches.Failed, s.Steps.Done, s.Steps.Failed)
	if s.Started != nil && s.Finished != nil {
		out += "; in " + s.Finished.Sub(*s.Started).Round(time.Millisecond).String()
	}
	return out
}

// barRenderer draws a progress bar on a terminal: the fill from the job's done and total batches, with the
// counts, rate and ETA that the plain lines carry (measured the same way, so that a watch resumed later shows
// the pace since it started, not the job's whole history as if it had happened at once).
type barRenderer struct {
	w   io.Writer
	bar *progressbar.ProgressBar
	max int
}

func newBarRenderer(w io.Writer) *barRenderer { return &barRenderer{w: w} }

func (r *barRenderer) draw(s *client.JobStatus, desc string) {
	total := max(s.Batches.Total, 1)
	if r.bar == nil || r.max != total {
		if r.bar != nil {
			_ = r.bar.Exit()
		}
		r.max = total
		r.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(r.w),
			progressbar.OptionSetWidth(30),
			progressbar.OptionEnableColorCodes(false),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionThrottle(0),
		)
	}
	r.bar.Describe(desc)
	_ = r.bar.Set(min(s.Batches.Done, total))
}

func (r *barRenderer) update(s *client.JobStatus, p progress) {
	r.draw(s, fmt.Sprintf("job %s %s: %s", s.ID, s.Status, describe(s, p)))
}

func (r *barRenderer) end(s *client.JobStatus, p progress) {
	r.draw(s, fmt.Sprintf("job %s %s", s.ID, s.Status))
	_ = r.bar.Exit()
	fmt.Fprintf(r.w, "\njob %s %s: %s\n", s.ID, s.Status, summarize(s))
}

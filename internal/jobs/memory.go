package jobs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// Memory is the Store of one process, and the default: jobs live as long as the process (not durable: a restart
// loses every job, queued, running or done). A job's lines and records are spooled to a temporary file of its own
// (removed from the directory at once, so nothing is left behind by a crash), so that memory holds only a job's
// counters and an index of 20 bytes a line, however large the job. Jobs run in the order they were committed, a
// job's lines in order.
type Memory struct {
	dir        string
	ttl        time.Duration
	maxResults int64

	mu    sync.Mutex
	jobs  map[string]*memJob
	order []*memJob         // committed jobs with lines not yet taken, oldest first
	keys  map[string]string // scoped Idempotency-Key → job id
	wake  chan struct{}     // closed and replaced when a line becomes ready to take
}

// MemoryConfig configures a Memory store. Zero values mean defaults.
type MemoryConfig struct {
	Dir            string        // where spool files are made; default os.TempDir()
	ResultsTTL     time.Duration // how long an ended job is kept; default DefaultResultsTTL
	MaxResultBytes int64         // most bytes of records kept per job; default DefaultMaxResultBytes
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory(cfg MemoryConfig) *Memory {
	m := &Memory{dir: cfg.Dir, ttl: cfg.ResultsTTL, maxResults: cfg.MaxResultBytes, jobs: map[string]*memJob{},
		keys: map[string]string{}, wake: make(chan struct{})}
	if m.ttl <= 0 {
		m.ttl = DefaultResultsTTL
	}
	if m.maxResults <= 0 {
		m.maxResults = DefaultMaxResultBytes
	}
	return m
}

// memJob is one job. Its file holds the lines, then records appended as batches finish.
type memJob struct {
	Job
	key    string
	fp     Fingerprint
	header http.Header
	f      *os.File
	end    int64   // the file's size
	lines  []int64 // lines[i] is where line i+1 starts; lines[total] is where the lines end
	recOff []int64 // where line i+1's record is, -1 for none
	recLen []int32
	next   int64   // the next line to take, from 1
	redo   []int64 // lines handed back, taken before next
}

// Stage implements Store.
func (m *Memory) Stage(_ context.Context, spec Spec) (Stager, error) {
	f, err := os.CreateTemp(m.dir, "batchd-job-*.spool")
	if err != nil {
		return nil, fmt.Errorf("jobs: spool file: %w", err)
	}
	_ = os.Remove(f.Name()) // the open file lives on; nothing is left behind
	j := &memJob{Job: Job{ID: newID(), Status: StatusQueued, MaxResultBytes: m.maxResults}, key: spec.Key,
		header: spec.Header, f: f, lines: []int64{0}, next: 1}
	return &memStager{m: m, j: j, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

type memStager struct {
	m    *Memory
	j    *memJob
	w    *bufio.Writer
	done bool
}

func (s *memStager) Add(_ context.Context, line []byte) error {
	if _, err := s.w.Write(line); err != nil {
		return fmt.Errorf("jobs: spooling a line: %w", err)
	}
	s.j.end += int64(len(line))
	s.j.lines = append(s.j.lines, s.j.end)
	return nil
}

func (s *memStager) Commit(_ context.Context, fp Fingerprint) (Job, bool, error) {
	if err := s.w.Flush(); err != nil {
		s.Abort()
		return Job{}, false, fmt.Errorf("jobs: spooling lines: %w", err)
	}
	m, j := s.m, s.j
	m.mu.Lock()
	defer m.mu.Unlock()
	if j.key != "" {
		if id, ok := m.keys[j.key]; ok {
			s.abortLocked()
			other := m.jobs[id]
			if other.fp != fp {
				return Job{}, true, ErrKeyReused
			}
			return other.Job, true, nil
		}
		m.keys[j.key] = j.ID
	}
	s.done = true
	j.fp = fp
	j.Total = int64(len(j.lines) - 1)
	j.Created = time.Now()
	j.recOff = make([]int64, j.Total)
	for i := range j.recOff {
		j.recOff[i] = -1
	}
	j.recLen = make([]int32, j.Total)
	m.jobs[j.ID] = j
	m.order = append(m.order, j)
	m.wakeLocked()
	return j.Job, false, nil // as committed, under the lock: no worker has taken a line yet
}

func (s *memStager) Abort() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.abortLocked()
}

func (s *memStager) abortLocked() {
	if !s.done {
		s.done = true
		_ = s.j.f.Close()
	}
}

// wakeLocked wakes every Take waiting for a line.
func (m *Memory) wakeLocked() {
	close(m.wake)
	m.wake = make(chan struct{})
}

// Find implements Store.
func (m *Memory) Find(_ context.Context, key string) (Job, Fingerprint, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[m.keys[key]]
	if !ok {
		return Job{}, Fingerprint{}, false, nil
	}
	return j.Job, j.fp, true, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id string) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return Job{}, ErrNotFound
	}
	return j.Job, nil
}

// Cancel implements Store.
func (m *Memory) Cancel(_ context.Context, id string) (Job, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return Job{}, false, ErrNotFound
	}
	if j.Status == StatusDone || j.Status == StatusCancelled {
		return j.Job, false, nil
	}
	j.Status, j.Finished = StatusCancelled, time.Now()
	m.wakeLocked() // a Take skips the lines not taken yet, and counts them
	return j.Job, true, nil
}

// Take implements Store.
func (m *Memory) Take(ctx context.Context) (*Task, int, error) {
	skipped := 0
	for {
		m.mu.Lock()
		t, n := m.takeLocked()
		skipped += n
		wake := m.wake
		m.mu.Unlock()
		if t != nil {
			body, err := t.read()
			if err != nil {
				return nil, skipped, err
			}
			t.Body = body
			return &t.Task, skipped, nil
		}
		if skipped > 0 {
			return nil, skipped, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, skipped, nil
		}
	}
}

// memTask is a taken line and where to read it.
type memTask struct {
	Task
	j *memJob
}

func (t *memTask) read() ([]byte, error) {
	off, end := t.j.lines[t.Line-1], t.j.lines[t.Line]
	b := make([]byte, end-off)
	if _, err := t.j.f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("jobs: reading line %d of job %s: %w", t.Line, t.j.ID, err)
	}
	return b, nil
}

// takeLocked takes the next line of the oldest job that has one, dropping jobs with nothing left to take; it
// returns how many lines of cancelled jobs it skipped.
func (m *Memory) takeLocked() (*memTask, int) {
	skipped := 0
	for len(m.order) > 0 {
		j := m.order[0]
		if j.Status == StatusCancelled {
			n := j.Total - j.next + 1 + int64(len(j.redo))
			j.next, j.redo, j.Skipped = j.Total+1, nil, j.Skipped+n
			skipped += int(n)
			m.order = m.order[1:]
			continue
		}
		var line int64
		switch {
		case len(j.redo) > 0:
			line, j.redo = j.redo[0], j.redo[1:]
		case j.next <= j.Total:
			line = j.next
			j.next++
		default:
			m.order = m.order[1:]
			continue
		}
		t := &memTask{Task: Task{Batch: Batch{Job: j.ID, Line: line, Header: j.header}}, j: j}
		t.handle = t
		if j.Status == StatusQueued {
			j.Status, j.Started, t.FirstStart = StatusRunning, time.Now(), true
		}
		return t, skipped
	}
	return nil, skipped
}

// Finish implements Store.
func (m *Memory) Finish(_ context.Context, t *Task, r Record) (Finished, error) {
	j := t.handle.(*memTask).j
	m.mu.Lock()
	rec, notStored := r.Full, false
	if j.ResultBytes+int64(len(rec)) > j.MaxResultBytes {
		rec, notStored = r.Summary, true
	}
	off := j.end
	j.end += int64(len(rec))
	m.mu.Unlock()
	if _, err := j.f.WriteAt(rec, off); err != nil {
		return Finished{}, fmt.Errorf("jobs: storing line %d of job %s: %w", r.Line, j.ID, err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	i := r.Line - 1
	if j.recOff[i] >= 0 {
		return Finished{}, errors.New("jobs: a line of a memory job finished twice")
	}
	j.recOff[i], j.recLen[i] = off, int32(len(rec))
	j.Done++
	j.StepsDone += int64(r.Steps)
	j.StepsFailed += int64(r.Failed)
	j.ResultBytes += int64(len(rec))
	if r.BatchFailed {
		j.Failed++
	}
	if notStored {
		j.NotStored++
	}
	fin := Finished{Final: j.Status}
	if j.Done+j.Skipped >= j.Total {
		if j.Status != StatusCancelled {
			j.Status, j.Finished = StatusDone, time.Now()
		}
		fin = Finished{Ended: true, Final: j.Status}
	}
	return fin, nil
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, t *Task) error {
	j := t.handle.(*memTask).j
	m.mu.Lock()
	defer m.mu.Unlock()
	j.redo = append(j.redo, t.Line)
	if len(m.order) == 0 || m.order[0] != j {
		m.order = append([]*memJob{j}, m.order...)
	}
	m.wakeLocked()
	return nil
}

// Results implements Store.
func (m *Memory) Results(_ context.Context, id string, from int64, n int) ([][]byte, Job, error) {
	m.mu.Lock()
	j, ok := m.jobs[id]
	if !ok {
		m.mu.Unlock()
		return nil, Job{}, ErrNotFound
	}
	state := j.Job
	to := min(from+int64(n), j.Total+1)
	type ref struct {
		off int64
		n   int32
	}
	refs := make([]ref, 0, max(to-from, 0))
	for l := from; l < to; l++ {
		refs = append(refs, ref{j.recOff[l-1], j.recLen[l-1]})
	}
	m.mu.Unlock()
	out := make([][]byte, len(refs))
	for i, r := range refs {
		if r.off < 0 {
			continue
		}
		b := make([]byte, r.n)
		if _, err := j.f.ReadAt(b, r.off); err != nil {
			return nil, Job{}, fmt.Errorf("jobs: reading a record of job %s: %w", id, err)
		}
		out[i] = b
	}
	return out, state, nil
}

// Stats implements Store. It also forgets the jobs that ended more than the results' TTL ago.
func (m *Memory) Stats(context.Context) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var st Stats
	for id, j := range m.jobs {
		if j.Ended() {
			if now.Sub(j.Finished) > m.ttl {
				m.forgetLocked(id, j)
			}
			continue
		}
		st.add(&j.Job, now)
	}
	return st, nil
}

func (m *Memory) forgetLocked(id string, j *memJob) {
	delete(m.jobs, id)
	if j.key != "" && m.keys[j.key] == id {
		delete(m.keys, j.key)
	}
	_ = j.f.Close()
}

// Close drops every job and its spool file.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, j := range m.jobs {
		m.forgetLocked(id, j)
	}
	m.order = nil
	return nil
}

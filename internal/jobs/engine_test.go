package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/redistest"
)

// echoRun answers every batch with {"responses":[{"key":"s","status":200,"response":<the body>}]} (the body is
// JSON), one step, which fails when the body says {"fail":true}. It records every line it ran.
type echoRun struct {
	mu   sync.Mutex
	runs map[string]int // "job:line" → times run
	gate chan struct{}  // when set, each run waits for a receive
}

func (r *echoRun) run(ctx context.Context, b Batch) (Answer, error) {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return Answer{}, ctx.Err()
		}
	}
	r.mu.Lock()
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	r.runs[b.Job+":"+strconv.FormatInt(b.Line, 10)]++
	r.mu.Unlock()
	failed := 0
	if bytes.Contains(b.Body, []byte(`"fail":true`)) {
		failed = 1
	}
	return Answer{Answer: fmt.Appendf(nil, `{"responses":[{"key":"s","status":200,"response":%s}]}`, b.Body),
		Steps: 1, Failed: failed}, nil
}

func (r *echoRun) count(job string, line int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[job+":"+strconv.FormatInt(line, 10)]
}

// submit stages and commits lines as a job.
func submit(t *testing.T, e *Engine, key string, lines ...string) (Job, bool, error) {
	t.Helper()
	ctx := t.Context()
	st, err := e.Stage(ctx, Spec{Key: key})
	require.NoError(t, err)
	h := sha256.New()
	for _, l := range lines {
		require.NoError(t, st.Add(ctx, []byte(l)))
		h.Write([]byte(l + "\n"))
	}
	var fp Fingerprint
	h.Sum(fp[:0])
	return st.Commit(ctx, fp)
}

func numbered(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"n":%d}`, i+1)
	}
	return out
}

// waitEnded polls a job until it ended, for at most 20s.
func waitEnded(t *testing.T, e *Engine, id string) Job {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := e.Get(t.Context(), id)
		require.NoError(t, err)
		if j.Ended() {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not end within 20s: %+v", id, j)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// results reads a job's records through Engine.Results.
func results(t *testing.T, e *Engine, id string, wait bool) []map[string]json.RawMessage {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, e.Results(t.Context(), id, wait, nil, func(b []byte) error { buf.Write(b); return nil }))
	var out []map[string]json.RawMessage
	for _, line := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(line, &m), "%s", line)
		out = append(out, m)
	}
	return out
}

// storeCase builds a fresh store for a conformance test; engines built on stores of one case share their jobs.
type storeCase struct {
	name string
	new  func(t *testing.T, maxResults int64) Store
}

func storeCases(t *testing.T) []storeCase {
	cases := []storeCase{{"memory", func(t *testing.T, maxResults int64) Store {
		m := NewMemory(MemoryConfig{Dir: t.TempDir(), MaxResultBytes: maxResults})
		t.Cleanup(func() { _ = m.Close() })
		return m
	}}}
	srv := redistest.Start(t)
	cases = append(cases, storeCase{"redis", func(t *testing.T, maxResults int64) Store {
		c := srv.Client(t)
		require.NoError(t, c.FlushAll(t.Context()).Err())
		s, err := NewRedis(t.Context(), RedisConfig{Client: c, MaxResultBytes: maxResults, ClaimAfter: time.Second, Chunk: 7})
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}})
	return cases
}

func startEngine(t *testing.T, s Store, run RunFunc, workers int) *Engine {
	e := New(Config{Store: s, Workers: workers, Poll: 10 * time.Millisecond})
	e.Start(run)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, e.Shutdown(ctx))
	})
	return e
}

func TestStores(t *testing.T) {
	for _, sc := range storeCases(t) {
		t.Run(sc.name, func(t *testing.T) {
			t.Run("every line once, results in line order", func(t *testing.T) {
				r := &echoRun{}
				e := startEngine(t, sc.new(t, 0), r.run, 3)
				lines := numbered(40)
				lines[9] = `{"fail":true}`
				j, replayed, err := submit(t, e, "", lines...)
				require.NoError(t, err)
				assert.False(t, replayed)
				assert.Equal(t, int64(40), j.Total)
				assert.Equal(t, StatusQueued, j.Status)
				assert.False(t, j.Created.IsZero())

				recs := results(t, e, j.ID, true) // waits for every line, in order
				require.Len(t, recs, 40)
				for i, rec := range recs {
					assert.Equal(t, strconv.Itoa(i+1), string(rec["line"]))
					assert.Contains(t, string(rec["answer"]), lines[i])
					assert.Equal(t, 1, r.count(j.ID, int64(i+1)), "line %d", i+1)
				}
				j = waitEnded(t, e, j.ID)
				assert.Equal(t, StatusDone, j.Status)
				assert.Equal(t, int64(40), j.Done)
				assert.Equal(t, int64(1), j.Failed)
				assert.Equal(t, int64(40), j.StepsDone)
				assert.Equal(t, int64(1), j.StepsFailed)
				assert.False(t, j.Started.IsZero())
				assert.False(t, j.Finished.Before(j.Started))
				assert.Len(t, results(t, e, j.ID, false), 40)
			})

			t.Run("Idempotency-Key: same body same job, other body refused", func(t *testing.T) {
				e := startEngine(t, sc.new(t, 0), (&echoRun{}).run, 1)
				a, replayed, err := submit(t, e, "scope:k1", numbered(3)...)
				require.NoError(t, err)
				require.False(t, replayed)
				b, replayed, err := submit(t, e, "scope:k1", numbered(3)...)
				require.NoError(t, err)
				assert.True(t, replayed)
				assert.Equal(t, a.ID, b.ID)
				_, _, err = submit(t, e, "scope:k1", numbered(4)...)
				assert.ErrorIs(t, err, ErrKeyReused)
				found, fp, ok, err := e.Find(t.Context(), "scope:k1")
				require.NoError(t, err)
				require.True(t, ok)
				assert.Equal(t, a.ID, found.ID)
				assert.NotEqual(t, Fingerprint{}, fp)
				c, _, err := submit(t, e, "scope:k2", numbered(3)...)
				require.NoError(t, err)
				assert.NotEqual(t, a.ID, c.ID)
				waitEnded(t, e, a.ID)
				waitEnded(t, e, c.ID)
			})

			t.Run("cancel: no further batch starts", func(t *testing.T) {
				r := &echoRun{gate: make(chan struct{})}
				e := startEngine(t, sc.new(t, 0), r.run, 2)
				j, _, err := submit(t, e, "", numbered(30)...)
				require.NoError(t, err)
				r.gate <- struct{}{} // line 1 runs
				r.gate <- struct{}{} // line 2 (or 3) runs
				c, changed, err := e.Cancel(t.Context(), j.ID)
				require.NoError(t, err)
				assert.True(t, changed)
				assert.Equal(t, StatusCancelled, c.Status)
				close(r.gate) // the batches taken before the cancel end
				j = waitEnded(t, e, j.ID)
				assert.Equal(t, StatusCancelled, j.Status)
				assert.Equal(t, int64(30), j.Done+j.Skipped)
				assert.LessOrEqual(t, j.Done, int64(4), "at most the lines taken before the cancel ran: 2 workers")
				assert.GreaterOrEqual(t, j.Done, int64(2))
				recs := results(t, e, j.ID, true)
				assert.Len(t, recs, int(j.Done))
				_, changed, err = e.Cancel(t.Context(), j.ID)
				require.NoError(t, err)
				assert.False(t, changed)
			})

			t.Run("results past the byte cap keep a summary", func(t *testing.T) {
				e := startEngine(t, sc.new(t, 200), (&echoRun{}).run, 1)
				lines := numbered(6)
				lines[4] = `{"fail":true}`
				j, _, err := submit(t, e, "", lines...)
				require.NoError(t, err)
				j = waitEnded(t, e, j.ID)
				recs := results(t, e, j.ID, false)
				require.Len(t, recs, 6)
				// The cap bounds full answers; a summary is stored past it (at most ~100 bytes a line).
				assert.LessOrEqual(t, j.ResultBytes, 200+100*j.NotStored)
				assert.Positive(t, j.NotStored)
				var notStored int64
				for i, rec := range recs {
					assert.Equal(t, strconv.Itoa(i+1), string(rec["line"]))
					if string(rec["not_stored"]) == "true" {
						notStored++
						assert.Equal(t, "null", string(rec["answer"]))
						assert.Equal(t, "1", string(rec["steps"]))
						wantFailed := "0"
						if i == 4 {
							wantFailed = "1"
						}
						assert.Equal(t, wantFailed, string(rec["failed"]))
					}
				}
				assert.Equal(t, j.NotStored, notStored)
			})

			t.Run("unknown job", func(t *testing.T) {
				e := startEngine(t, sc.new(t, 0), (&echoRun{}).run, 1)
				_, err := e.Get(t.Context(), newID())
				assert.ErrorIs(t, err, ErrNotFound)
				_, err = e.Get(t.Context(), "../../etc")
				assert.ErrorIs(t, err, ErrNotFound)
				_, _, err = e.Cancel(t.Context(), newID())
				assert.ErrorIs(t, err, ErrNotFound)
				assert.ErrorIs(t, e.Results(t.Context(), newID(), false, nil, func([]byte) error { return nil }), ErrNotFound)
			})

			t.Run("shutdown hands back a batch cut short; another engine runs it", func(t *testing.T) {
				store := sc.new(t, 0)
				started := make(chan struct{}, 1)
				blocked := func(ctx context.Context, b Batch) (Answer, error) {
					started <- struct{}{}
					<-ctx.Done() // runs until the engine cancels it
					return Answer{Answer: []byte(`{"responses":[]}`), Steps: 1, Failed: 1}, nil
				}
				first := New(Config{Store: store, Workers: 1})
				first.Start(blocked)
				j, _, err := submit(t, first, "", numbered(1)...)
				require.NoError(t, err)
				<-started
				ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
				defer cancel()
				assert.ErrorIs(t, first.Shutdown(ctx), context.DeadlineExceeded)
				got, err := first.Get(t.Context(), j.ID)
				require.NoError(t, err)
				assert.Zero(t, got.Done, "a batch cut short by the shutdown is not answered")

				r := &echoRun{}
				second := startEngine(t, store, r.run, 1)
				got = waitEnded(t, second, j.ID)
				assert.Equal(t, StatusDone, got.Status)
				assert.Zero(t, got.Failed)
				assert.Equal(t, 1, r.count(j.ID, 1))
			})

			t.Run("a batch not run now is handed back and runs later", func(t *testing.T) {
				var mu sync.Mutex
				refused := 0
				run := func(ctx context.Context, b Batch) (Answer, error) {
					mu.Lock()
					defer mu.Unlock()
					if b.Line == 2 && refused == 0 {
						refused++
						return Answer{}, fmt.Errorf("over budget")
					}
					return Answer{Answer: []byte(`{"responses":[]}`)}, nil
				}
				e := startEngine(t, sc.new(t, 0), run, 1)
				j, _, err := submit(t, e, "", numbered(3)...)
				require.NoError(t, err)
				j = waitEnded(t, e, j.ID)
				assert.Equal(t, int64(3), j.Done)
				assert.Equal(t, 1, refused)
			})
		})
	}
}

// TestRedisTakeOver: a replica takes a batch and stops without finishing it; another replica sharing the Redis
// takes it over after ClaimAfter and runs it, and every line is answered once.
func TestRedisTakeOver(t *testing.T) {
	srv := redistest.Start(t)
	newStore := func() *Redis {
		s, err := NewRedis(t.Context(), RedisConfig{Client: srv.Client(t), ClaimAfter: 300 * time.Millisecond, Chunk: 4})
		require.NoError(t, err)
		return s
	}
	dead := newStore()
	st, err := dead.Stage(t.Context(), Spec{})
	require.NoError(t, err)
	for _, l := range numbered(10) {
		require.NoError(t, st.Add(t.Context(), []byte(l)))
	}
	j, _, err := st.Commit(t.Context(), Fingerprint{1})
	require.NoError(t, err)
	taken, _, err := dead.Take(t.Context()) // the feed entry, then line 1
	require.NoError(t, err)
	require.NotNil(t, taken)
	require.Equal(t, int64(1), taken.Line)
	require.True(t, taken.FirstStart)
	require.NoError(t, dead.Close()) // the replica stops: line 1 stays pending, held by nobody alive

	live := newStore()
	t.Cleanup(func() { _ = live.Close() })
	r := &echoRun{}
	rec := &countRecorder{}
	e := New(Config{Store: live, Workers: 2, Recorder: rec, Poll: 10 * time.Millisecond})
	e.Start(r.run)
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	j = waitEnded(t, e, j.ID)
	assert.Equal(t, StatusDone, j.Status)
	assert.Equal(t, int64(10), j.Done)
	for l := int64(1); l <= 10; l++ {
		assert.Equal(t, 1, r.count(j.ID, l), "line %d", l)
	}
	assert.Equal(t, int64(1), rec.reclaimed.Load(), "line 1 was taken over")
	assert.Len(t, results(t, e, j.ID, false), 10)

	// A finish from the stopped replica arriving late replaces the record, never adds a second one.
	_, err = live.Finish(t.Context(), taken, Record{Line: 1, Full: []byte(`{"line":1,"answer":{"late":true}}` + "\n"),
		Summary: []byte("{}\n"), Steps: 1})
	require.NoError(t, err)
	j2, err := e.Get(t.Context(), j.ID)
	require.NoError(t, err)
	assert.Equal(t, j.Done, j2.Done)
	assert.Equal(t, j.StepsDone, j2.StepsDone)
	recs := results(t, e, j.ID, false)
	require.Len(t, recs, 10)
	assert.JSONEq(t, `{"late":true}`, string(recs[0]["answer"]))
}

// TestRedisGivesUp: a line whose replicas keep stopping before finishing it is run at most MaxRuns times; then it
// is answered with a failure, and the job ends.
func TestRedisGivesUp(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	newStore := func() *Redis {
		s, err := NewRedis(t.Context(), RedisConfig{Client: c, ClaimAfter: 150 * time.Millisecond})
		require.NoError(t, err)
		return s
	}
	first := newStore()
	st, err := first.Stage(t.Context(), Spec{})
	require.NoError(t, err)
	require.NoError(t, st.Add(t.Context(), []byte(`{"n":1}`)))
	j, _, err := st.Commit(t.Context(), Fingerprint{2})
	require.NoError(t, err)
	runs := 0
	var last *Task
	for runs = 1; runs <= MaxRuns+1; runs++ {
		s := first
		if runs > 1 {
			s = newStore()
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		task, _, err := s.Take(ctx)
		cancel()
		require.NoError(t, err)
		require.NotNil(t, task, "run %d", runs)
		last = task
		require.NoError(t, s.Close()) // stops before finishing
		if task.GiveUp {
			break
		}
		assert.Equal(t, runs > 1, task.Reclaimed)
	}
	require.True(t, last.GiveUp)
	assert.Equal(t, MaxRuns+1, runs, "taken MaxRuns times to run, then once more to give up")
	e := New(Config{Store: newStore(), Workers: 1})
	<-e.runTask(nil, last, closed) // a give-up answer needs no RunFunc
	got, err := e.Get(t.Context(), j.ID)
	require.NoError(t, err)
	assert.Equal(t, StatusDone, got.Status)
	assert.Equal(t, int64(1), got.Failed)
	recs := results(t, e, j.ID, false)
	require.Len(t, recs, 1)
	assert.Contains(t, string(recs[0]["answer"]), "not run again")
}

// countRecorder counts what an engine records.
type countRecorder struct {
	reclaimed atomic.Int64
	mu        sync.Mutex
	status    map[string]int
	batches   map[string]int
}

func (c *countRecorder) JobStatus(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status == nil {
		c.status = map[string]int{}
	}
	c.status[s]++
}

func (c *countRecorder) JobBatch(o string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batches == nil {
		c.batches = map[string]int{}
	}
	c.batches[o] += n
}

func (c *countRecorder) JobBatchReclaimed()                   { c.reclaimed.Add(1) }
func (c *countRecorder) JobQueue(int64, int64, time.Duration) {}

// concurrencyRun runs each batch for a moment and records how many ran at once, at most, since the last reset;
// with a barrier set, each batch also waits (up to 10s) until that many run at once.
type concurrencyRun struct {
	mu       sync.Mutex
	running  int
	most     int
	barrier  int
	reached  chan struct{}
	timedOut atomic.Bool
}

func (r *concurrencyRun) run(ctx context.Context, b Batch) (Answer, error) {
	r.mu.Lock()
	r.running++
	r.most = max(r.most, r.running)
	reached := r.reached
	if reached != nil && r.running >= r.barrier {
		close(reached)
		r.reached = nil
	}
	r.mu.Unlock()
	if reached != nil {
		select {
		case <-reached:
		case <-time.After(10 * time.Second):
			r.timedOut.Store(true)
		case <-ctx.Done():
		}
	} else {
		time.Sleep(time.Millisecond)
	}
	r.mu.Lock()
	r.running--
	r.mu.Unlock()
	return Answer{Answer: []byte(`{"responses":[]}`)}, nil
}

func (r *concurrencyRun) reset(barrier int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	most := r.most
	r.most = 0
	if barrier > 0 {
		r.barrier, r.reached = barrier, make(chan struct{})
	}
	return most
}

// Interactive batches come first: while one is served a replica runs one job batch at a time, whatever
// -job-workers; once none has been served for the quiet spell, the workers run batches side by side again.
func TestJobsYieldToInteractiveBatches(t *testing.T) {
	run := &concurrencyRun{}
	s := NewMemory(MemoryConfig{Dir: t.TempDir()})
	t.Cleanup(func() { _ = s.Close() })
	e := New(Config{Store: s, Workers: 4, Poll: 10 * time.Millisecond, Quiet: 20 * time.Millisecond})
	end := e.Interactive()
	e.Start(run.run)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, e.Shutdown(ctx))
	})

	j, _, err := submit(t, e, "", numbered(400)...)
	require.NoError(t, err)
	waitDone := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool {
			got, err := e.Get(t.Context(), j.ID)
			return err == nil && got.Done >= n
		}, 20*time.Second, time.Millisecond)
	}
	waitDone(40)
	assert.Equal(t, 1, run.reset(0), "beside an interactive batch, one job batch at a time")

	// A second interactive batch that ends at once does not let the others in while the first is served.
	e.Interactive()()
	waitDone(80)
	assert.Equal(t, 1, run.reset(0), "still one at a time while the first interactive batch is served")

	run.reset(2) // from now on a batch waits until two run at once: with one worker it would wait 10s
	end()
	end() // ending twice counts once
	waitEnded(t, e, j.ID)
	assert.False(t, run.timedOut.Load(), "after the quiet spell, two job batches ran at once")
	assert.GreaterOrEqual(t, run.reset(0), 2)
}

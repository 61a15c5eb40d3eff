package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/redistest"
	"github.com/batchd/batchd/metrics"
)

const (
	testTTL   = time.Hour
	testLease = time.Minute
)

// backend is a Store under test with a way to make time pass for one entry.
type backend struct {
	store Store
	// elapse lets life pass for the entry under the scoped key: the entry must still be live just before, and gone
	// after. Memory moves its clock; Redis checks the key's PTTL is at most life, then expires it at once (no
	// wall-clock waiting on a TTL, so no flakiness on a slow machine).
	elapse func(t *testing.T, key string, life time.Duration)
	// bounded: the store evicts its oldest entry past MaxEntries (Memory; Redis leaves that to maxmemory).
	bounded bool
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newMemoryBackend(t *testing.T, maxEntries int) backend {
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m := NewMemory(MemoryConfig{MaxEntries: maxEntries, Now: clock.Now})
	return backend{
		store: m,
		elapse: func(t *testing.T, key string, life time.Duration) {
			clock.Advance(life - time.Nanosecond)
			_, claimed, err := m.Claim(context.Background(), key, Fingerprint{}, time.Second)
			require.NoError(t, err)
			require.False(t, claimed, "the entry expired before its time")
			clock.Advance(time.Nanosecond)
		},
		bounded: true,
	}
}

// newRedisBackends starts one redis-server for a group of tests; each backend it returns has a key prefix of its
// own test.
func newRedisBackends(t *testing.T) func(t *testing.T) backend {
	srv := redistest.Start(t)
	return func(t *testing.T) backend {
		c := srv.Client(t)
		prefix := "test:" + t.Name() + ":"
		return backend{
			store: NewRedis(c, prefix),
			elapse: func(t *testing.T, key string, life time.Duration) {
				ctx := context.Background()
				left, err := c.PTTL(ctx, prefix+key).Result()
				require.NoError(t, err)
				require.Positive(t, left, "the key has no expiry, or is gone already")
				require.LessOrEqual(t, left, life)
				require.NoError(t, c.PExpire(ctx, prefix+key, time.Millisecond).Err())
				require.Eventually(t, func() bool { return c.Exists(ctx, prefix+key).Val() == 0 }, 5*time.Second, time.Millisecond)
			},
		}
	}
}

// backends: setup runs once per group of tests and returns a fresh backend per test.
var backends = []struct {
	name  string
	setup func(t *testing.T) func(t *testing.T) backend
}{
	{"memory", func(*testing.T) func(t *testing.T) backend {
		return func(t *testing.T) backend { return newMemoryBackend(t, 100) }
	}},
	{"redis", newRedisBackends},
}

// countingRecorder counts the guard's results.
type countingRecorder struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *countingRecorder) IdempotencyResult(r string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[r]++
}

// results are the results counted, once each.
func (c *countingRecorder) results() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for r := range c.n {
		out = append(out, r)
	}
	return out
}

func (c *countingRecorder) get(r string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[r]
}

// req is one batch request as the guard sees it.
type req struct {
	key    string   // Idempotency-Key; "" for none
	keys   []string // several Idempotency-Key headers
	auth   string
	stream bool // the answer's form, as the handler decided it
	body   string
}

func (q req) http(ctx context.Context) *http.Request {
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/batch", strings.NewReader(q.body))
	if q.key != "" {
		r.Header.Set(HeaderKey, q.key)
	}
	for _, k := range q.keys {
		r.Header.Add(HeaderKey, k)
	}
	if q.auth != "" {
		r.Header.Set("Authorization", q.auth)
	}
	return r
}

// begin calls Begin; when the guard did not answer, the caller runs and finishes.
func begin(g *Guard, q req) (*httptest.ResponseRecorder, func(int, string, []byte), bool) {
	w := httptest.NewRecorder()
	finish, _, answered := g.Begin(w, q.http(context.Background()), []byte(q.body), q.stream)
	return w, finish, answered
}

// batch is a request through the guard that, when let through, "runs" by counting and answers answer.
func batch(t *testing.T, g *Guard, q req, runs *int, answer string) *httptest.ResponseRecorder {
	t.Helper()
	w, finish, answered := begin(g, q)
	if answered {
		require.Nil(t, finish)
		return w
	}
	require.NotNil(t, finish)
	*runs++
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.WriteString(answer)
	finish(http.StatusOK, "application/json", []byte(answer))
	return w
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) int {
	t.Helper()
	var er struct {
		OK     bool
		Result struct {
			Error       int
			Description string
			Details     []struct{ Key, Reason, Problem string }
		}
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &er), "%s", w.Body)
	assert.False(t, er.OK)
	assert.NotEmpty(t, er.Result.Description)
	require.Len(t, er.Result.Details, 1)
	assert.NotEmpty(t, er.Result.Details[0].Reason)
	assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
	assert.Equal(t, er.Result.Error/10, w.Code, "the HTTP status is the code's")
	return er.Result.Error
}

// TestBehaviours is the contract, once per store.
func TestBehaviours(t *testing.T) {
	const body, answer = `{"requests":[{"key":"a","path":"Producer/Add","payload":{"name":"x"}}]}`, `{"responses":[{"key":"a","status":200,"response":{"ok":true}}]}`
	cases := []struct {
		name string
		run  func(t *testing.T, b backend, g *Guard, rec *countingRecorder)
	}{
		{"first run then replay", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			runs := 0
			first := batch(t, g, req{key: "k1", auth: "Bearer A", body: body}, &runs, answer)
			assert.Empty(t, first.Header().Get(HeaderReplayed))
			again := batch(t, g, req{key: "k1", auth: "Bearer A", body: body}, &runs, "must not run")
			assert.Equal(t, 1, runs, "the retry executed nothing")
			assert.Equal(t, http.StatusOK, again.Code)
			assert.Equal(t, answer, again.Body.String(), "byte for byte")
			assert.Equal(t, "application/json", again.Header().Get("Content-Type"))
			assert.Equal(t, "true", again.Header().Get(HeaderReplayed))
			assert.Equal(t, 1, rec.get(ResultStored))
			assert.Equal(t, 1, rec.get(ResultReplayed))
		}},
		{"stored status and content type are replayed as they were", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			_, finish, answered := begin(g, req{key: "k", body: body, stream: true})
			require.False(t, answered)
			finish(http.StatusAccepted, "application/x-ndjson", []byte("{\"a\":1}\n{\"b\":\"\\n\"}\n"))
			w, _, answered := begin(g, req{key: "k", body: body, stream: true})
			require.True(t, answered)
			assert.Equal(t, http.StatusAccepted, w.Code)
			assert.Equal(t, "application/x-ndjson", w.Header().Get("Content-Type"))
			assert.Equal(t, "{\"a\":1}\n{\"b\":\"\\n\"}\n", w.Body.String())
		}},
		{"same key, other body", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			runs := 0
			batch(t, g, req{key: "k", body: body}, &runs, answer)
			w := batch(t, g, req{key: "k", body: body + " "}, &runs, "must not run")
			assert.Equal(t, 1, runs)
			assert.Equal(t, 4220, errorCode(t, w))
			assert.Empty(t, w.Header().Get(HeaderReplayed))
			assert.Equal(t, 1, rec.get(ResultMismatch))
		}},
		{"same key and body, other answer form", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			runs := 0
			batch(t, g, req{key: "k", body: body}, &runs, answer)
			w := batch(t, g, req{key: "k", body: body, stream: true}, &runs, "must not run")
			assert.Equal(t, 4220, errorCode(t, w), "a stream is another answer than JSON")
			w = batch(t, g, req{key: "k", body: body}, &runs, "must not run")
			assert.Equal(t, "true", w.Header().Get(HeaderReplayed))
			assert.Equal(t, 1, runs)
			assert.Equal(t, 1, rec.get(ResultMismatch))
		}},
		{"the form is the handler's decision, not Accept's", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			runs := 0
			batch(t, g, req{key: "k", body: body}, &runs, answer)
			// Headers that would have asked for a stream change nothing: only the stream argument counts.
			q := req{key: "k", body: body}.http(context.Background())
			q.Header.Set("Accept", "application/x-ndjson")
			w := httptest.NewRecorder()
			_, _, answered := g.Begin(w, q, []byte(body), false)
			require.True(t, answered)
			assert.Equal(t, "true", w.Header().Get(HeaderReplayed))
			assert.Equal(t, answer, w.Body.String())
		}},
		{"busy while the first runs", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			_, finish, answered := begin(g, req{key: "k", body: body})
			require.False(t, answered)
			w, _, answered := begin(g, req{key: "k", body: body})
			require.True(t, answered)
			assert.Equal(t, 4090, errorCode(t, w))
			w, _, answered = begin(g, req{key: "k", body: "{}"})
			require.True(t, answered)
			assert.Equal(t, 4220, errorCode(t, w), "another body is a misuse even while the first runs")
			finish(http.StatusOK, "application/json", []byte(answer))
			w, _, answered = begin(g, req{key: "k", body: body})
			require.True(t, answered)
			assert.Equal(t, "true", w.Header().Get(HeaderReplayed))
			assert.Equal(t, 1, rec.get(ResultConflict))
		}},
		{"one of many concurrent first requests runs", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			const n = 16
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				claimed int
				codes   []int
			)
			start := make(chan struct{})
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					w, finish, answered := begin(g, req{key: "race", body: body})
					mu.Lock()
					defer mu.Unlock()
					if !answered {
						claimed++
						t.Cleanup(func() { finish(http.StatusOK, "application/json", nil) })
						return
					}
					codes = append(codes, w.Code)
				}()
			}
			close(start)
			wg.Wait()
			assert.Equal(t, 1, claimed)
			assert.Len(t, codes, n-1)
			for _, c := range codes {
				assert.Equal(t, http.StatusConflict, c)
			}
		}},
		{"a refused batch releases its key", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			for _, status := range []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, 0} {
				_, finish, answered := begin(g, req{key: "k", body: "bad"})
				require.False(t, answered, "status %d", status)
				finish(status, "application/json", []byte(`{"ok":false}`))
				finish(http.StatusOK, "application/json", []byte("later calls are ignored"))
			}
			runs := 0
			w := batch(t, g, req{key: "k", body: body}, &runs, answer)
			assert.Equal(t, 1, runs, "the fixed batch runs under the same key")
			assert.Empty(t, w.Header().Get(HeaderReplayed))
			assert.Equal(t, 0, rec.get(ResultMismatch))
			assert.Equal(t, 1, rec.get(ResultStored))
		}},
		{"the answer is stored when the client went away mid-run", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			ctx, cancel := context.WithCancel(context.Background())
			finish, _, answered := g.Begin(httptest.NewRecorder(), req{key: "k", body: body}.http(ctx), []byte(body), false)
			require.False(t, answered)
			cancel()
			finish(http.StatusOK, "application/json", []byte(answer))
			w, _, answered := begin(g, req{key: "k", body: body})
			require.True(t, answered)
			assert.Equal(t, answer, w.Body.String())
		}},
		{"keys are scoped per caller", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			runs := 0
			batch(t, g, req{key: "k", auth: "Bearer A", body: body}, &runs, `"A's"`)
			w := batch(t, g, req{key: "k", auth: "Bearer B", body: body}, &runs, `"B's"`)
			assert.Equal(t, 2, runs, "B's batch runs: it cannot see A's answer")
			assert.Equal(t, `"B's"`, w.Body.String())
			w = batch(t, g, req{key: "k", auth: "Bearer C", body: "{}"}, &runs, `"C's"`)
			assert.Equal(t, 3, runs, "C's other body is no mismatch: C never used the key")
			assert.Equal(t, `"C's"`, w.Body.String())
			w = batch(t, g, req{key: "k", body: body}, &runs, `"anonymous"`)
			assert.Equal(t, 4, runs)
			assert.Equal(t, `"anonymous"`, w.Body.String())
			for auth, want := range map[string]string{"Bearer A": `"A's"`, "Bearer B": `"B's"`, "": `"anonymous"`} {
				w = batch(t, g, req{key: "k", auth: auth, body: body}, &runs, "must not run")
				assert.Equal(t, want, w.Body.String(), auth)
			}
			assert.Equal(t, 4, runs)
		}},
		{"an answer expires after the TTL", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			runs := 0
			batch(t, g, req{key: "k", auth: "Bearer A", body: body}, &runs, answer)
			b.elapse(t, scopedKey([]string{"Bearer A"}, "k"), testTTL)
			w := batch(t, g, req{key: "k", auth: "Bearer A", body: "{}"}, &runs, answer)
			assert.Equal(t, 2, runs, "after the TTL the key is new, whatever the body")
			assert.Empty(t, w.Header().Get(HeaderReplayed))
		}},
		{"a claim expires after its lease", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			_, lost, answered := begin(g, req{key: "k", body: body})
			require.False(t, answered)
			b.elapse(t, scopedKey(nil, "k"), testLease)
			runs := 0
			batch(t, g, req{key: "k", body: body}, &runs, `"second"`)
			assert.Equal(t, 1, runs, "a crashed replica's claim does not block the key forever")
			lost(http.StatusOK, "application/json", []byte(`"first"`))
			assert.Equal(t, 1, rec.get(ResultError), "the first run's claim was lost: its answer is not stored")
			w, _, _ := begin(g, req{key: "k", body: body})
			assert.Equal(t, `"second"`, w.Body.String(), "and it did not overwrite the second's")
		}},
		{"the oldest entry is evicted past the bound", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			if !b.bounded {
				t.Skip("Redis bounds memory with its own maxmemory policy")
			}
			runs := 0
			for i := range 101 { // the memory backend holds 100
				batch(t, g, req{key: fmt.Sprint("k", i), body: body}, &runs, answer)
			}
			assert.Equal(t, 100, b.store.(*Memory).Len())
			batch(t, g, req{key: "k100", body: body}, &runs, answer)
			assert.Equal(t, 101, runs, "the newest is kept")
			batch(t, g, req{key: "k0", body: body}, &runs, answer)
			assert.Equal(t, 102, runs, "the oldest was evicted, so it ran again")
		}},
		{"a request without a key is not guarded", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			runs := 0
			batch(t, g, req{body: body}, &runs, answer)
			batch(t, g, req{body: body}, &runs, answer)
			assert.Equal(t, 2, runs)
			assert.Equal(t, 0, rec.get(ResultStored))
		}},
		{"malformed keys are refused", func(t *testing.T, b backend, g *Guard, rec *countingRecorder) {
			for _, q := range []req{
				{keys: []string{""}},
				{key: strings.Repeat("k", MaxKeyLen+1)},
				{key: "tab\there"},
				{key: "del\x7f"},
				{key: "ключ"},
				{keys: []string{"a", "b"}},
				{keys: []string{"a", "a"}},
			} {
				q.body = body
				runs := 0
				w := batch(t, g, q, &runs, answer)
				assert.Equal(t, 0, runs, "%q", q)
				assert.Equal(t, 4000, errorCode(t, w), "%q", q)
			}
			runs := 0
			batch(t, g, req{key: strings.Repeat("~", MaxKeyLen), body: body}, &runs, answer)
			batch(t, g, req{key: " a key: with spaces & {punctuation} ", body: body}, &runs, answer)
			assert.Equal(t, 2, runs)
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			newBackend := be.setup(t)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					b := newBackend(t)
					rec := &countingRecorder{}
					g := New(Config{Store: b.store, TTL: testTTL, Lease: testLease, Recorder: rec})
					tc.run(t, b, g, rec)
				})
			}
		})
	}
}

// failingStore fails every call, as a Redis that is down does.
type failingStore struct{ calls int }

func (f *failingStore) Claim(context.Context, string, Fingerprint, time.Duration) (Entry, bool, error) {
	f.calls++
	return Entry{}, false, errors.New("connection refused")
}

func (f *failingStore) Complete(context.Context, string, Entry, Answer, time.Duration) (bool, error) {
	f.calls++
	return false, errors.New("connection refused")
}

func (f *failingStore) Release(context.Context, string, Entry) error {
	f.calls++
	return errors.New("connection refused")
}

// TestStoreDownFailsClosed: a request with a key gets 503 and does not run; one without a key never touches the
// store.
func TestStoreDownFailsClosed(t *testing.T) {
	rec := &countingRecorder{}
	s := &failingStore{}
	g := New(Config{Store: s, Recorder: rec})
	runs := 0
	w := batch(t, g, req{key: "k", body: "{}"}, &runs, "must not run")
	assert.Equal(t, 0, runs)
	assert.Equal(t, 5030, errorCode(t, w))
	assert.Equal(t, 1, rec.get(ResultError))

	batch(t, g, req{body: "{}"}, &runs, "{}")
	assert.Equal(t, 1, runs)
	assert.Equal(t, 1, s.calls, "no store call for the request without a key")
}

// TestRedisDownFailsClosed is the same against a real client whose server is gone.
func TestRedisDownFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	g := New(Config{Store: NewRedis(c, ""), Timeout: 2 * time.Second})
	runs := 0
	batch(t, g, req{key: "before", body: "{}"}, &runs, "{}")
	require.Equal(t, 1, runs)

	require.NoError(t, c.ShutdownNoSave(context.Background()).Err()) // redis-server answers nothing: it exits
	w := batch(t, g, req{key: "after", body: "{}"}, &runs, "must not run")
	assert.Equal(t, 1, runs)
	assert.Equal(t, 5030, errorCode(t, w))
}

// TestRedisValues: what Redis holds decodes to what was written, and anything else is an error.
func TestRedisValues(t *testing.T) {
	fp := NewFingerprint(false, []byte("body"))
	running := Entry{Fingerprint: fp, Token: newToken()}
	e, err := decode([]byte(encodeRunning(running)))
	require.NoError(t, err)
	assert.Equal(t, running, e)

	for _, a := range []Answer{
		{Status: 200, ContentType: "application/json", Body: []byte(`{"responses":[]}`)},
		{Status: 200, ContentType: "application/x-ndjson", Body: []byte("{}\n{}\n")},
		{Status: 599, ContentType: "", Body: []byte{}},
		{Status: 201, ContentType: "text/plain; charset=utf-8", Body: []byte("\n\x00\xff:d1:")},
	} {
		done := Entry{Fingerprint: fp, Token: running.Token, Done: true, Answer: a}
		e, err := decode(encodeDone(done))
		require.NoError(t, err)
		assert.Equal(t, fp, e.Fingerprint)
		assert.True(t, e.Done)
		assert.Equal(t, a.Status, e.Answer.Status)
		assert.Equal(t, a.ContentType, e.Answer.ContentType)
		assert.Equal(t, string(a.Body), string(e.Answer.Body))
	}
	notStored := Entry{Fingerprint: fp, Token: running.Token, Done: true, Answer: Answer{Status: 200, NotStored: true}}
	e, err = decode(encodeDone(notStored))
	require.NoError(t, err)
	assert.Equal(t, Entry{Fingerprint: fp, Done: true, Answer: Answer{Status: 200, NotStored: true}}, e)
	hexFP := strings.Repeat("ab", 32)
	for _, bad := range []string{"", "r1:", "x1:" + hexFP + ":t", "r1:" + hexFP + "t", "r1:" + strings.Repeat("zz", 32) + ":t",
		"d1:" + hexFP + ":200", "d1:" + hexFP + ":20x:a\n", "d1:" + hexFP + ":200:no newline", "n1:" + hexFP + ":2000",
		"n1:" + hexFP + ":20x"} {
		_, err := decode([]byte(bad))
		assert.ErrorIs(t, err, errCorrupt, "%q", bad)
	}
}

// TestForeignValueIsAnError: a value batchd did not write under its key is a store error (503), never replayed.
func TestForeignValueIsAnError(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	require.NoError(t, c.Set(context.Background(), DefaultRedisPrefix+scopedKey(nil, "k"), "hello", 0).Err())
	g := New(Config{Store: NewRedis(c, "")})
	runs := 0
	w := batch(t, g, req{key: "k", body: "{}"}, &runs, "must not run")
	assert.Equal(t, 0, runs)
	assert.Equal(t, 5030, errorCode(t, w))
}

func TestRedisRefusesLineBreakInContentType(t *testing.T) {
	srv := redistest.Start(t)
	s := NewRedis(srv.Client(t), "")
	e, claimed, err := s.Claim(context.Background(), "k", Fingerprint{}, time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	_, err = s.Complete(context.Background(), "k", e, Answer{Status: 200, ContentType: "a\nb"}, time.Minute)
	assert.Error(t, err)
}

// TestStoresGuardTheirClaims: only the holder of a claim completes or releases it.
func TestStoresGuardTheirClaims(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s := be.setup(t)(t).store
			ctx := context.Background()
			claim, claimed, err := s.Claim(ctx, "k", Fingerprint{1}, time.Minute)
			require.NoError(t, err)
			require.True(t, claimed)
			stranger := claim
			stranger.Token = newToken()

			require.NoError(t, s.Release(ctx, "k", stranger))
			stored, err := s.Complete(ctx, "k", stranger, Answer{Status: 200, Body: []byte("x")}, time.Minute)
			require.NoError(t, err)
			assert.False(t, stored)
			e, claimed, err := s.Claim(ctx, "k", Fingerprint{1}, time.Minute)
			require.NoError(t, err)
			assert.False(t, claimed)
			assert.False(t, e.Done, "still the first claim's running entry")
			assert.Equal(t, claim.Token, e.Token)

			stored, err = s.Complete(ctx, "k", claim, Answer{Status: 200, ContentType: "application/json", Body: []byte("x")}, time.Minute)
			require.NoError(t, err)
			assert.True(t, stored)
			require.NoError(t, s.Release(ctx, "k", claim), "releasing a done entry does nothing")
			stored, err = s.Complete(ctx, "k", claim, Answer{Status: 200, Body: []byte("y")}, time.Minute)
			require.NoError(t, err)
			assert.False(t, stored, "a claim completes once")
			e, claimed, err = s.Claim(ctx, "k", Fingerprint{2}, time.Minute)
			require.NoError(t, err)
			assert.False(t, claimed)
			assert.True(t, e.Done)
			assert.Equal(t, Fingerprint{1}, e.Fingerprint)
			assert.Equal(t, "x", string(e.Answer.Body))
		})
	}
}

// TestAnswerNotStored: an answer over MaxAnswer (or passed as nil) keeps its key as run: a retry gets 409 with
// reason idempotency_answer_not_stored and runs nothing, on either store.
func TestAnswerNotStored(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			env := be.setup(t)(t)
			rec := &countingRecorder{}
			g := New(Config{Store: env.store, MaxAnswer: 10, Recorder: rec})
			runs := 0
			first := batch(t, g, req{key: "k", body: "{}"}, &runs, `{"responses":["longer than ten bytes"]}`)
			assert.Equal(t, http.StatusOK, first.Code)
			w := batch(t, g, req{key: "k", body: "{}"}, &runs, "must not run")
			assert.Equal(t, 1, runs)
			assert.Equal(t, http.StatusConflict, w.Code)
			assert.Equal(t, 4091, errorCode(t, w))
			assert.Contains(t, w.Body.String(), "idempotency_answer_not_stored")
			assert.Equal(t, 1, rec.get(ResultNotStored))
			assert.Equal(t, 1, rec.get(ResultConflict))

			_, finish, answered := begin(g, req{key: "k2", body: "{}"})
			require.False(t, answered)
			finish(http.StatusOK, "application/json", nil) // the handler's "too large to keep a copy"
			w, _, answered = begin(g, req{key: "k2", body: "{}"})
			require.True(t, answered)
			assert.Equal(t, 4091, errorCode(t, w))
		})
	}
}

// TestMemoryByteCap: the memory store holds at most MaxBytes: the oldest done answers go first, a running batch's
// entry never does (a claim that cannot fit is refused with ErrFull), and an answer that cannot fit beside the
// running ones is kept as run, without its body.
func TestMemoryByteCap(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(MemoryConfig{MaxBytes: 4 * (entryOverhead + 1100)})
	complete := func(key string, n int) {
		e, claimed, err := m.Claim(ctx, key, Fingerprint{}, time.Minute)
		require.NoError(t, err)
		require.True(t, claimed)
		stored, err := m.Complete(ctx, key, e, Answer{Status: 200, Body: make([]byte, n)}, time.Hour)
		require.NoError(t, err)
		require.True(t, stored)
	}
	for i := range 6 {
		complete(fmt.Sprint(i), 1000)
		assert.LessOrEqual(t, m.Bytes(), int64(4*(entryOverhead+1100)))
	}
	_, claimed, err := m.Claim(ctx, "0", Fingerprint{}, time.Minute)
	require.NoError(t, err)
	assert.True(t, claimed, "the oldest answer was evicted")
	e, claimed, err := m.Claim(ctx, "5", Fingerprint{}, time.Minute)
	require.NoError(t, err)
	assert.False(t, claimed, "the newest is kept")
	assert.Equal(t, 1000, len(e.Answer.Body))

	// Running batches fill the store: none is evicted, the next claim is refused.
	full := NewMemory(MemoryConfig{MaxBytes: 3 * (entryOverhead + 100)})
	var claims []Entry
	for i := 0; ; i++ {
		c, claimed, err := full.Claim(ctx, fmt.Sprint("run", i), Fingerprint{}, time.Minute)
		if err != nil {
			require.ErrorIs(t, err, ErrFull)
			break
		}
		require.True(t, claimed)
		claims = append(claims, c)
	}
	require.NotEmpty(t, claims)
	stored, err := full.Complete(ctx, "run0", claims[0], Answer{Status: 200, Body: make([]byte, 5000)}, time.Hour)
	require.NoError(t, err)
	assert.True(t, stored)
	e, claimed, err = full.Claim(ctx, "run0", Fingerprint{}, time.Minute)
	require.NoError(t, err)
	assert.False(t, claimed)
	assert.True(t, e.Answer.NotStored, "kept as run, without a body that cannot fit")
}

func TestMemorySweepsExpiredEntries(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	m := NewMemory(MemoryConfig{MaxEntries: 10, Now: clock.Now})
	ctx := context.Background()
	for i := range 5 {
		e, _, err := m.Claim(ctx, fmt.Sprint(i), Fingerprint{}, time.Minute)
		require.NoError(t, err)
		_, err = m.Complete(ctx, fmt.Sprint(i), e, Answer{Status: 200}, time.Hour)
		require.NoError(t, err)
	}
	require.Equal(t, 5, m.Len())
	clock.Advance(time.Hour)
	_, claimed, err := m.Claim(ctx, "new", Fingerprint{}, time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	assert.Equal(t, 1, m.Len(), "the expired entries went with the next write")
}

// TestFingerprint: the form and the body each change the fingerprint, and its hash input is pinned: answers stored
// by an earlier batchd (under the same input) must still be replayed after an upgrade.
func TestFingerprint(t *testing.T) {
	assert.NotEqual(t, NewFingerprint(false, []byte("b")), NewFingerprint(true, []byte("b")))
	assert.NotEqual(t, NewFingerprint(false, []byte("b")), NewFingerprint(false, []byte("b ")))
	assert.Equal(t, Fingerprint(sha256.Sum256([]byte("batchd-idempotency-v1\x00json\x00b"))), NewFingerprint(false, []byte("b")))
	assert.Equal(t, Fingerprint(sha256.Sum256([]byte("batchd-idempotency-v1\x00ndjson\x00b"))), NewFingerprint(true, []byte("b")))
}

func TestScopedKey(t *testing.T) {
	assert.NotEqual(t, scopedKey([]string{"Bearer A"}, "k"), scopedKey([]string{"Bearer B"}, "k"))
	assert.NotContains(t, scopedKey([]string{"Bearer secret"}, "k"), "secret", "credentials never reach the store")
	assert.True(t, strings.HasSuffix(scopedKey(nil, "my key"), ":my key"), "the client's key stays readable")
}

// TestResultsAreMetricsLabels: every result the guard counts is one of Results, the label set batchd gives the
// metrics: counted as such, never under the fallback.
func TestResultsAreMetricsLabels(t *testing.T) {
	rec := &countingRecorder{}
	g := New(Config{Store: NewMemory(MemoryConfig{}), MaxAnswer: 4, Recorder: rec})
	runs := 0
	batch(t, g, req{key: "k", body: "{}"}, &runs, "long answer")
	batch(t, g, req{key: "k", body: "{}"}, &runs, "x")
	batch(t, g, req{key: "k", body: "{} "}, &runs, "x")
	batch(t, g, req{key: "s", body: "{}"}, &runs, "ok")
	batch(t, g, req{key: "s", body: "{}"}, &runs, "x")
	for _, r := range rec.results() {
		assert.Contains(t, Results(), r)
	}
	var _ Recorder = (*metrics.Metrics)(nil)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/redistest"
	"github.com/batchd/batchd/internal/syncbuf"
)

// keyedPost posts a batch with an Idempotency-Key (none when key is "") and an Authorization (none when "").
func (in *instance) keyedPost(ctx context.Context, t *testing.T, key, auth, body string) (int, http.Header, []byte) {
	t.Helper()
	var hdr []string
	if key != "" {
		hdr = append(hdr, "Idempotency-Key", key)
	}
	if auth != "" {
		hdr = append(hdr, "Authorization", auth)
	}
	return in.request(ctx, t, "/v1/batch", "application/json", body, hdr...)
}

func (in *instance) keyed(t *testing.T, key, auth, body string) (int, http.Header, []byte) {
	t.Helper()
	return in.keyedPost(context.Background(), t, key, auth, body)
}

// producers counts the demo store's producers with a batch of its own (no key).
func (in *instance) producers(t *testing.T) int {
	t.Helper()
	res := in.batch(t, `{"requests":[{"key":"g","path":"Producer/Get","payload":{}}]}`)
	var get struct{ Total int }
	require.NoError(t, json.Unmarshal(res[0].Response, &get), "%s", res[0].Response)
	return get.Total
}

func batchErrorCode(t *testing.T, body []byte) int {
	t.Helper()
	var er struct {
		OK     bool
		Result struct{ Error int }
	}
	require.NoError(t, json.Unmarshal(body, &er), "%s", body)
	require.False(t, er.OK)
	return er.Result.Error
}

const addProducer = `{"requests":[
	{"key":"add","path":"Producer/Add","payload":{"name":"Coca-Cola"}},
	{"key":"get","path":"Producer/Get","payload":{"ids":["${add.result.new_id}"]}}]}`

// TestIdempotentReplay: a retry with the same key and body gets the first answer byte for byte and executes
// nothing; another body is 422; another caller runs its own batch; a refused batch frees its key.
func TestIdempotentReplay(t *testing.T) {
	in := start(t)
	status, h, first := in.keyed(t, "import-2026-01-02", "Bearer A", addProducer)
	require.Equal(t, http.StatusOK, status, "%s", first)
	assert.Empty(t, h.Get("Idempotent-Replayed"))
	require.Equal(t, 1, in.producers(t))

	status, h, again := in.keyed(t, "import-2026-01-02", "Bearer A", addProducer)
	require.Equal(t, http.StatusOK, status, "%s", again)
	assert.Equal(t, "true", h.Get("Idempotent-Replayed"))
	assert.Equal(t, "application/json", h.Get("Content-Type"))
	assert.Equal(t, string(first), string(again), "the stored answer, byte for byte")
	assert.Equal(t, 1, in.producers(t), "the retry executed nothing")

	status, _, b := in.keyed(t, "import-2026-01-02", "Bearer A", strings.Replace(addProducer, "Coca-Cola", "Pepsi", 1))
	require.Equal(t, http.StatusUnprocessableEntity, status, "%s", b)
	assert.Equal(t, 4220, batchErrorCode(t, b))
	assert.Equal(t, 1, in.producers(t))

	status, h, b = in.keyed(t, "import-2026-01-02", "Bearer B", addProducer)
	require.Equal(t, http.StatusOK, status, "%s", b)
	assert.Empty(t, h.Get("Idempotent-Replayed"), "another caller cannot see A's answer")
	assert.Equal(t, 2, in.producers(t), "B's batch ran")

	// A refused batch (400: unknown reference) is not stored: the fixed batch runs under the same key.
	status, _, b = in.keyed(t, "fix-me", "Bearer A", `{"requests":[{"key":"a","path":"Producer/Add","payload":"${nope.x}"}]}`)
	require.Equal(t, http.StatusBadRequest, status, "%s", b)
	status, h, b = in.keyed(t, "fix-me", "Bearer A", addProducer)
	require.Equal(t, http.StatusOK, status, "%s", b)
	assert.Empty(t, h.Get("Idempotent-Replayed"))
	assert.Equal(t, 3, in.producers(t))

	status, _, b = in.keyed(t, strings.Repeat("k", 256), "Bearer A", addProducer)
	require.Equal(t, http.StatusBadRequest, status, "%s", b)
	assert.Equal(t, 4000, batchErrorCode(t, b))
	assert.Equal(t, 3, in.producers(t))

	assert.Equal(t, 3.0, in.metric(t, `batchd_idempotency_total{result="stored"}`))
	assert.Equal(t, 1.0, in.metric(t, `batchd_idempotency_total{result="replayed"}`))
	assert.Equal(t, 1.0, in.metric(t, `batchd_idempotency_total{result="mismatch"}`))
}

// TestIdempotentRetryWhileRunning: a retry while the first batch still runs gets 409; the first batch's client
// then goes away, and its answer (the cancelled step) is what the next retry gets.
func TestIdempotentRetryWhileRunning(t *testing.T) {
	in := start(t)
	const slow = `{"requests":[{"key":"s","path":"Demo/Sleep","payload":{"ms":60000}}]}`
	ctx, leave := context.WithCancel(context.Background())
	defer leave()
	firstDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.base+"/v1/batch", strings.NewReader(slow))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "slow-1")
		resp, err := in.client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = errors.New("the first request was answered; it should have been abandoned")
		}
		firstDone <- err
	}()
	// The first batch holds its key once its step runs.
	require.Eventually(t, func() bool { return in.metric(t, "batchd_steps_in_flight") == 1 }, 10*time.Second, 5*time.Millisecond)

	status, h, b := in.keyed(t, "slow-1", "", slow)
	require.Equal(t, http.StatusConflict, status, "%s", b)
	assert.Equal(t, 4090, batchErrorCode(t, b))
	assert.Empty(t, h.Get("Idempotent-Replayed"))
	status, _, b = in.keyed(t, "slow-1", "", `{"requests":[{"key":"s","path":"Demo/Echo"}]}`)
	require.Equal(t, http.StatusUnprocessableEntity, status, "another body is a misuse even while the first runs: %s", b)
	assert.Equal(t, 1.0, in.metric(t, "batchd_steps_in_flight"), "neither retry ran a step")

	leave()
	require.ErrorIs(t, <-firstDone, context.Canceled)
	// The server stores the abandoned batch's answer as soon as its cancelled step returns.
	require.Eventually(t, func() bool {
		return in.metric(t, `batchd_idempotency_total{result="stored"}`) == 1
	}, 10*time.Second, 5*time.Millisecond)
	status, h, b = in.keyed(t, "slow-1", "", slow)
	require.Equal(t, http.StatusOK, status, "%s", b)
	assert.Equal(t, "true", h.Get("Idempotent-Replayed"))
	var out struct{ Responses []stepResult }
	require.NoError(t, json.Unmarshal(b, &out), "%s", b)
	require.Len(t, out.Responses, 1)
	assert.Equal(t, 4990, out.Responses[0].errorCode(t), "the retry sees that the step was cancelled")
	assert.Equal(t, 1.0, in.metric(t, `batchd_idempotency_total{result="conflict"}`))
}

// countingUpstream is a proxy-mode upstream that counts calls by path; calls to /api/Slow wait for release.
type countingUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	calls   map[string]int
	arrived chan struct{}
	release chan struct{}
}

func newCountingUpstream(t *testing.T) *countingUpstream {
	u := &countingUpstream{calls: map[string]int{}, arrived: make(chan struct{}, 8), release: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.calls[r.URL.Path]++
		n := u.calls[r.URL.Path]
		u.mu.Unlock()
		if r.URL.Path == "/api/Slow" {
			u.arrived <- struct{}{}
			select {
			case <-u.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"result":{"call":%d,"echo":%s}}`, n, orNull(b))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *countingUpstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.calls {
		n += c
	}
	return n
}

func orNull(b []byte) []byte {
	if len(bytes.TrimSpace(b)) == 0 {
		return []byte("null")
	}
	return b
}

// TestIdempotencyAcrossReplicas: two batchd instances share one real Redis, as replicas behind a load balancer
// do. A batch run on A is replayed on B without reaching the upstream; a batch running on A is busy on B.
func TestIdempotencyAcrossReplicas(t *testing.T) {
	rs := redistest.Start(t)
	up := newCountingUpstream(t)
	a := start(t, "-upstream", up.URL+"/api/", "-redis-url", rs.URL)
	b := start(t, "-upstream", up.URL+"/api/", "-redis-url", rs.URL)
	assert.Contains(t, a.logs.String(), `"store":"`+rs.Addr+`"`)

	const import1 = `{"requests":[
		{"key":"one","path":"Invoice/Add","payload":{"n":1}},
		{"key":"two","path":"Invoice/Add","payload":{"n":"${one.result.call}"}}]}`
	status, _, first := a.keyed(t, "invoice-batch-7", "Bearer tenant-1", import1)
	require.Equal(t, http.StatusOK, status, "%s", first)
	require.Equal(t, 2, up.total())

	// A's replica fails; the client's retry lands on B.
	status, h, again := b.keyed(t, "invoice-batch-7", "Bearer tenant-1", import1)
	require.Equal(t, http.StatusOK, status, "%s", again)
	assert.Equal(t, "true", h.Get("Idempotent-Replayed"))
	assert.Equal(t, string(first), string(again))
	assert.Equal(t, 2, up.total(), "the retry on B reached the upstream not once")

	status, _, other := b.keyed(t, "invoice-batch-7", "Bearer tenant-2", import1)
	require.Equal(t, http.StatusOK, status, "%s", other)
	assert.Equal(t, 4, up.total(), "another tenant's batch with the same key runs")

	// Busy across replicas: while A runs a batch, its retry on B is 409 and reaches nothing.
	const slow = `{"requests":[{"key":"s","path":"Slow","payload":{}}]}`
	aDone := make(chan []byte, 1)
	go func() { // no require here: not the test's goroutine
		req, _ := http.NewRequest(http.MethodPost, a.base+"/v1/batch", strings.NewReader(slow))
		req.Header.Set("Idempotency-Key", "slow-batch")
		req.Header.Set("Authorization", "Bearer tenant-1")
		resp, err := a.client.Do(req)
		if err != nil {
			aDone <- []byte(err.Error())
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		aDone <- body
	}()
	<-up.arrived
	status, _, busy := b.keyed(t, "slow-batch", "Bearer tenant-1", slow)
	require.Equal(t, http.StatusConflict, status, "%s", busy)
	assert.Equal(t, 4090, batchErrorCode(t, busy))
	close(up.release)
	slowAnswer := <-aDone
	status, h, replay := b.keyed(t, "slow-batch", "Bearer tenant-1", slow)
	require.Equal(t, http.StatusOK, status, "%s", replay)
	assert.Equal(t, "true", h.Get("Idempotent-Replayed"))
	assert.Equal(t, string(slowAnswer), string(replay))
	assert.Equal(t, 5, up.total(), "the slow call ran once, on A")
}

// TestRedisUnreachableAtStart: a -redis-url nobody answers fails the start with a clear error (exit 1, not a
// usage error), within the ping's bound.
func TestRedisUnreachableAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	var stderr syncbuf.Buffer
	err = run(context.Background(), []string{"-addr", "127.0.0.1:0", "-redis-url", "redis://" + addr + "/0"},
		func(string) string { return "" }, io.Discard, &stderr)
	require.Error(t, err)
	var u *usageError
	assert.False(t, errors.As(err, &u), "an unreachable Redis is not a usage error: %v", err)
	assert.Contains(t, err.Error(), "redis at "+addr)
	assert.NotContains(t, stderr.String(), `"msg":"listening"`)
}

func TestIdempotencyFlags(t *testing.T) {
	env := map[string]string{"BATCHD_IDEMPOTENCY_TTL": "1h", "BATCHD_REDIS_URL": "redis://127.0.0.1:6379/2"}
	c, err := parseConfig([]string{"-idempotency-max-entries", "5"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, c.idempotencyTTL)
	assert.Equal(t, 5, c.idempotencyMaxEntries)
	assert.Equal(t, "redis://127.0.0.1:6379/2", c.redisURL)

	c, err = parseConfig(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 24*time.Hour, c.idempotencyTTL)
	assert.Equal(t, 10000, c.idempotencyMaxEntries)
	assert.Empty(t, c.redisURL)

	for _, args := range [][]string{
		{"-idempotency-ttl", "0s"},
		{"-idempotency-ttl", "tomorrow"},
		{"-idempotency-max-entries", "0"},
		{"-redis-url", "http://127.0.0.1:6379"},
		{"-redis-url", "redis://127.0.0.1:6379/x"},
		{"-redis-url", "redis://user:s3cret@[::1/0"},
	} {
		_, err := parseConfig(args, func(string) string { return "" }, io.Discard)
		var u *usageError
		require.ErrorAs(t, err, &u, "%v", args)
		assert.NotContains(t, err.Error(), "s3cret", "a password never reaches the error")
	}
}

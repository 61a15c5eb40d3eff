package main

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestUpstream(t *testing.T, slow time.Duration) *upstream {
	t.Helper()
	up, err := startUpstream("127.0.0.1:0", slow)
	require.NoError(t, err)
	t.Cleanup(up.close)
	return up
}

func newTestClient(t *testing.T) *http.Client {
	t.Helper()
	c := newHTTPClient(64)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestUpstreamCountsEveryCallAndIssuesIDs(t *testing.T) {
	up := newTestUpstream(t, 0)
	c := newTestClient(t)
	ctx := context.Background()

	status, body, err := post(ctx, c, up.url+"fast/Item/Add", []byte(`{"name":"x"}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	id, err := checkNewID(body)
	require.NoError(t, err)
	assert.Equal(t, int64(1), id)
	assert.JSONEq(t, `{"ok":true,"result":{"new_id":1}}`, string(body))

	// Concurrent calls: each counted once, each id distinct.
	const n = 40
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, b, err := post(ctx, c, up.url+"fast/anything/at/all", []byte(`{}`))
			if assert.NoError(t, err) {
				ids[i], err = checkNewID(b)
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, upstreamStats{Calls: n + 1}, up.stats())
	seen := map[int64]bool{}
	for _, id := range ids {
		assert.False(t, seen[id], "id %d issued twice", id)
		seen[id] = true
	}
}

func TestUpstreamCountsAndRefusesUnexpectedCalls(t *testing.T) {
	up := newTestUpstream(t, 0)
	c := newTestClient(t)
	ctx := context.Background()
	_, _, err := post(ctx, c, up.url+"fast/Item/Add", []byte(`{}`)) // issues id 1
	require.NoError(t, err)
	before := up.stats()

	for _, tc := range []struct {
		name, path string
		status     int
	}{
		{"unknown prefix", "other/Item/Add", http.StatusNotFound},
		{"no prefix", "", http.StatusNotFound},
		{"literal placeholder", "fast/Item/Get/%24%7Bs0.result.new_id%7D", http.StatusBadRequest},
		{"id never issued", "slow/Item/Get/999", http.StatusBadRequest},
		{"id zero", "fast/Item/Get/0", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := post(ctx, c, up.url+tc.path, []byte(`{}`))
			require.NoError(t, err)
			assert.Equal(t, tc.status, status)
			assert.Contains(t, string(body), `"ok":false`)
		})
	}
	assert.Equal(t, upstreamStats{Calls: 5, Bad: 5}, up.stats().sub(before))
	assert.NotEmpty(t, up.lastBadCall())

	// A GET is not what any scenario sends.
	resp, err := c.Get(up.url + "fast/Item/Add")
	require.NoError(t, err)
	require.NoError(t, drainClose(resp))
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, upstreamStats{Calls: 6, Bad: 6}, up.stats().sub(before))

	// An issued id is a valid chain reference.
	status, _, err := post(ctx, c, up.url+"fast/Item/Get/1", []byte(`{}`))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, upstreamStats{Calls: 7, Bad: 6}, up.stats().sub(before))
}

func TestUpstreamSlowPrefixWaits(t *testing.T) {
	const delay = 20 * time.Millisecond
	up := newTestUpstream(t, delay)
	c := newTestClient(t)
	t0 := time.Now()
	status, _, err := post(context.Background(), c, up.url+"slow/Item/Add", []byte(`{}`))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, status)
	assert.GreaterOrEqual(t, time.Since(t0), delay) // a lower bound only: never flaky
}

func TestUpstreamRefusesNonLoopbackListen(t *testing.T) {
	_, err := startUpstream("0.0.0.0:0", 0)
	assert.ErrorContains(t, err, "not a loopback")
}

func TestChildUpstreamCountsAcrossProcesses(t *testing.T) {
	c := newTestClient(t)
	child, err := startChildUpstream(context.Background(), c, "127.0.0.1:0", 0)
	require.NoError(t, err)
	before := child.stats()
	for range 3 {
		status, _, err := post(context.Background(), c, child.url+"fast/Item/Add", []byte(`{}`))
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
	}
	status, _, err := post(context.Background(), c, child.url+"nope", []byte(`{}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, status)
	assert.Equal(t, upstreamStats{Calls: 4, Bad: 1}, child.stats().sub(before), "reading the counters is not a call")
	assert.Contains(t, child.lastBadCall(), "unknown path prefix")

	child.close()
	select {
	case <-child.done:
	default:
		t.Fatal("child still running after close")
	}
	s := child.stats()
	assert.Positive(t, s.Bad, "counters that cannot be read fail the check")
	assert.Contains(t, child.lastBadCall(), "cannot read")
}

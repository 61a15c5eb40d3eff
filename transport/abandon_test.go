package transport

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/syncbuf"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// TestClientGoneIsCountedAbandoned: a batch whose client leaves is told to the Observer once (BatchAbandoned), and its
// running step sees its context cancelled.
func TestClientGoneIsCountedAbandoned(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	inv := invokerFunc(func(ctx context.Context, c runner.Call) (runner.Response, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return runner.Response{}, ctx.Err()
	})
	obs := &lockedObserver{}
	logs := &syncbuf.Buffer{}
	srv := New(Config{Planner: planner.Config{}, Runner: runner.New(inv, runner.Config{}), Observer: obs,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/batch",
		strings.NewReader(`{"requests":[{"key":"s","path":"x"}]}`))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	require.Error(t, <-errc)
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the running step was not cancelled")
	}
	require.Eventually(t, func() bool { return obs.Abandoned() == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Contains(t, logs.String(), "client closed")
	assert.Empty(t, obs.Rejected())
}

type invokerFunc func(context.Context, runner.Call) (runner.Response, error)

func (f invokerFunc) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	return f(ctx, c)
}

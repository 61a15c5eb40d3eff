package client_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/idempotency"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// demoBatchd serves batchd with the embedded demo API and an in-memory Idempotency-Key store on a loopback
// httptest server, as cmd/batchd wires them in demo mode, and returns its URL and a stop function.
func demoBatchd() (url string, stop func()) {
	inv := transport.NewInProcessInvoker(demoapi.New(demoapi.Config{Now: func() time.Time { return time.Unix(1758289402, 0) }}), 0)
	srv := transport.New(transport.Config{
		Planner:     planner.Config{MaxSteps: 50, Blocked: []string{"Item/Import"}},
		Runner:      runner.New(inv, runner.Config{StepTimeout: 2 * time.Second}),
		Memory:      budget.NewPool(1 << 30),
		Idempotency: idempotency.New(idempotency.Config{Store: idempotency.NewMemory(idempotency.MemoryConfig{})}),
		Demo:        demoapi.New(demoapi.Config{}),
	})
	hs := httptest.NewServer(srv.Handler())
	return hs.URL, hs.Close
}

// startBatchd is demoBatchd for a test, stopped when it ends.
func startBatchd(t testing.TB) string {
	url, stop := demoBatchd()
	t.Cleanup(stop)
	return url
}

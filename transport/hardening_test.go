package transport

import (
	"context"
	"testing"

	"github.com/batchd/batchd/runner"
)

// The invoker refuses dot segments on its own, also with path parameters ("..;" is ".." to Tomcat and Spring),
// whatever the planner let through.
func TestInvokersRefuseDotSegmentsWithParameters(t *testing.T) {
	srv, seen := recordingServer(t, nil)
	h := newInvoker(t, srv.URL+"/api/", HTTPConfig{})
	local := NewInProcessInvoker(nil, 1<<20)
	for _, p := range []string{"a/..;/admin", "..;x=1/admin", "a/.;/b", "a/%2e%2e;/b"} {
		if _, err := h.Invoke(context.Background(), runner.Call{Key: "k", Path: p}); err == nil {
			t.Errorf("HTTPInvoker sent %q", p)
		}
		if _, err := local.Invoke(context.Background(), runner.Call{Key: "k", Path: p}); err == nil {
			t.Errorf("InProcessInvoker sent %q", p)
		}
	}
	if n := len(seen()); n != 0 {
		t.Errorf("upstream received %d requests", n)
	}
	if _, err := h.Invoke(context.Background(), runner.Call{Key: "k", Path: "users/a;b"}); err != nil {
		t.Errorf("a path parameter on a plain segment: %v", err)
	}
}

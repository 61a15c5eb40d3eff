package transport

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/batchd/batchd/planner"
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

// FuzzPlannedURLHost: whatever a batch's path says and whatever a response substitutes into it, every URL batchd
// builds for the step — planner first, then the invoker — has the base URL's scheme and host and lies under its path.
func FuzzPlannedURLHost(f *testing.F) {
	for _, s := range []struct{ path, value string }{
		{"Producer/Add", "x"}, {"users/${A.v}", "42"}, {"users/${A.v}", "../admin"}, {"users/${A.v}", "a/b"},
		{"${A.v}", "https://evil.test/x"}, {"${A.v}/x", "//evil.test"}, {"${A.v}", "@evil.test"}, {"https:x", ""},
		{"//evil.test/${A.v}", "x"}, {"@evil.test/x", ""}, {"users/${A.v}", "%2e%2e"}, {"users/${A.v}", "%2F"},
		{"a/%2e%2e/b", ""}, {"a%2Fb", ""}, {`a\b`, ""}, {"users/${A.v}", `..\..`}, {"users/${A.v}", "..;"},
		{"a/..;/b", ""}, {"users/${A.v}?q=${A.v}", "a?b#c&d=e"}, {"users/${A.v}", "x\r\nHost: evil.test"},
		{"users/${A.v}", "\x00"}, {"v1/${A.v}", "batch"}, {"Item/${A.v}", "Import;x"}, {"${A.v}${A.v}", "/"},
		{"a/$${A.v}", "x"}, {"users/${A.v}", "ü é"}, {"users/${A.v}", "%252e%252e"},
	} {
		f.Add(s.path, s.value)
	}
	var bases []*HTTPInvoker
	for _, b := range []string{"http://127.0.0.1:9000/api/", "https://example.com", "http://h:1/a%2Fb/c/"} {
		bases = append(bases, newInvoker(f, b, HTTPConfig{}))
	}
	f.Fuzz(func(t *testing.T, stepPath, value string) {
		pathJSON, _ := json.Marshal(stepPath)
		valueJSON, _ := json.Marshal(value)
		body := `[{"key":"A","path":"a"},{"key":"B","path":` + string(pathJSON) + `,"depends_on":["A"]}]`
		plan, err := planner.Parse([]byte(body), planner.Config{Blocked: []string{"Item/Import"}})
		if err != nil {
			return
		}
		resolved, err := plan.Steps[1].Path.Resolve(fuzzValue(`{"v":`+string(valueJSON)+`}`), 0)
		if err != nil {
			return
		}
		for _, h := range bases {
			u, err := h.url(resolved)
			if err != nil {
				continue
			}
			back, err := url.Parse(u.String())
			if err != nil {
				t.Fatalf("%q → %q → %q does not parse: %v", stepPath, resolved, u, err)
			}
			if back.Scheme != h.base.Scheme || back.Host != h.base.Host || back.User != nil || back.Fragment != "" {
				t.Fatalf("%q with %q → %q leaves %s://%s", stepPath, value, u, h.base.Scheme, h.base.Host)
			}
			if !strings.HasPrefix(back.EscapedPath(), h.rawBase) || hasDotSegment(back.Path) {
				t.Fatalf("%q with %q → %q: path not under %q", stepPath, value, u, h.rawBase)
			}
		}
	})
}

// fuzzValue answers every step with the same response body.
func fuzzValue(body string) *planner.Responses {
	return planner.NewResponses(2, func(int) []byte { return []byte(body) }, nil)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/syncbuf"
)

func TestVersionFlag(t *testing.T) {
	var stdout bytes.Buffer
	// -version answers whatever else the environment says, and starts nothing.
	env := map[string]string{"BATCHD_MAX_STEPS": "not a number"}
	err := run(context.Background(), []string{"-version"}, func(k string) string { return env[k] }, &stdout, io.Discard)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	require.Len(t, lines, 3, stdout.String())
	assert.Regexp(t, `^batchd \S+$`, lines[0])
	assert.Regexp(t, `^revision \S+$`, lines[1])
	assert.Equal(t, "go "+runtime.Version(), lines[2])
}

func TestReadBuildInfo(t *testing.T) {
	stamped := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101000000-0123456789ab+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}}, true
	}
	b := readBuildInfo("v1.2.3", "feedface", stamped)
	assert.Equal(t, "v1.2.3", b.Version, "what the linker set wins")
	assert.Equal(t, "feedface", b.Revision)
	assert.Equal(t, runtime.Version(), b.GoVersion)

	b = readBuildInfo("", "", stamped)
	assert.Equal(t, "v0.0.0-20260101000000-0123456789ab+dirty", b.Version, "else what the toolchain stamped")
	assert.Equal(t, "0123456789abcdef-dirty", b.Revision)

	b = readBuildInfo("", "", func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true
	})
	assert.Equal(t, "devel", b.Version)
	assert.Equal(t, "unknown", b.Revision)
	b = readBuildInfo("", "", func() (*debug.BuildInfo, bool) { return nil, false })
	assert.Equal(t, "devel", b.Version)
	assert.Equal(t, "unknown", b.Revision)
}

// TestHelpNamesTypes: -h names every flag's type ("-max-body size") where Go's flag package would say "value", and
// each description gives an example, the environment variable and the default.
func TestHelpNamesTypes(t *testing.T) {
	var help bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-h"}, func(string) string { return "" }, io.Discard, &help))
	out := help.String()
	assert.NotRegexp(t, `(?m)^\s+-\S+ value$`, out)

	_, err := parseConfig([]string{"-h"}, func(string) string { return "" }, io.Discard)
	require.ErrorIs(t, err, flag.ErrHelp)

	header := regexp.MustCompile(`(?m)^  -(\S+)(?: (\S+))?\n    \t(.*)$`)
	seen := map[string]bool{}
	for _, m := range header.FindAllStringSubmatch(out, -1) {
		name, typ, text := m[1], m[2], m[3]
		seen[name] = true
		switch name {
		case "version", "atomic-require-rollback": // booleans: no value
			assert.Empty(t, typ, name)
		default:
			assert.NotEmpty(t, typ, "-%s names its type", name)
			assert.True(t, strings.Contains(text, "e.g. ") || strings.Contains(typ, "|"), "-%s gives an example: %s", name, text)
		}
		if name != "version" {
			assert.Contains(t, text, "(env BATCHD_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")", name)
		}
	}
	for _, f := range []string{"addr", "upstream", "max-body", "step-timeout", "rate-limit", "metrics-addr", "drain-delay",
		"metric-learn-methods", "redis-url", "log-format", "version"} {
		assert.True(t, seen[f], "-%s in -h", f)
	}
	assert.Contains(t, out, "  -max-body size\n")
	assert.Contains(t, out, "  -step-timeout duration\n")
	assert.Contains(t, out, "  -rate-limit number\n")
	assert.Contains(t, out, "  -max-steps int\n")
	assert.Contains(t, out, "(default 10s)")
}

func TestEffectiveConfigRedactsSecrets(t *testing.T) {
	env := map[string]string{"BATCHD_MAX_STEPS": "7", "BATCHD_REDIS_URL": "redis://:s3cret@127.0.0.1:6379/0"}
	c, err := parseConfig([]string{"-step-timeout", "3s"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	got := map[string]string{}
	for _, a := range c.effective {
		got[a.Key] = a.Value.String()
	}
	assert.Equal(t, "7", got["max-steps"], "from the environment")
	assert.Equal(t, "3s", got["step-timeout"], "from the flag")
	assert.Equal(t, "1MiB", got["max-body"], "the default")
	assert.Equal(t, "redis://:xxxxx@127.0.0.1:6379/0", got["redis-url"])
	assert.Equal(t, "redis://:s3cret@127.0.0.1:6379/0", c.redisURL, "the client still gets the password")
	assert.NotContains(t, got, "version")
}

// TestStartupLogLine: the "listening" line carries the version, the revision and the effective configuration.
func TestStartupLogLine(t *testing.T) {
	logs := &syncbuf.Buffer{}
	launch(t, logs, map[string]string{"BATCHD_MAX_PARALLEL": "3"}, "-max-steps", "9")
	var rec struct {
		Msg, Version, Revision, Go string
		Config                     map[string]string
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"listening"`) {
			require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		}
	}
	require.Equal(t, "listening", rec.Msg, logs.String())
	want := buildInfo()
	assert.Equal(t, want.Version, rec.Version)
	assert.Equal(t, want.Revision, rec.Revision)
	assert.Equal(t, runtime.Version(), rec.Go)
	assert.Equal(t, "9", rec.Config["max-steps"])
	assert.Equal(t, "3", rec.Config["max-parallel"])
	assert.Equal(t, "0s", rec.Config["drain-delay"])
	assert.Equal(t, "json", rec.Config["log-format"])
}

func TestMetricsAddrFlag(t *testing.T) {
	for _, bad := range [][]string{{"-metrics-addr", "nonsense"}, {"-addr", ":8080", "-metrics-addr", ":8080"},
		{"-drain-delay", "-1s"}, {"-metric-learn-methods", "-1"}, {"-metric-learn-methods", "100000"}} {
		_, err := parseConfig(bad, func(string) string { return "" }, io.Discard)
		var u *usageError
		assert.ErrorAs(t, err, &u, "%v", bad)
	}
}

// TestMetricsOnTheInternalListener: with -metrics-addr, /metrics and /debug/pprof/ are served there and not on the
// public listener; without it, /metrics stays public and there is no profiler.
func TestMetricsOnTheInternalListener(t *testing.T) {
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	logs := &syncbuf.Buffer{}
	in := launch(t, logs, nil, "-metrics-addr", "127.0.0.1:0")
	internal := "http://" + listeningAttr(t, logs.String(), "metrics_addr")
	require.NotEqual(t, "http://", internal)
	in.batch(t, `{"requests":[{"key":"a","path":"Demo/Echo","payload":1}]}`)

	status, _ := get(in.base + "/metrics")
	assert.Equal(t, 404, status, "not on the public listener")
	status, _ = get(in.base + "/debug/pprof/")
	assert.Equal(t, 404, status)
	status, body := get(internal + "/metrics")
	require.Equal(t, 200, status)
	assert.Contains(t, body, `batchd_steps_total{method="Demo/Echo",outcome="ok",status_class="2xx",verb="POST"} 1`)
	assert.Contains(t, body, "batchd_build_info{")
	status, body = get(internal + "/debug/pprof/goroutine?debug=1")
	require.Equal(t, 200, status)
	assert.Contains(t, body, "goroutine profile:")
	status, _ = get(internal + "/debug/pprof/")
	assert.Equal(t, 200, status)
	status, _ = get(internal + "/v1/batch")
	assert.Equal(t, 404, status, "the internal listener serves nothing else")

	plain := start(t)
	status, body = get(plain.base + "/metrics")
	assert.Equal(t, 200, status)
	assert.Contains(t, body, "batchd_build_info{")
	status, _ = get(plain.base + "/debug/pprof/")
	assert.Equal(t, 404, status, "no profiler without -metrics-addr")
}

// listeningAttr is an attribute of the "listening" log line.
func listeningAttr(t *testing.T, logs, name string) string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "listening" {
			s, _ := rec[name].(string)
			return s
		}
	}
	t.Fatalf("no listening line:\n%s", logs)
	return ""
}

// TestDrainDelayFailsReadinessFirst: on shutdown, /readyz answers 503 for -drain-delay while the listener is still
// open, and only then does the listener close. The order is read from what a poller recorded, each poll on a new
// connection, and from the log; the delay is long enough for many polls on a busy machine, and nothing asserts on
// durations.
func TestDrainDelayFailsReadinessFirst(t *testing.T) {
	logs := &syncbuf.Buffer{}
	in := launch(t, logs, nil, "-drain-delay", "3s")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	poll := func() string {
		resp, err := client.Get(in.base + "/readyz")
		if err != nil {
			return "closed"
		}
		resp.Body.Close()
		return fmt.Sprint(resp.StatusCode)
	}
	var events []string
	record := func(e string) {
		if len(events) == 0 || events[len(events)-1] != e {
			events = append(events, e)
		}
	}
	record(poll())
	in.stop()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 20000 && time.Now().Before(deadline); i++ {
		e := poll()
		record(e)
		if e == "closed" {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	assert.Equal(t, []string{"200", "503", "closed"}, events, "ready, then not ready while open, then closed")

	select {
	case err := <-in.done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return")
	}
	var msgs []string
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct{ Msg string }
		if json.Unmarshal([]byte(line), &rec) == nil {
			switch rec.Msg {
			case "not ready: draining after the delay", "draining", "stopped":
				msgs = append(msgs, rec.Msg)
			}
		}
	}
	assert.Equal(t, []string{"not ready: draining after the delay", "draining", "stopped"}, msgs)
}

// TestBuiltBinaryExportsVersionAndStepLabels builds cmd/batchd from the tree with the version linked in as make build
// does, runs it in proxy mode with the metrics on their own listener against a loopback upstream, and scrapes it:
// batchd_build_info carries the linked version, and batchd_steps_total tells the upstream's 4xx from its 5xx and
// from no answer at all, by verb, under method labels learned from the upstream's routes.
func TestBuiltBinaryExportsVersionAndStepLabels(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts cmd/batchd")
	}
	bin := filepath.Join(t.TempDir(), "batchd")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test -X main.revision=cafebabe", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	out, err = exec.Command(bin, "-version").Output()
	require.NoError(t, err)
	assert.Equal(t, "batchd v9.8.7-test\nrevision cafebabe\ngo "+runtime.Version()+"\n", string(out))

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/users/1":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"id":1}`)
		case strings.HasPrefix(r.URL.Path, "/api/users/"):
			http.Error(w, "no such user", http.StatusNotFound)
		case strings.HasPrefix(r.URL.Path, "/api/orders/"):
			http.Error(w, "database down", http.StatusInternalServerError)
		default:
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}
	}))
	defer up.Close()
	c := startChild(t, nil, bin, "-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0", "-log-format", "json",
		"-upstream", up.URL+"/api/")
	internal := "http://" + listeningAttr(t, c.logs.String(), "metrics_addr")

	body := `{"requests":[
		{"key":"u1","method":"GET","path":"users/1"},
		{"key":"u2","method":"GET","path":"users/2","depends_on":["u1"]},
		{"key":"o1","method":"DELETE","path":"orders/1"},
		{"key":"r1","path":"reset/1"}]}`
	resp, err := http.Post(c.base+"/v1/batch", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "%s", b)

	resp, err = http.Get(internal + "/metrics")
	require.NoError(t, err)
	scrape, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	for _, want := range []string{
		`batchd_build_info{goversion="` + runtime.Version() + `",revision="cafebabe",version="v9.8.7-test"} 1`,
		`batchd_steps_total{method="users/*",outcome="ok",status_class="2xx",verb="GET"} 1`,
		`batchd_steps_total{method="users/*",outcome="error",status_class="4xx",verb="GET"} 1`,
		`batchd_steps_total{method="other",outcome="error",status_class="5xx",verb="DELETE"} 1`,
		`batchd_steps_total{method="other",outcome="error",status_class="none",verb="POST"} 1`,
		`batchd_steps_total{method="users/*",outcome="timeout",status_class="none",verb="GET"} 0`,
	} {
		assert.Contains(t, string(scrape), want+"\n")
	}
	resp, err = http.Get(c.base + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 404, resp.StatusCode, "-metrics-addr takes /metrics off the public listener")

	// The batch's log names the upstream host in the warning for the reset step.
	require.Eventually(t, func() bool { return strings.Contains(c.logs.String(), `"msg":"batch"`) }, 10*time.Second, 5*time.Millisecond)
	var warn struct{ Msg, Key, Upstream, Kind string }
	for _, line := range strings.Split(c.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"upstream error"`) {
			require.NoError(t, json.Unmarshal([]byte(line), &warn))
		}
	}
	assert.Equal(t, "r1", warn.Key)
	assert.Equal(t, strings.TrimPrefix(up.URL, "http://"), warn.Upstream)
	assert.NotEmpty(t, warn.Kind)
}

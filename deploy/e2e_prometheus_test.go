package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/syncbuf"
	"github.com/batchd/batchd/metrics"
	"github.com/batchd/batchd/transport/demoapi"
)

// e2eVersion is the version the end-to-end tests link into batchd, as make build does with git describe.
const e2eVersion = "v0.0.0-e2e"

// buildBatchd builds cmd/batchd from the tree with the version linked in, as make build does.
func buildBatchd(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "go is needed to build batchd")
	bin := filepath.Join(t.TempDir(), "batchd")
	build := exec.Command(goBin, "build", "-ldflags", "-X main.version="+e2eVersion+" -X main.revision=e2e", "-o", bin, "./cmd/batchd")
	build.Dir = repoRoot
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/batchd:\n%s", out)
	return bin
}

// TestE2EPrometheusScrapesBatchd builds batchd, runs it on loopback with a 200ms step timeout and its metrics on an
// internal listener (-metrics-addr, as the compose file and the manifests do), runs a real Prometheus scraping that
// listener every second with deploy/prometheus/rules.yml loaded, sends batches (one whose step times out, one whose
// steps the "upstream" answers 500 and 404, one refused for a cycle), and asserts through Prometheus' HTTP API
// that the series arrived with the values the batches imply (the build info, status classes and verbs included),
// that every batchd_ series of the registry is scraped, and that the recording rules evaluate on the real series,
// the upstream failure ratio counting the 500 and the timeout but not the 404. It takes about 10 seconds.
func TestE2EPrometheusScrapesBatchd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts batchd and Prometheus (about 10s); skipped with -short")
	}
	prometheus := tool(t, "prometheus")
	bin := buildBatchd(t)
	dir := t.TempDir()

	batchdAddr, metricsAddr := freeAddr(t), freeAddr(t)
	startProcess(t, "batchd", bin, "-addr", batchdAddr, "-metrics-addr", metricsAddr, "-step-timeout", "200ms",
		"-log-format", "text", "-drain-delay", "0")
	base := "http://" + batchdAddr
	eventually(t, 10*time.Second, "batchd answers /healthz", func() (bool, string) {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	rules, err := filepath.Abs(filepath.Join("prometheus", "rules.yml"))
	require.NoError(t, err)
	promAddr := freeAddr(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: batchd
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: [%q]
`, rules, metricsAddr)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o644))
	startProcess(t, "prometheus", prometheus,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	prom := "http://" + promAddr
	eventually(t, 15*time.Second, "Prometheus is ready", func() (bool, string) {
		resp, err := http.Get(prom + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	// One scrape before the batches, so that the counters' increase from their initial 0 is seen by rate().
	eventually(t, 15*time.Second, `up{job="batchd"} == 1`, func() (bool, string) {
		return queryAtLeast(t, prom, `up{job="batchd"}`, 1)
	})

	// A batch whose second step times out: 200, step statuses 200 and 504.
	resp := postBatch(t, base, `{"requests":[{"key":"a","path":"Demo/Echo","payload":{"x":1}},`+
		`{"key":"s","path":"Demo/Sleep","payload":{"ms":2000}}]}`)
	require.Equal(t, http.StatusOK, resp.status, resp.body)
	var answer struct {
		Responses []struct {
			Key    string `json:"key"`
			Status int    `json:"status"`
		} `json:"responses"`
	}
	require.NoError(t, json.Unmarshal([]byte(resp.body), &answer), resp.body)
	require.Len(t, answer.Responses, 2)
	assert.Equal(t, 200, answer.Responses[0].Status)
	assert.Equal(t, 504, answer.Responses[1].Status)
	// A batch whose steps the demo API fails with 500 (the upstream's fault) and 404 (the client's), and one sent
	// with PUT, which the demo methods refuse (405).
	resp = postBatch(t, base, `{"requests":[{"key":"f5","path":"Demo/Fail","payload":{"status":500}},`+
		`{"key":"f4","path":"Demo/Fail","payload":{"status":404}},{"key":"p","method":"PUT","path":"Demo/Echo","payload":1}]}`)
	require.Equal(t, http.StatusOK, resp.status, resp.body)
	// A batch refused for a dependency cycle.
	resp = postBatch(t, base, `{"requests":[{"key":"a","path":"Demo/Echo","payload":"${b.x}"},`+
		`{"key":"b","path":"Demo/Echo","payload":"${a.x}"}]}`)
	require.Equal(t, http.StatusBadRequest, resp.status, resp.body)

	for _, q := range []struct {
		expr string
		min  float64
	}{
		{`batchd_step_timeouts_total{job="batchd", method="Demo/Sleep"}`, 1},
		{`batchd_step_duration_seconds_count{job="batchd", method="Demo/Sleep", outcome="timeout"}`, 1},
		{`batchd_step_duration_seconds_count{job="batchd", method="Demo/Echo", outcome="ok"}`, 1},
		{`batchd_batch_steps_count{job="batchd"}`, 1},
		{`batchd_batch_steps_sum{job="batchd"}`, 2},
		{`batchd_batch_duration_seconds_count{job="batchd", outcome="partial"}`, 1},
		{`batchd_batch_duration_seconds_count{job="batchd", outcome="rejected"}`, 1},
		{`batchd_batches_rejected_total{job="batchd", reason="cycle"}`, 1},
		{`up{job="batchd"}`, 1},
		{`go_goroutines{job="batchd"}`, 1},
		{`process_cpu_seconds_total{job="batchd"}`, 0},
		// The recording rules, evaluated on the real series.
		{`batchd:step_timeouts:rate5m{job="batchd", method="Demo/Sleep"}`, 1e-9},
		{`batchd:batches_rejected:ratio_rate5m{job="batchd", reason="cycle"}`, 1e-9},
		// The build, and the steps by verb and status class.
		{`batchd_build_info{job="batchd", version="` + e2eVersion + `", revision="e2e"}`, 1},
		{`batchd_steps_total{job="batchd", method="Demo/Echo", verb="POST", outcome="ok", status_class="2xx"}`, 1},
		{`batchd_steps_total{job="batchd", method="Demo/Sleep", verb="POST", outcome="timeout", status_class="none"}`, 1},
		{`batchd_steps_total{job="batchd", method="Demo/Fail", verb="POST", outcome="error", status_class="5xx"}`, 1},
		{`batchd_steps_total{job="batchd", method="Demo/Fail", verb="POST", outcome="error", status_class="4xx"}`, 1},
		{`batchd_steps_total{job="batchd", method="Demo/Echo", verb="PUT", outcome="error", status_class="4xx"}`, 1},
		// rate() sees the steps whose series existed at 0 before them: the four POST steps (a method's POST series
		// are created at start). The PUT step's series came into being with it, at 1, so rate() does not see that
		// first step (every later PUT step would be seen). Of the four, the 500 and the timeout are the upstream's
		// failures and the 404 the client's.
		{`batchd:steps_executed:rate5m{job="batchd"}`, 1e-9},
		{`batchd:step_upstream_failures:rate5m{job="batchd"}`, 1e-9},
		{`(batchd:step_upstream_failure_ratio:rate5m{job="batchd"} > 0.499) < 0.501`, 0.499},
		{`(batchd:step_client_error_ratio:rate5m{job="batchd"} > 0.249) < 0.251`, 0.249},
		{`batchd:step_upstream_failures_by_method:rate5m{job="batchd", method="Demo/Fail", verb="POST"}`, 1e-9},
	} {
		eventually(t, 15*time.Second, q.expr, func() (bool, string) { return queryAtLeast(t, prom, q.expr, q.min) })
	}
	// The in-flight gauges are back to 0 once every batch answered.
	for _, g := range []string{"batchd_batches_in_flight", "batchd_steps_in_flight"} {
		v, ok := queryValue(t, prom, g+`{job="batchd"}`)
		assert.True(t, ok && v == 0, "%s = %v", g, v)
	}

	// Every batchd_ series of the registry reached Prometheus.
	want := map[string]bool{}
	for n := range knownSeries(t) {
		if strings.HasPrefix(n, "batchd_") {
			want[n] = true
		}
	}
	got := map[string]bool{}
	for _, s := range query(t, prom, `count by (__name__) ({job="batchd", __name__=~"batchd_.+"})`) {
		got[s.Metric["__name__"]] = true
	}
	for n := range want {
		assert.True(t, got[n], "series %s not scraped", n)
	}
	for n := range got {
		assert.True(t, want[n], "Prometheus holds %s, which the registry does not declare", n)
	}
	// The public listener serves no /metrics once -metrics-addr is set.
	r, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	r.Body.Close()
	assert.Equal(t, http.StatusNotFound, r.StatusCode)

	// The method label is pre-created for every known method (the demo API's, at least) and "other".
	methods := map[string]bool{}
	for _, s := range query(t, prom, `batchd_step_timeouts_total{job="batchd"}`) {
		methods[s.Metric["method"]] = true
	}
	for _, want := range append([]string{metrics.OtherMethod}, demoapi.Methods()...) {
		assert.True(t, methods[want], "no batchd_step_timeouts_total{method=%q}", want)
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// startProcess starts a program that t.Cleanup stops: SIGTERM, then SIGKILL after 5 seconds. Its output is logged
// when the test fails.
func startProcess(t *testing.T, name, path string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start(), "starting %s", name)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		err := <-exited
		if t.Failed() {
			t.Logf("%s (exit: %v) output:\n%s", name, err, out.String())
		}
	})
}

// eventually polls cond every 250ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s does not hold; last: %s", timeout, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

type httpAnswer struct {
	status int
	body   string
}

func postBatch(t *testing.T, base, body string) httpAnswer {
	t.Helper()
	resp, err := http.Post(base+"/v1/batch", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return httpAnswer{resp.StatusCode, string(b)}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query through Prometheus' HTTP API.
func query(t *testing.T, prom, expr string) []promSample {
	t.Helper()
	resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(expr))
	require.NoError(t, err)
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, "success", r.Status, "query %s: %s", expr, r.Error)
	require.Equal(t, "vector", r.Data.ResultType)
	return r.Data.Result
}

// queryValue returns the value of a query that yields one sample.
func queryValue(t *testing.T, prom, expr string) (float64, bool) {
	t.Helper()
	res := query(t, prom, expr)
	if len(res) != 1 {
		return 0, false
	}
	s, _ := res[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// queryAtLeast reports whether expr yields exactly one sample, of at least min.
func queryAtLeast(t *testing.T, prom, expr string, min float64) (bool, string) {
	t.Helper()
	res := query(t, prom, expr)
	if len(res) != 1 {
		return false, fmt.Sprintf("%d samples", len(res))
	}
	s, _ := res[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return false, s
	}
	return v >= min, "value " + s
}

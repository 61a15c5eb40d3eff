package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/syncbuf"
)

// instance is one batchd started through run() on a loopback port.
type instance struct {
	base   string
	logs   logSink
	stop   context.CancelFunc
	done   chan error
	client *http.Client
}

// logSink is where run() writes its log while a test reads it.
type logSink interface {
	io.Writer
	String() string
}

// start runs batchd with args (plus -addr 127.0.0.1:0) and waits until it logs its address.
func start(t *testing.T, args ...string) *instance {
	t.Helper()
	return launch(t, &syncbuf.Buffer{}, nil, args...)
}

// launch is start with the log going to logs and the environment run() sees (nil: none; run() never reads the
// process's own).
func launch(t *testing.T, logs logSink, env map[string]string, args ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan error, 1), make(chan struct{})
	// No drain delay unless a test asks for one: nothing balances load in front of a test's instance.
	args = append([]string{"-addr", "127.0.0.1:0", "-log-format", "json", "-drain-delay", "0"}, args...)
	go func() {
		done <- run(ctx, args, func(k string) string { return env[k] }, io.Discard, logs)
		close(exited) // tests may take run's error from done; Cleanup waits on this instead
	}()
	inst := &instance{logs: logs, stop: cancel, done: done, client: &http.Client{Timeout: 30 * time.Second}}
	deadline := time.Now().Add(10 * time.Second)
	for inst.base == "" {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				inst.base = "http://" + rec.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before listening: %v\n%s", err, logs.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "batchd did not start:\n%s", logs.String())
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(70 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	return inst
}

func (in *instance) post(t *testing.T, path, contentType, body string) (int, http.Header, []byte) {
	t.Helper()
	return in.request(context.Background(), t, path, contentType, body)
}

// request posts body to path with contentType (none when "") and the header name/value pairs in hdr.
func (in *instance) request(ctx context.Context, t *testing.T, path, contentType, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.base+path, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := in.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

// batch posts a JSON batch and decodes the canonical answer.
func (in *instance) batch(t *testing.T, body string) []stepResult {
	t.Helper()
	status, _, b := in.post(t, "/v1/batch", "application/json", body)
	require.Equal(t, http.StatusOK, status, "%s", b)
	var out struct{ Responses []stepResult }
	require.NoError(t, json.Unmarshal(b, &out), "%s", b)
	return out.Responses
}

type stepResult struct {
	Key      string          `json:"key"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
}

func (s stepResult) errorCode(t *testing.T) int {
	var er struct {
		OK     bool
		Result struct{ Error int }
	}
	require.NoError(t, json.Unmarshal(s.Response, &er))
	require.False(t, er.OK)
	return er.Result.Error
}

func TestSeedExample(t *testing.T) {
	in := start(t)
	res := in.batch(t, `{
	  "stop_on_error": false,
	  "requests": [
	    {"key": "ProducerAdd", "path": "Producer/Add", "payload": {"name": "Coca-Cola"}},
	    {"key": "ProducerGet", "path": "Producer/Get", "payload": {"ids": ["${ProducerAdd.result.new_id}"]}}
	  ]}`)
	require.Len(t, res, 2)
	assert.Equal(t, "ProducerAdd", res[0].Key)
	assert.Equal(t, 200, res[0].Status)
	var add struct {
		OK     bool
		Result struct {
			NewID int `json:"new_id"`
		}
	}
	require.NoError(t, json.Unmarshal(res[0].Response, &add))
	require.True(t, add.OK)
	require.Positive(t, add.Result.NewID)

	assert.Equal(t, "ProducerGet", res[1].Key)
	assert.Equal(t, 200, res[1].Status)
	var get struct {
		OK     bool
		Result []struct {
			ID         int    `json:"id"`
			Name       string `json:"name"`
			LastUpdate int64  `json:"last_update"`
		}
		NextOffset *int `json:"next_offset"`
		Total      int  `json:"total"`
	}
	require.NoError(t, json.Unmarshal(res[1].Response, &get), "%s", res[1].Response)
	require.True(t, get.OK)
	require.Len(t, get.Result, 1)
	assert.Equal(t, add.Result.NewID, get.Result[0].ID)
	assert.Equal(t, "Coca-Cola", get.Result[0].Name)
	assert.Positive(t, get.Result[0].LastUpdate)
	assert.Equal(t, 1, get.Total)
	require.NotNil(t, get.NextOffset)
}

func TestBareArrayForm(t *testing.T) {
	in := start(t)
	status, _, b := in.post(t, "/v1/batch", "application/json",
		`[{"path":"/Demo/Echo","body":{"a":1}},{"method":"POST","path":"Demo/Echo","body":{"b":"${0.result.a}"}}]`)
	require.Equal(t, 200, status, "%s", b)
	var res []stepResult
	require.NoError(t, json.Unmarshal(b, &res), "%s", b)
	require.Len(t, res, 2)
	assert.Equal(t, "0", res[0].Key)
	assert.Equal(t, "1", res[1].Key)
	assert.JSONEq(t, `{"ok":true,"result":{"b":1}}`, string(res[1].Response))
}

func TestRejections(t *testing.T) {
	in := start(t, "-max-steps", "3", "-max-body", "2KiB")
	many := `{"requests":[` + strings.Repeat(`{"key":"x","path":"Demo/Echo"},`, 3) + `{"key":"y","path":"Demo/Echo"}]}`
	cases := []struct {
		name, contentType, body string
		status, code            int
		key                     string // a key the details must name; "" for the batch
	}{
		{"malformed json", "application/json", `{"requests":[`, 400, 4000, ""},
		{"duplicate member", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo"}],"requests":[]}`, 400, 4000, ""},
		{"no steps", "application/json", `{"requests":[]}`, 400, 4000, ""},
		{"too many steps", "application/json", many, 400, 4000, ""},
		{"missing key", "application/json", `{"requests":[{"path":"Demo/Echo"}]}`, 400, 4000, "#0"},
		{"bad key", "application/json", `{"requests":[{"key":"a b","path":"Demo/Echo"}]}`, 400, 4000, "#0"},
		{"duplicate key", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo"},{"key":"a","path":"Demo/Echo"}]}`, 400, 4000, "#1"},
		{"missing path", "application/json", `{"requests":[{"key":"a"}]}`, 400, 4000, "a"},
		{"absolute url", "application/json", `{"requests":[{"key":"a","path":"http://evil.test/x"}]}`, 400, 4000, "a"},
		{"dot dot", "application/json", `{"requests":[{"key":"a","path":"Demo/%2e%2e/x"}]}`, 400, 4000, "a"},
		{"blocked", "application/json", `{"requests":[{"key":"a","path":"item/import"}]}`, 400, 4000, "a"},
		{"nested batch", "application/json", `{"requests":[{"key":"a","path":"/V1/Batch"}]}`, 400, 4000, "a"},
		{"bad placeholder", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","payload":"${a."}]}`, 400, 4000, "a"},
		{"unknown ref", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","payload":"${zz.x}"}]}`, 400, 4000, "a"},
		{"self ref", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","payload":"${a.x}"}]}`, 400, 4000, "a"},
		{"cycle", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","payload":"${b.x}"},{"key":"b","path":"Demo/Echo","payload":"${a.x}"}]}`, 400, 4000, "b"},
		{"bad header", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","headers":{"Host":"evil"}}]}`, 400, 4000, "a"},
		{"unknown field", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","paylod":1}]}`, 400, 4000, "a"},
		{"form content type", "application/x-www-form-urlencoded", `{"requests":[{"key":"a","path":"Demo/Echo"}]}`, 415, 4150, ""},
		{"too large", "application/json", `{"requests":[{"key":"a","path":"Demo/Echo","payload":"` + strings.Repeat("x", 3000) + `"}]}`, 413, 4130, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, b := in.post(t, "/v1/batch", tc.contentType, tc.body)
			require.Equal(t, tc.status, status, "%s", b)
			var er struct {
				OK     bool
				Result struct {
					Error       int
					Description string
					Details     []struct{ Key, Problem string }
				}
			}
			require.NoError(t, json.Unmarshal(b, &er), "%s", b)
			assert.False(t, er.OK)
			assert.Equal(t, tc.code, er.Result.Error)
			assert.NotEmpty(t, er.Result.Description)
			require.NotEmpty(t, er.Result.Details)
			if tc.key != "" {
				keys := make([]string, 0, len(er.Result.Details))
				for _, d := range er.Result.Details {
					keys = append(keys, d.Key)
					assert.NotEmpty(t, d.Problem)
				}
				assert.Contains(t, keys, tc.key, "%s", b)
			}
		})
	}
	// Nothing of the above ran: the demo store is still empty.
	res := in.batch(t, `{"requests":[{"key":"g","path":"Producer/Get","payload":{}}]}`)
	assert.JSONEq(t, `{"ok":true,"result":[],"next_offset":0,"total":0}`, string(res[0].Response))
}

func TestStepTimeout(t *testing.T) {
	in := start(t, "-step-timeout", "100ms")
	res := in.batch(t, `{"requests":[
		{"key":"slow","path":"Demo/Sleep","payload":{"ms":20000}},
		{"key":"fast","path":"Demo/Echo","payload":1},
		{"key":"after","path":"Demo/Echo","payload":"${slow.result.slept_ms}"}]}`)
	require.Len(t, res, 3)
	assert.Equal(t, 504, res[0].Status)
	assert.Equal(t, 5040, res[0].errorCode(t))
	assert.Equal(t, 200, res[1].Status)
	assert.Equal(t, 424, res[2].Status)
	assert.Equal(t, 4240, res[2].errorCode(t))
}

func TestStopOnError(t *testing.T) {
	in := start(t, "-max-parallel", "1")
	res := in.batch(t, `{"stop_on_error":true,"requests":[
		{"key":"bad","path":"Demo/Fail","payload":{"error":77,"description":"no"}},
		{"key":"dep","path":"Demo/Echo","payload":"${bad.result}","depends_on":["bad"]},
		{"key":"other","path":"Demo/Echo","payload":1,"depends_on":["bad2"]},
		{"key":"bad2","path":"Demo/Echo","payload":1,"depends_on":["bad"]}]}`)
	require.Len(t, res, 4)
	assert.Equal(t, 200, res[0].Status)
	assert.Equal(t, 77, res[0].errorCode(t))
	assert.Equal(t, 424, res[1].Status)
	assert.Equal(t, 424, res[3].Status)
	assert.Equal(t, 424, res[2].Status)

	res = in.batch(t, `{"stop_on_error":true,"requests":[
		{"key":"bad","path":"Demo/Fail","payload":{"status":500}},
		{"key":"later","path":"Demo/Echo","payload":1,"depends_on":["gate"]},
		{"key":"gate","path":"Demo/Sleep","payload":{"ms":50}}]}`)
	require.Len(t, res, 3)
	assert.Equal(t, 500, res[0].Status)
	// With one slot, "gate" either ran before "bad" failed or never started; "later" never starts.
	assert.Contains(t, []int{412, 424}, res[1].Status)
}

// TestParallelAndChainedProxy drives proxy mode against a recording upstream: independent steps must overlap
// (each upstream call waits until all have arrived), a chain must be serial.
func TestParallelAndChainedProxy(t *testing.T) {
	const n = 8
	var (
		mu     sync.Mutex
		events []string
		seen   int
		all    = make(chan struct{})
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		events = append(events, "start "+r.URL.Path)
		if strings.HasPrefix(r.URL.Path, "/api/par/") {
			if seen++; seen == n {
				close(all)
			}
		}
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/api/par/") {
			select {
			case <-all:
			case <-time.After(20 * time.Second):
				http.Error(w, "not all parallel calls arrived", http.StatusGatewayTimeout)
				return
			}
		}
		mu.Lock()
		events = append(events, "end "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"result":{"new_id":%d}}`, len(r.URL.Path))
	}))
	defer up.Close()
	in := start(t, "-upstream", up.URL+"/api/", "-max-parallel", fmt.Sprint(n))

	var steps []string
	for i := 0; i < n; i++ {
		steps = append(steps, fmt.Sprintf(`{"key":"p%d","path":"par/%d"}`, i, i))
	}
	res := in.batch(t, `{"requests":[`+strings.Join(steps, ",")+`]}`)
	for _, r := range res {
		assert.Equal(t, 200, r.Status, "%s: %s", r.Key, r.Response)
	}

	mu.Lock()
	events = nil
	mu.Unlock()
	res = in.batch(t, `{"requests":[
		{"key":"c","path":"chain/c/${b.result.new_id}"},
		{"key":"a","path":"chain/a"},
		{"key":"b","path":"chain/b/${a.result.new_id}"}]}`)
	for _, r := range res {
		require.Equal(t, 200, r.Status, "%s: %s", r.Key, r.Response)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{
		"start /api/chain/a", "end /api/chain/a",
		"start /api/chain/b/12", "end /api/chain/b/12",
		"start /api/chain/c/15", "end /api/chain/c/15",
	}, events)
}

func TestDemoMethodsServedAlone(t *testing.T) {
	in := start(t)
	status, _, b := in.post(t, "/v1/Demo/Echo", "application/json", `{"x":[1,2]}`)
	require.Equal(t, 200, status)
	assert.JSONEq(t, `{"ok":true,"result":{"x":[1,2]}}`, string(b))
	status, _, b = in.post(t, "/v1/Producer/Add", "application/json", `{}`)
	require.Equal(t, 200, status)
	assert.Contains(t, string(b), `"error":1008`)
}

func TestHealthReadyMetrics(t *testing.T) {
	in := start(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := in.client.Get(in.base + p)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode, p)
	}
	in.batch(t, `{"requests":[{"key":"a","path":"Demo/Echo","payload":1}]}`)
	resp, err := in.client.Get(in.base + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(b), `batchd_step_duration_seconds_count{method="Demo/Echo",outcome="ok"} 1`)
	assert.Contains(t, string(b), "go_goroutines")
}

// TestGracefulDrain cancels run's context while a batch is in flight: the batch is answered in full and run
// returns nil. The upstream holds the step until batchd has logged that it is draining, so the order of events is
// forced rather than hoped for.
func TestGracefulDrain(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true,"result":{"held":true}}`)
	}))
	defer up.Close()
	in := start(t, "-upstream", up.URL)
	type answer struct {
		status int
		body   []byte
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := in.client.Post(in.base+"/v1/batch", "application/json",
			strings.NewReader(`{"requests":[{"key":"s","path":"hold"}]}`))
		if err != nil {
			got <- answer{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- answer{resp.StatusCode, b}
	}()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the step never reached the upstream")
	}
	in.stop()
	require.Eventually(t, func() bool { return strings.Contains(in.logs.String(), `"msg":"draining"`) },
		30*time.Second, 5*time.Millisecond)
	close(release)
	a := <-got
	require.Equal(t, 200, a.status, "%s", a.body)
	assert.Contains(t, string(a.body), `"held":true`)
	select {
	case err := <-in.done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after drain")
	}
}

func TestFlags(t *testing.T) {
	env := map[string]string{"BATCHD_MAX_STEPS": "7", "BATCHD_STEP_TIMEOUT": "3s", "BATCHD_MAX_BODY": "2MiB"}
	getenv := func(k string) string { return env[k] }
	c, err := parseConfig([]string{"-step-timeout", "5s"}, getenv, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 7, c.maxSteps)
	assert.Equal(t, 5*time.Second, c.stepTimeout, "the flag wins over the environment")
	assert.Equal(t, byteSize(2<<20), c.maxBody)
	assert.Equal(t, ":8080", c.addr)
	assert.Equal(t, 16, c.maxParallel)
	assert.Equal(t, 60*time.Second, c.batchTimeout)
	assert.Equal(t, "Item/Import", c.blocked)
	assert.Equal(t, byteSize(32<<20), c.gcHeapFloor)
	env["BATCHD_GC_HEAP_FLOOR"] = "0"
	c, err = parseConfig(nil, getenv, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, byteSize(0), c.gcHeapFloor, "0 turns the floor off")

	var help bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-h"}, getenv, io.Discard, &help))
	for _, f := range []string{"-addr", "-upstream", "-max-steps", "-step-timeout", "-batch-timeout", "-max-parallel", "-blocked", "-max-body", "-gc-heap-floor"} {
		assert.Contains(t, help.String(), f)
	}

	bad := []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"-max-steps", "x"}, nil},
		{[]string{"-max-steps", "0"}, nil},
		{[]string{"-step-timeout", "10"}, nil},
		{[]string{"-max-body", "lots"}, nil},
		{[]string{"-gc-heap-floor", "-1"}, nil},
		{[]string{"-upstream", "ftp://x"}, nil},
		{[]string{"-upstream", "http://h/?q=1"}, nil},
		{[]string{"stray"}, nil},
		{nil, map[string]string{"BATCHD_MAX_PARALLEL": "many"}},
	}
	for _, b := range bad {
		err := run(context.Background(), b.args, func(k string) string { return b.env[k] }, io.Discard, io.Discard)
		var u *usageError
		assert.ErrorAs(t, err, &u, "%v %v", b.args, b.env)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"1MiB": 1 << 20, "512KiB": 512 << 10, "2MB": 2e6, "1048576": 1 << 20, "10B": 10, "1gib": 1 << 30} {
		var v byteSize
		require.NoError(t, v.Set(in), in)
		assert.Equal(t, want, int64(v), in)
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "1TiB"} {
		var v byteSize
		assert.Error(t, v.Set(in), in)
	}
	v := byteSize(1 << 20)
	assert.Equal(t, "1MiB", v.String())
}

// TestCgroupMemoryLimit: the default memory budget reads the process's own cgroup, v2 or v1, and the smallest
// limit on the way up to the root.
func TestCgroupMemoryLimit(t *testing.T) {
	fs := func(files map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if s, ok := files[name]; ok {
				return []byte(s), nil
			}
			return nil, os.ErrNotExist
		}
	}
	assert.Equal(t, int64(512<<20), cgroupMemoryLimit(fs(map[string]string{
		"/proc/self/cgroup":                          "0::/kubepods/pod1/c1\n",
		"/sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max\n",
		"/sys/fs/cgroup/kubepods/pod1/memory.max":    "536870912\n",
		"/sys/fs/cgroup/kubepods/memory.max":         "1073741824\n",
	})), "v2: the pod's limit holds its container")
	assert.Equal(t, int64(256<<20), cgroupMemoryLimit(fs(map[string]string{
		"/proc/self/cgroup": "9:cpu:/\n4:memory:/docker/abc\n0::/\n",
		"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456",
		"/sys/fs/cgroup/memory/memory.limit_in_bytes":            "9223372036854771712",
	})), "v1")
	assert.Zero(t, cgroupMemoryLimit(fs(map[string]string{
		"/proc/self/cgroup":         "0::/\n",
		"/sys/fs/cgroup/memory.max": "max",
	})), "no limit")
	assert.Zero(t, cgroupMemoryLimit(fs(nil)), "no cgroup file at all")
}

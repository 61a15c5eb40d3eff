package main

// End-to-end tests of the budgets (README "Limits and guarantees", Budgets): the real binary, built without the
// race detector and started under a hard memory limit, against an upstream that serves 8 MiB bodies and records
// the size of every call it receives.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/syncbuf"
)

// bigBody is an upstream answer just under the default -max-response of 8 MiB: {"ok":true,"result":{"blob":"x…"}}.
var bigBody = func() []byte {
	const size = 8<<20 - 64
	b := []byte(`{"ok":true,"result":{"blob":"`)
	b = append(b, bytes.Repeat([]byte("x"), size-len(b)-4)...)
	return append(b, `"}}`...)
}()

// listBody is a 4 MiB answer holding many small objects: {"ok":true,"result":{"list":[{"id":0},…]}}.
var listBody = func() []byte {
	b := []byte(`{"ok":true,"result":{"list":[`)
	for i := 0; len(b) < 4<<20-64; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":%d}`, i)
	}
	return append(b, "]}}"...)
}()

// sizeUpstream serves big/… (bigBody), list/… (listBody), hundred/… (an answer just under 100 KiB) and anything
// else {"ok":true,"result":{"id":7}}, and records the largest request target, header value and body
// it received.
type sizeUpstream struct {
	*httptest.Server
	mu                      sync.Mutex
	calls                   int
	maxTarget, maxHdr, maxB int
}

func newSizeUpstream(t *testing.T) *sizeUpstream {
	u := &sizeUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		hdr := 0
		for _, vs := range r.Header {
			for _, v := range vs {
				hdr = max(hdr, len(v))
			}
		}
		u.mu.Lock()
		u.calls++
		u.maxTarget, u.maxHdr, u.maxB = max(u.maxTarget, len(r.RequestURI)), max(u.maxHdr, hdr), max(u.maxB, int(n))
		u.mu.Unlock()
		var out []byte
		switch kind, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/api/"), "/"); kind {
		case "big":
			out = bigBody
		case "list":
			out = listBody
		case "hundred":
			out = fmt.Appendf(nil, `{"ok":true,"result":"%s"}`, strings.Repeat("h", 100<<10-32))
		default:
			out = []byte(`{"ok":true,"result":{"id":7}}`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(out)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *sizeUpstream) largest() (target, header, body int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.maxTarget, u.maxHdr, u.maxB
}

// buildBatchd builds cmd/batchd as the Dockerfile does (CGO_ENABLED=0: the runtime, not libc, makes its threads'
// stacks) and without the race detector, whose shadow memory no memory limit would hold.
func buildBatchd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "batchd")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// child is a batchd process started by a test.
type child struct {
	cmd  *exec.Cmd
	base string
	logs *syncbuf.Buffer
	done chan error
}

// startChild starts argv (the binary, or a wrapper such as prlimit, then its arguments) with env added to the
// environment, and waits until batchd logs its address.
func startChild(t *testing.T, env []string, argv ...string) *child {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATCHD_") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, logs: &syncbuf.Buffer{}, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			_, _ = c.logs.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr string }
			if !sent && json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
				sent = true
			}
		}
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
	})
	select {
	case a := <-addr:
		c.base = "http://" + a
	case err := <-c.done:
		t.Fatalf("batchd exited before listening: %v\n%s", err, c.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("batchd did not start:\n%s", c.logs.String())
	}
	return c
}

// alive reports whether the child is still running.
func (c *child) alive() bool {
	select {
	case err := <-c.done:
		c.done <- err
		return false
	default:
		return true
	}
}

// vmHWM is the child's peak resident set, in bytes.
func (c *child) vmHWM(t *testing.T) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// amplification is one request of the catalogue: a small batch built to grow.
type amplification struct {
	name   string
	body   string
	header []string
	// check looks at an answer of status 200 and returns what is wrong with it, "" when nothing is.
	check func(rs []stepResult) string
}

// steps returns "[…]" of n copies of s, joined by commas.
func repeatJSON(s string, n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat(s+",", n), ",") + "]"
}

// expectStatus checks that the steps named in want (key → status) have those statuses, the source step (the first)
// aside: it may be 507 when other batches hold the process budget, and its dependents then 424.
func expectStatus(want map[string]int) func([]stepResult) string {
	return func(rs []stepResult) string {
		if rs[0].Status == 507 {
			want = map[string]int{}
			for _, r := range rs[1:] {
				want[r.Key] = 424
			}
		}
		for _, r := range rs {
			if s, ok := want[r.Key]; ok && r.Status != s {
				return fmt.Sprintf("step %s: status %d, want %d: %.200s", r.Key, r.Status, s, r.Response)
			}
		}
		return ""
	}
}

// catalogue is the amplification catalogue of the budgets issue, one request each, the 8 MiB source being the
// upstream's big/ answer.
func catalogue() []amplification {
	var fanout strings.Builder
	fanout.WriteString(`[{"key":"A","method":"GET","path":"big/a"}`)
	for i := range 49 {
		fmt.Fprintf(&fanout, `,{"key":"s%d","path":"sink","payload":%s}`, i, repeatJSON(`"${A}"`, 5))
	}
	fanout.WriteString("]")
	fifty := repeatJSON(`{"method":"GET","path":"big/x"}`, 50)
	var picks strings.Builder
	for i := range 1000 {
		if i > 0 {
			picks.WriteString(",")
		}
		fmt.Fprintf(&picks, `"${L.result.list.%d.id}"`, i*97)
	}
	tooLarge := func(keys ...string) func([]stepResult) string {
		want := map[string]int{}
		for _, k := range keys {
			want[k] = 413
		}
		return expectStatus(want)
	}
	every413 := func(rs []stepResult) string {
		want := map[string]int{}
		for _, r := range rs[1:] {
			want[r.Key] = 413
		}
		return expectStatus(want)(rs)
	}
	fiftyCheck := func(rs []stepResult) string {
		if len(rs) != 50 {
			return fmt.Sprintf("%d results, want 50", len(rs))
		}
		for _, r := range rs {
			if r.Status != 200 && r.Status != 507 {
				return fmt.Sprintf("step %s: status %d, want 200 or 507", r.Key, r.Status)
			}
		}
		return ""
	}
	return []amplification{
		{name: "one 8 MiB response copied 1000 times into one body",
			body:  `[{"key":"A","method":"GET","path":"big/a"},{"key":"B","path":"sink","payload":` + repeatJSON(`"${A}"`, 1000) + `}]`,
			check: tooLarge("B")},
		{name: "49 steps copying it 5 times each", body: fanout.String(), check: every413},
		{name: "copied 100 times", body: `[{"key":"A","method":"GET","path":"big/a"},{"key":"B","path":"sink","payload":` +
			repeatJSON(`"${A}"`, 100) + `}]`, check: tooLarge("B")},
		{name: "into a path and a header",
			body: `[{"key":"A","method":"GET","path":"big/a"},{"key":"P","path":"sink/${A.result.blob}"},` +
				`{"key":"H","path":"sink","headers":{"X-Blob":"${A.result.blob}"}}]`,
			check: tooLarge("P", "H")},
		{name: "50 responses of 8 MiB", body: fifty, check: fiftyCheck},
		{name: "50 responses of 8 MiB with an Idempotency-Key", body: fifty, check: fiftyCheck},
		{name: "1000 placeholders into one 4 MiB response of 400 000 objects",
			body:  `[{"key":"L","method":"GET","path":"list/a"},{"key":"B","path":"sink","payload":[` + picks.String() + `]}]`,
			check: expectStatus(map[string]int{"L": 200, "B": 200})},
	}
}

// send posts a catalogue request and checks its answer: it must come (a whole HTTP answer, valid JSON), and be a
// 200 that passes the item's check, a 503 overloaded with Retry-After, or, for a keyed retry, the 409 of an answer
// not stored. It returns the status, the answer's headers and what went wrong ("" when nothing did).
func send(client *http.Client, base string, a amplification, key string) (int, http.Header, string) {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/batch", strings.NewReader(a.body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, a.name + ": no answer: " + err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, resp.Header, a.name + ": answer cut: " + err.Error()
	}
	if !jsontext.Value(b).IsValid() {
		return resp.StatusCode, resp.Header, fmt.Sprintf("%s: answer is not valid JSON: %.200s", a.name, b)
	}
	problem := ""
	switch resp.StatusCode {
	case http.StatusOK:
		var rs []stepResult
		if err := json.Unmarshal(b, &rs); err != nil {
			problem = a.name + ": " + err.Error()
		} else if p := a.check(rs); p != "" {
			problem = a.name + ": " + p
		}
	case http.StatusServiceUnavailable:
		if resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "overloaded") {
			problem = fmt.Sprintf("%s: 503 without Retry-After or reason overloaded: %.200s", a.name, b)
		}
	case http.StatusConflict:
		if key == "" || !strings.Contains(string(b), "idempotency_answer_not_stored") {
			problem = fmt.Sprintf("%s: unexpected 409: %.200s", a.name, b)
		}
	default:
		problem = fmt.Sprintf("%s: status %d: %.200s", a.name, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header, problem
}

// runCatalogue sends the whole catalogue once, and the keyed item again with its key, and returns the problems
// found. With room (strict), the keyed answer is over -idempotency-max-answer, so its retry must be the 409 of an
// answer not stored; without (other clients hold the budget), the answer may be small enough to be replayed.
func runCatalogue(client *http.Client, base, tag string, strict bool) []string {
	var problems []string
	for i, a := range catalogue() {
		key := ""
		if strings.Contains(a.name, "Idempotency-Key") {
			key = tag + "-" + strconv.Itoa(i)
		}
		status, _, p := send(client, base, a, key)
		if p != "" {
			problems = append(problems, p)
		}
		if key == "" || status != 200 {
			continue
		}
		status, hdr, p := send(client, base, a, key)
		switch {
		case p != "":
			problems = append(problems, "keyed retry: "+p)
		case status == 409:
		case !strict && status == 200 && hdr.Get("Idempotent-Replayed") == "true":
		default:
			problems = append(problems, fmt.Sprintf("keyed retry: status %d, want the 409 of an answer not stored", status))
		}
	}
	return problems
}

// neverReads sends a batch of 50 responses of 8 MiB and never reads the answer, until stop is closed.
func neverReads(t *testing.T, base string, stop <-chan struct{}) {
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	body := repeatJSON(`{"method":"GET","path":"big/x"}`, 50)
	_, err = fmt.Fprintf(conn, "POST /v1/batch HTTP/1.1\r\nHost: batchd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	require.NoError(t, err)
	go func() {
		<-stop
		conn.Close()
	}()
}

// TestBudgetsHoldUnderAMemoryLimit sends the amplification catalogue to the real binary running under a hard
// address-space limit (prlimit --as) and GOMEMLIMIT, first one request at a time, then from 8 clients at once while
// three more clients never read their answers. Every request is answered, the process is alive and serving
// afterwards, no call over a cap reached the upstream, and the peak RSS stays under the memory limit plus a slack.
func TestBudgetsHoldUnderAMemoryLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary under a memory limit")
	}
	prlimit, err := exec.LookPath("prlimit")
	require.NoError(t, err, "prlimit (util-linux) limits the child's address space")
	up := newSizeUpstream(t)
	bin := buildBatchd(t)
	const memLimit = 256 << 20 // GOMEMLIMIT; -memory-budget defaults to 60 % of it: 153.6 MiB
	// The address space of an idle batchd is about 1.7 GB (the Go runtime reserves it, mostly untouched); 2.5 GiB
	// leaves about 800 MiB to use, which the catalogue overran many times before budgets. A batch may hold 16 MiB
	// (two 8 MiB responses): eleven clients at once need more than the process budget, so both budgets are hit.
	c := startChild(t, []string{"GOMEMLIMIT=" + strconv.Itoa(memLimit)}, prlimit, "--as="+strconv.Itoa(5<<29), "--", bin,
		"-addr", "127.0.0.1:0", "-log-format", "json", "-upstream", up.URL+"/api/", "-batch-timeout", "10s",
		"-max-batch-bytes", "16MiB")
	require.Contains(t, c.logs.String(), `"memory_budget":"`+strconv.Itoa(memLimit/10*6)+`"`, "60 % of GOMEMLIMIT")
	client := &http.Client{Timeout: 60 * time.Second}

	problems := runCatalogue(client, c.base, "seq", true)
	assert.Empty(t, problems, "one at a time")

	stop := make(chan struct{})
	for range 3 {
		neverReads(t, c.base, stop)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			p := runCatalogue(client, c.base, "par"+strconv.Itoa(g), false)
			mu.Lock()
			problems = append(problems, p...)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(stop)
	assert.Empty(t, problems, "8 at once, 3 never reading")

	if !c.alive() {
		_ = os.WriteFile("/tmp/batchd-died.log", []byte(c.logs.String()), 0o644)
	}
	require.True(t, c.alive(), "batchd died:\n%s", tail(c.logs.String(), 4000))
	resp, err := client.Post(c.base+"/v1/batch", "application/json",
		strings.NewReader(`[{"key":"a","path":"ok"}]`))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode, "still serving: %s", b)

	target, header, body := up.largest()
	assert.LessOrEqual(t, target, 8<<10+64, "request target (path under /api/)")
	assert.LessOrEqual(t, header, 8<<10, "header value")
	assert.LessOrEqual(t, body, 8<<20, "request body")
	hwm := c.vmHWM(t)
	t.Logf("peak RSS %d MiB (memory budget %d MiB, GOMEMLIMIT %d MiB)", hwm>>20, memLimit*6/10>>20, memLimit>>20)
	// The budget bounds what batches hold (154 MiB); the runtime, garbage between collections and the connections'
	// buffers come on top. GOMEMLIMIT holds the heap near 256 MiB.
	assert.Less(t, hwm, int64(memLimit+128<<20), "peak RSS under GOMEMLIMIT + 128 MiB")
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestDrainCutsAClientThatNeverReads: on SIGTERM, a client that never reads its answer holds the drain only until
// its deadline; then its connection is cut, the log says how many were, and batchd exits 0.
func TestDrainCutsAClientThatNeverReads(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	up := newSizeUpstream(t)
	bin := buildBatchd(t)
	// The answer (8 responses of 8 MiB) is far larger than the sockets' buffers: its writer blocks.
	c := startChild(t, nil, bin, "-addr", "127.0.0.1:0", "-log-format", "json", "-drain-delay", "0", "-upstream", up.URL+"/api/",
		"-batch-timeout", "2s", "-max-batch-bytes", "256MiB")
	conn, err := net.Dial("tcp", strings.TrimPrefix(c.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	body := repeatJSON(`{"method":"GET","path":"big/x"}`, 8)
	_, err = fmt.Fprintf(conn, "POST /v1/batch HTTP/1.1\r\nHost: batchd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	require.NoError(t, err)
	// Wait until the answer is being written: its first bytes reach this socket.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	first := make([]byte, 12)
	_, err = io.ReadFull(conn, first)
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200", string(first))

	require.NoError(t, c.cmd.Process.Signal(os.Interrupt))
	select {
	case err := <-c.done:
		c.done <- err
		require.NoError(t, err, "exit status 0:\n%s", tail(c.logs.String(), 4000))
	case <-time.After(60 * time.Second):
		t.Fatalf("batchd did not exit:\n%s", tail(c.logs.String(), 4000))
	}
	assert.Contains(t, c.logs.String(), `"msg":"drain deadline reached: connections cut","connections":1`)
	assert.Contains(t, c.logs.String(), `"msg":"stopped"`)
}

// TestDemoEchoChainIsCapped: in demo mode, a chain of Demo/Echo steps that multiplies its payload (1 KiB, ×100,
// then ×8000) is stopped at the call cap before the 800 MiB body is built: the step fails with 413 naming the part,
// its size and the cap, and nothing is sent.
func TestDemoEchoChainIsCapped(t *testing.T) {
	in := start(t)
	rs := in.batch(t, `{"requests":[
		{"key":"s0","path":"Demo/Echo","payload":"`+strings.Repeat("x", 1024)+`"},
		{"key":"s1","path":"Demo/Echo","payload":`+repeatJSON(`"${s0.result}"`, 100)+`},
		{"key":"s2","path":"Demo/Echo","payload":`+repeatJSON(`"${s1.result}"`, 8000)+`},
		{"key":"s3","path":"Demo/Echo","payload":"${s2.result}"}]}`)
	require.Len(t, rs, 4)
	assert.Equal(t, 200, rs[0].Status)
	assert.Equal(t, 200, rs[1].Status)
	require.Equal(t, 413, rs[2].Status, "%s", rs[2].Response)
	assert.Equal(t, 4131, rs[2].errorCode(t))
	assert.Contains(t, string(rs[2].Response), "body is 821616001 bytes once its placeholders are resolved; at most 8388608 allowed")
	assert.Contains(t, string(rs[2].Response), "-max-call-body")
	assert.Equal(t, 424, rs[3].Status)
	assert.Equal(t, 1.0, in.metric(t, `batchd_step_duration_seconds_count{method="Demo/Echo",outcome="too_large"}`))
}

// TestBatchBudgetFailsTheStepThatCrossesIt: of three 100 KiB responses under a 200 KiB batch budget, one is kept
// and the two that would cross it fail with 507 naming the budget; the answer is complete.
func TestBatchBudgetFailsTheStepThatCrossesIt(t *testing.T) {
	up := newSizeUpstream(t)
	// No learned method labels: which step learns "hundred/*" would depend on which response is read first.
	in := start(t, "-upstream", up.URL+"/api/", "-max-batch-bytes", "200KiB", "-max-response", "100KiB",
		"-metric-learn-methods", "0")
	rs := in.batch(t, `{"requests":[{"key":"a","path":"hundred"},{"key":"b","path":"hundred"},{"key":"c","path":"hundred"}]}`)
	require.Len(t, rs, 3)
	statuses := map[int]int{}
	for _, r := range rs {
		statuses[r.Status]++
		if r.Status == 507 {
			assert.Equal(t, 5070, r.errorCode(t))
			assert.Contains(t, string(r.Response), "the batch's byte budget (-max-batch-bytes) of 200 KiB")
		}
	}
	assert.Equal(t, map[int]int{200: 1, 507: 2}, statuses)
	assert.Equal(t, 2.0, in.metric(t, `batchd_step_duration_seconds_count{method="other",outcome="over_budget"}`))
	assert.Equal(t, 0.0, in.metric(t, `batchd_budget_bytes_in_use`), "everything released once answered")
}

// TestOverloadedIsAnswered503: a batch the process budget cannot admit gets 503 with Retry-After and reason
// overloaded, nothing runs, and a batch that fits is admitted.
func TestOverloadedIsAnswered503(t *testing.T) {
	up := newSizeUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/", "-memory-budget", "100KiB")
	big := `{"requests":[{"key":"a","path":"x","payload":"` + strings.Repeat("y", 50<<10) + `"}]}`
	status, hdr, b := in.post(t, "/v1/batch", "application/json", big)
	require.Equal(t, http.StatusServiceUnavailable, status, "%s", b)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	assert.Contains(t, string(b), `"reason":"overloaded"`)
	assert.Contains(t, string(b), "-memory-budget")
	assert.Equal(t, 0, up.calls)
	assert.Equal(t, 1.0, in.metric(t, `batchd_batches_rejected_total{reason="overloaded"}`))
	rs := in.batch(t, `{"requests":[{"key":"a","path":"x"}]}`)
	assert.Equal(t, 200, rs[0].Status)
	assert.Equal(t, float64(100<<10), in.metric(t, `batchd_budget_bytes_limit`))
}

// TestIdempotencyAnswerNotStored: an answer over -idempotency-max-answer is not stored; a retry with its key gets
// 409 (4091, idempotency_answer_not_stored) and runs nothing, while a small answer is replayed as before.
func TestIdempotencyAnswerNotStored(t *testing.T) {
	up := newSizeUpstream(t)
	in := start(t, "-upstream", up.URL+"/api/", "-idempotency-max-answer", "1KiB")
	large := `{"requests":[{"key":"a","path":"x","payload":"` + strings.Repeat("z", 100) + `"},` +
		`{"key":"b","method":"GET","path":"hundred"}]}`
	status, _, b := in.request(t.Context(), t, "/v1/batch", "application/json", large, "Idempotency-Key", "k-large")
	require.Equal(t, 200, status, "%s", b)
	calls := up.calls
	status, hdr, b := in.request(t.Context(), t, "/v1/batch", "application/json", large, "Idempotency-Key", "k-large")
	require.Equal(t, http.StatusConflict, status, "%s", b)
	assert.Empty(t, hdr.Get("Idempotent-Replayed"))
	assert.Contains(t, string(b), `"reason":"idempotency_answer_not_stored"`)
	assert.Contains(t, string(b), `"error":4091`)
	assert.Equal(t, calls, up.calls, "the batch never runs twice")

	small := `{"requests":[{"key":"a","path":"x"}]}`
	status, _, first := in.request(t.Context(), t, "/v1/batch", "application/json", small, "Idempotency-Key", "k-small")
	require.Equal(t, 200, status)
	status, hdr, again := in.request(t.Context(), t, "/v1/batch", "application/json", small, "Idempotency-Key", "k-small")
	require.Equal(t, 200, status)
	assert.Equal(t, "true", hdr.Get("Idempotent-Replayed"))
	assert.Equal(t, first, again)
	assert.Equal(t, 1.0, in.metric(t, `batchd_idempotency_total{result="not_stored"}`))
}

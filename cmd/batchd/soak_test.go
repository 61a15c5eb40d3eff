package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak is the bounded soak test behind `make soak`: the real service in proxy mode against a loopback upstream,
// BATCHD_SOAK_CLIENTS (default 32) clients sending 50-step batches that mix independent, dependent, failing and
// timing-out steps for BATCHD_SOAK (e.g. 60s). It asserts that no result is ever lost (every answer has every key
// once, in order, with the status its step must have), that goroutines and heap return to their baseline once
// everything has stopped, and that peak RSS stays under BATCHD_SOAK_MAX_RSS_MIB (default 512). It prints batches/s,
// steps/s, p50/p99 latency and peak RSS for BENCHMARKS.md.
func TestSoak(t *testing.T) {
	d := os.Getenv("BATCHD_SOAK")
	if d == "" {
		t.Skip("soak test: set BATCHD_SOAK to a duration (e.g. BATCHD_SOAK=60s, or `make soak`) to run it")
	}
	duration, err := time.ParseDuration(d)
	if err != nil || duration <= 0 {
		t.Fatalf("BATCHD_SOAK=%q: not a positive Go duration", d)
	}
	clients := envInt(t, "BATCHD_SOAK_CLIENTS", 32)
	maxRSS := int64(envInt(t, "BATCHD_SOAK_MAX_RSS_MIB", 512)) << 20

	baseGoroutines, baseHeap := settle()

	up := httptest.NewServer(soakUpstream())
	in := startQuiet(t, "-upstream", up.URL+"/api/", "-step-timeout", "200ms", "-batch-timeout", "10s",
		"-max-parallel", "16")
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients},
	}
	body, want := soakBatch()

	var (
		batches, lost, late atomic.Int64
		mu                  sync.Mutex
		latencies           = make([]time.Duration, 0, 1<<14)
		problems            []string
	)
	deadline := time.Now().Add(duration)
	began := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := client.Post(in.base+"/v1/batch", "application/json", bytes.NewReader(body))
				var b []byte
				if err == nil {
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				lat := time.Since(t0)
				var problem string
				switch {
				case err != nil:
					problem = "request failed: " + err.Error()
				case resp.StatusCode != http.StatusOK:
					problem = "status " + strconv.Itoa(resp.StatusCode) + ": " + string(b)
				default:
					problem = checkSoakAnswer(b, want, &late)
				}
				batches.Add(1)
				mine = append(mine, lat)
				if problem != "" {
					lost.Add(1)
					mu.Lock()
					if len(problems) < 5 {
						problems = append(problems, problem)
					}
					mu.Unlock()
				}
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	peakRSS := vmHWM(t)

	// Stop everything, then check that what the run used is given back.
	client.CloseIdleConnections()
	in.stop()
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("batchd did not stop")
	}
	up.Close()
	goroutines, heap := settleTo(baseGoroutines, baseHeap)

	slices.Sort(latencies)
	n := int(batches.Load())
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	t.Logf("soak: %s, %d clients, 50-step batches: %d batches (%.1f batches/s, %.0f steps/s), latency p50 %s p99 %s max %s, "+
		"peak RSS %.1f MiB, lost results %d, steps late under load (504) %d; goroutines %d → %d, heap %.1f → %.1f MiB",
		elapsed.Round(time.Millisecond), clients, n, float64(n)/elapsed.Seconds(), 50*float64(n)/elapsed.Seconds(),
		pct(0.50).Round(100*time.Microsecond), pct(0.99).Round(100*time.Microsecond),
		pct(1).Round(100*time.Microsecond), float64(peakRSS)/(1<<20), lost.Load(), late.Load(), baseGoroutines, goroutines,
		float64(baseHeap)/(1<<20), float64(heap)/(1<<20))

	if lost.Load() > 0 {
		t.Errorf("%d of %d answers lost or wrong results; first: %q", lost.Load(), n, problems)
	}
	if n == 0 {
		t.Error("no batch completed")
	}
	if goroutines > baseGoroutines+goroutineSlack {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after the run, %d before:\n%s", goroutines, baseGoroutines, buf[:runtime.Stack(buf, true)])
	}
	if heap > baseHeap+heapSlack {
		t.Errorf("heap: %.1f MiB after the run, %.1f MiB before", float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
	}
	if peakRSS > maxRSS {
		t.Errorf("peak RSS %.1f MiB over the %d MiB bound", float64(peakRSS)/(1<<20), maxRSS>>20)
	}
}

const (
	goroutineSlack = 4
	heapSlack      = 16 << 20
)

// soakUpstream answers by the path's first segment: ok (at once), slow (a few ms), fail (HTTP 500), biz (HTTP 200
// with ok:false), hang (until batchd gives up: past the 200ms step timeout).
func soakUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		kind, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/api/"), "/")
		w.Header().Set("Content-Type", "application/json")
		switch kind {
		case "hang":
			<-r.Context().Done()
			return
		case "slow":
			select {
			case <-time.After(5 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		case "fail":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"ok":false,"result":{"error":1,"description":"upstream failed"}}`)
			return
		case "biz":
			_, _ = io.WriteString(w, `{"ok":false,"result":{"error":1008,"description":"name required"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true,"result":{"id":7,"name":"soak"}}`)
	})
}

// soakStep is one step of the soak batch: the status it gets when its dependencies succeeded and it ran in time,
// and the steps it depends on (indices).
type soakStep struct {
	key, step string
	status    int
	deps      []int
}

// soakBatch is the 50-step batch every client sends, and the status each step must get: 20 independent (7 slow),
// a chain of 10, 5 failing with a dependent each, 5 business failures, 3 timing out with a dependent on 2 of them.
func soakBatch() ([]byte, []soakStep) {
	var steps []soakStep
	index := map[string]int{}
	add := func(key, step string, status int, deps ...string) {
		s := soakStep{key: key, step: step, status: status}
		for _, d := range deps {
			s.deps = append(s.deps, index[d])
		}
		index[key] = len(steps)
		steps = append(steps, s)
	}
	for i := range 20 {
		kind := "ok"
		if i%3 == 0 {
			kind = "slow"
		}
		add(fmt.Sprintf("i%d", i), fmt.Sprintf(`"path":"%s/%d","payload":{"n":%d}`, kind, i, i), 200)
	}
	for i := range 10 {
		s := fmt.Sprintf(`"path":"ok/chain/%d"`, i)
		if i > 0 {
			s = fmt.Sprintf(`"path":"ok/chain/${c%d.result.id}","payload":{"after":"${c%d.result.name} #%d"}`, i-1, i-1, i)
			add(fmt.Sprintf("c%d", i), s, 200, fmt.Sprintf("c%d", i-1))
			continue
		}
		add(fmt.Sprintf("c%d", i), s, 200)
	}
	for i := range 5 {
		add(fmt.Sprintf("f%d", i), fmt.Sprintf(`"path":"fail/%d"`, i), 500)
		add(fmt.Sprintf("fd%d", i), fmt.Sprintf(`"path":"ok/x","payload":{"id":"${f%d.result.id}"}`, i), 200, fmt.Sprintf("f%d", i))
	}
	for i := range 5 {
		add(fmt.Sprintf("b%d", i), fmt.Sprintf(`"path":"biz/%d","payload":{}`, i), 200)
	}
	for i := range 3 {
		add(fmt.Sprintf("h%d", i), fmt.Sprintf(`"path":"hang/%d"`, i), 504)
	}
	add("hd0", `"path":"ok/y","depends_on":["h0"]`, 200, "h0")
	add("hd1", `"path":"ok/y/${h1.result.id}"`, 200, "h1")
	if len(steps) != 50 {
		panic(fmt.Sprintf("soak batch has %d steps", len(steps)))
	}
	var b strings.Builder
	b.WriteString(`{"requests":[`)
	for i, s := range steps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"key":"` + s.key + `",` + s.step + `}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String()), steps
}

// checkSoakAnswer returns "" when every step is answered exactly once, in order, with a status consistent with
// its dependencies: 424 (4240) when one of them did not succeed; otherwise its own status, or 504 (5040) when the
// machine was too loaded for it to finish within the step timeout. It counts those late steps in late.
func checkSoakAnswer(b []byte, want []soakStep, late *atomic.Int64) string {
	var out struct {
		Responses []struct {
			Key      string          `json:"key"`
			Status   int             `json:"status"`
			Response json.RawMessage `json:"response"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "answer is not JSON: " + err.Error()
	}
	if len(out.Responses) != len(want) {
		return fmt.Sprintf("%d results for %d steps", len(out.Responses), len(want))
	}
	for i, r := range out.Responses {
		w := want[i]
		if r.Key != w.key || len(r.Response) == 0 {
			return fmt.Sprintf("result %d: key %q, want %q: %s", i, r.Key, w.key, r.Response)
		}
		expect := w.status
		for _, d := range w.deps {
			if out.Responses[d].Status != 200 {
				expect = http.StatusFailedDependency
			}
		}
		code := 0
		if r.Status != 200 || w.status != 200 {
			var er struct{ Result struct{ Error int } }
			_ = json.Unmarshal(r.Response, &er)
			code = er.Result.Error
		}
		switch {
		case r.Status == expect && (expect != 424 || code == 4240) && (expect != 504 || code == 5040):
		case r.Status == 504 && code == 5040 && expect != 424:
			late.Add(1)
		default:
			return fmt.Sprintf("result %d (%s): status %d code %d, want %d: %s", i, r.Key, r.Status, code, expect, r.Response)
		}
	}
	return ""
}

// settle collects garbage until the goroutine count and the heap stop falling, and returns them.
func settle() (goroutines int, heap uint64) {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

// settleTo waits (bounded) for goroutines and heap to come back within the slack of a baseline.
func settleTo(baseGoroutines int, baseHeap uint64) (goroutines int, heap uint64) {
	for range 100 { // at most about 10 s
		goroutines, heap = settle()
		if goroutines <= baseGoroutines+goroutineSlack && heap <= baseHeap+heapSlack {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	return goroutines, heap
}

// vmHWM is the process's peak resident set size (Linux /proc/self/status VmHWM), in bytes; 0 elsewhere.
func vmHWM(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Logf("peak RSS unknown: %v", err)
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// startQuiet is start for a long run: batchd's log is kept only up to its first 64 KiB (enough to learn the address),
// so that the log of thousands of batches does not count as heap the service kept.
func startQuiet(t *testing.T, args ...string) *instance {
	t.Helper()
	return launch(t, &cappedBuffer{max: 64 << 10}, nil, args...)
}

// cappedBuffer keeps the first max bytes written to it and drops the rest.
type cappedBuffer struct {
	mu  sync.Mutex
	b   bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *cappedBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: not a positive whole number", name, s)
	}
	return n
}

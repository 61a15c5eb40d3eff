package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/jobs"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// browserBudget bounds everything one test does in the browser, its start included: every wait below ends by then.
const browserBudget = 2 * time.Minute

// startBatchd serves batchd as cmd/batchd wires it by default (the embedded demo API in process, jobs in memory) on
// a loopback httptest server, and returns its base URL.
func startBatchd(t *testing.T) string {
	t.Helper()
	return startBatchdWith(t, jobsSetup{})
}

// jobsSetup varies the job engine startBatchdWith wires; the zero value is cmd/batchd's default.
type jobsSetup struct {
	// maxResultBytes caps the answers stored per job (-job-max-result-bytes); 0 is the default.
	maxResultBytes int64
	// runBlocked are methods refused by the replica that runs the jobs' lines, besides Item/Import: a replica whose
	// -blocked differs from that of the one that took the job. A line calling one is answered with its refusal.
	runBlocked []string
	// hold, when set, is called before each line of a job runs, with the line's context; the line runs once it
	// returns (an error: the line does not run now and is handed back).
	hold func(ctx context.Context, line int64) error
}

// startBatchdWith is startBatchd with the job engine varied by js.
func startBatchdWith(t *testing.T, js jobsSetup) string {
	t.Helper()
	api := demoapi.New(demoapi.Config{})
	// A job's calls carry its Idempotency-Key, as cmd/batchd wires the invoker.
	inv := transport.NewInProcessInvoker(api, 8<<20)
	rn := runner.New(inv, runner.Config{MaxParallel: 16, StepTimeout: 10 * time.Second})
	store := jobs.NewMemory(jobs.MemoryConfig{Dir: t.TempDir(), MaxResultBytes: js.maxResultBytes})
	eng := jobs.New(jobs.Config{Store: store, Workers: 2})
	// Item/Import blocked, as cmd/batchd's -blocked does by default.
	blocked := []string{"Item/Import"}
	srv := transport.New(transport.Config{Runner: rn, Demo: api, Planner: planner.Config{Blocked: blocked},
		Jobs: transport.JobsConfig{Engine: eng}})
	run := srv.RunJobBatch
	if len(js.runBlocked) > 0 {
		other := transport.New(transport.Config{Runner: rn, Demo: api,
			Planner: planner.Config{Blocked: append(slices.Clone(blocked), js.runBlocked...)}})
		run = other.RunJobBatch
	}
	if js.hold != nil {
		next := run
		run = func(ctx context.Context, b jobs.Batch) (jobs.Answer, error) {
			if err := js.hold(ctx, b.Line); err != nil {
				return jobs.Answer{}, err
			}
			return next(ctx, b)
		}
	}
	eng.Start(run)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, eng.Shutdown(ctx))
		assert.NoError(t, store.Close())
	})
	return ts.URL
}

// chromiumPath is the browser the tests drive: $BATCHD_CHROMIUM, else the first of chromium, chromium-browser and
// google-chrome on PATH. None is a failure, not a skip: CI installs chromium (.ci/run).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BATCHD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no headless browser: install chromium (apt-get install chromium) or set BATCHD_CHROMIUM to its path")
	return ""
}

// tab is one headless Chromium tab for one test, with the page's console watched: an uncaught exception, or an
// error that is not an HTTP status the page asked for (a refused batch's 400), fails the test.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

func newTab(t *testing.T, width, height int) *tab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserBudget)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // as root in a container there is no sandbox to use
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(width, height),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(cancelTab)
	tb := &tab{t: t, ctx: bctx}
	messages := chromedp.Console(bctx) // starts the browser; subscribed before any page loads
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				tb.mu.Lock()
				tb.problems = append(tb.problems, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
				tb.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		<-done
		tb.mu.Lock()
		defer tb.mu.Unlock()
		assert.Empty(t, tb.problems, "the page's console")
	})
	return tb
}

// do runs actions, failing the test on an error.
func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	require.NoError(tb.t, chromedp.Do(tb.ctx, actions...))
}

// eval evaluates a JavaScript expression in the page and decodes its value into T.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr))
	require.NoError(tb.t, err, "evaluating %s", expr)
	return v
}

// settle waits until the page's action number seq has ended (main's data-seq is seq and data-state is not
// "busy") and returns the state it ended in.
func (tb *tab) settle(main string, seq int) string {
	tb.t.Helper()
	expr := fmt.Sprintf(`(() => { const m = document.querySelector(%q);
		return m.dataset.seq === %q && m.dataset.state !== 'busy' && m.dataset.state !== 'watching' && m.dataset.state !== 'ended' && m.dataset.state; })()`,
		main, fmt.Sprint(seq))
	state, err := chromedp.Run(tb.ctx, chromedp.Poll[string](expr, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(30*time.Second)))
	require.NoError(tb.t, err, "waiting for action %d of %s to end", seq, main)
	return state
}

// dryRun is batchd's own plan of a batch, asked for directly: what the page must draw.
type plan struct {
	Steps []struct {
		Key       string   `json:"key"`
		Method    string   `json:"method"`
		Path      string   `json:"path"`
		DependsOn []string `json:"depends_on"`
		Level     int      `json:"level"`
	} `json:"steps"`
	Levels       int      `json:"levels"`
	CriticalPath []string `json:"critical_path"`
}

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

func dryRun(t *testing.T, base, batch string) plan {
	t.Helper()
	status, b := post(t, base+"/v1/batch?dry_run=true", batch)
	require.Equal(t, http.StatusOK, status, "%s", b)
	var p struct{ Plan plan }
	require.NoError(t, json.Unmarshal(b, &p))
	require.NotEmpty(t, p.Plan.Steps, "%s", b)
	return p.Plan
}

// demoBatch uses every kind of step the page tells apart: a chain through placeholders, a depends_on, a slow step,
// a step that fails (Demo/Fail with status 500) and one not executed because its input failed.
const demoBatch = `{
  "stop_on_error": false,
  "requests": [
    {"key": "ProducerAdd", "path": "Producer/Add", "payload": {"name": "Coca-Cola"}},
    {"key": "ProducerGet", "path": "Producer/Get", "payload": {"ids": ["${ProducerAdd.result.new_id}"]}},
    {"key": "Rename", "path": "Producer/Edit",
     "payload": {"id": "${ProducerAdd.result.new_id}", "name": "Coca-Cola Zero"}},
    {"key": "Slow", "path": "Demo/Sleep", "payload": {"ms": 30}},
    {"key": "Fail", "path": "Demo/Fail", "payload": {"status": 500, "description": "this step always fails"},
     "depends_on": ["Slow"]},
    {"key": "AfterFail", "path": "Demo/Echo", "payload": {"got": "${Fail.result}"}},
    {"key": "Report", "path": "Demo/Echo",
     "payload": {"renamed": "${Rename.result.row_affected}", "name": "${ProducerGet.result.0.name}"},
     "depends_on": ["Slow"]}
  ]
}`

type drawnNode struct {
	Key      string `json:"key"`
	Level    string `json:"level"`
	Critical string `json:"critical"`
	Outcome  string `json:"outcome"`
	Status   string `json:"status"`
	Text     string `json:"text"`
}

type drawnEdge struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Critical bool   `json:"critical"`
}

const readGraph = `({
  orient: document.querySelector('#graph svg')?.dataset.orient ?? '',
  nodes: [...document.querySelectorAll('#graph .node')].map(n => ({key: n.dataset.key, level: n.dataset.level,
    critical: n.dataset.critical, outcome: n.dataset.outcome ?? '', status: n.dataset.status ?? '', text: n.textContent})),
  edges: [...document.querySelectorAll('#graph .edge')].map(e => ({from: e.dataset.from, to: e.dataset.to,
    critical: e.classList.contains('critical')})),
  overlaps: (() => {
    const r = [...document.querySelectorAll('#graph .node rect')].map(x => x.getBoundingClientRect());
    let n = 0;
    for (let i = 0; i < r.length; i++) for (let j = i + 1; j < r.length; j++)
      if (r[i].left < r[j].right && r[j].left < r[i].right && r[i].top < r[j].bottom && r[j].top < r[i].bottom) n++;
    return n;
  })(),
})`

type graph struct {
	Orient   string      `json:"orient"`
	Nodes    []drawnNode `json:"nodes"`
	Edges    []drawnEdge `json:"edges"`
	Overlaps int         `json:"overlaps"`
}

// checkGraph asserts that the drawn graph is p: a node per step with its level, an edge per dependency, the critical
// path's nodes and consecutive edges marked and nothing else, and no two nodes drawn over each other.
func checkGraph(t *testing.T, g graph, p plan) {
	t.Helper()
	critical := map[string]bool{}
	for _, k := range p.CriticalPath {
		critical[k] = true
	}
	criticalEdge := map[drawnEdge]bool{}
	for i := 1; i < len(p.CriticalPath); i++ {
		criticalEdge[drawnEdge{From: p.CriticalPath[i-1], To: p.CriticalPath[i]}] = true
	}
	var wantNodes, gotNodes []string
	var wantEdges, gotEdges []drawnEdge
	for _, s := range p.Steps {
		wantNodes = append(wantNodes, fmt.Sprintf("%s level=%d critical=%v", s.Key, s.Level, critical[s.Key]))
		for _, d := range s.DependsOn {
			e := drawnEdge{From: d, To: s.Key}
			e.Critical = criticalEdge[e]
			wantEdges = append(wantEdges, e)
		}
	}
	for _, n := range g.Nodes {
		gotNodes = append(gotNodes, fmt.Sprintf("%s level=%s critical=%s", n.Key, n.Level, n.Critical))
	}
	gotEdges = append(gotEdges, g.Edges...)
	sort.Strings(wantNodes)
	sort.Strings(gotNodes)
	byEnds := func(a, b drawnEdge) int { return strings.Compare(a.From+"\x00"+a.To, b.From+"\x00"+b.To) }
	slices.SortFunc(wantEdges, byEnds)
	slices.SortFunc(gotEdges, byEnds)
	assert.Equal(t, wantNodes, gotNodes, "nodes drawn (key, level, on the critical path)")
	assert.Equal(t, wantEdges, gotEdges, "edges drawn (from, to, on the critical path)")
	assert.Positive(t, len(criticalEdge), "the batch's critical path has an edge to mark")
	assert.Zero(t, g.Overlaps, "nodes drawn over each other")
}

type timelineRow struct {
	Key      string   `json:"key"`
	Outcome  string   `json:"outcome"`
	Queued   *float64 `json:"queued"`
	Started  *float64 `json:"started"`
	Duration *float64 `json:"duration"`
	Bars     int      `json:"bars"`
	Text     string   `json:"text"`
}

const readTimeline = `[...document.querySelectorAll('#timeline .tl-row')].map(r => {
  const num = (v) => (v === undefined ? null : Number(v));
  return {key: r.dataset.key, outcome: r.dataset.outcome, queued: num(r.dataset.queued), started: num(r.dataset.started),
    duration: num(r.dataset.duration), bars: r.querySelectorAll('.seg.call').length, text: r.textContent};
})`

func TestInspectorPlansRunsAndShowsTimeline(t *testing.T) {
	base := startBatchd(t)
	tb := newTab(t, 1280, 900)
	tb.do(chromedp.Navigate(base+"/ui"), // the redirect to /ui/ included
		chromedp.WaitVisible(chromedp.ID("batch")),
		chromedp.SetValue(chromedp.ID("batch"), demoBatch),
		chromedp.Click(chromedp.ID("plan")))
	require.Equal(t, base+"/ui/", eval[string](tb, `location.href`))
	require.Equal(t, "planned", tb.settle("#inspector", 1), eval[string](tb, `document.getElementById('status').textContent`))

	want := dryRun(t, base, demoBatch)
	g := eval[graph](tb, readGraph)
	assert.Equal(t, "columns", g.Orient)
	checkGraph(t, g, want)
	for _, n := range g.Nodes {
		assert.Empty(t, n.Outcome, "%s: an outcome before any run", n.Key)
	}

	// Run: every step on the timeline, the failed one and the one not executed marked on the graph and the timeline.
	tb.do(chromedp.Click(chromedp.ID("run")))
	require.Equal(t, "ran", tb.settle("#inspector", 2), eval[string](tb, `document.getElementById('status').textContent`))
	wantOutcome := map[string]string{"ProducerAdd": "ok", "ProducerGet": "ok", "Rename": "ok", "Slow": "ok",
		"Fail": "failed", "AfterFail": "skipped", "Report": "ok"}
	g = eval[graph](tb, readGraph)
	checkGraph(t, g, want) // the same plan, drawn again with outcomes
	for _, n := range g.Nodes {
		assert.Equal(t, wantOutcome[n.Key], n.Outcome, "node %s", n.Key)
		mark := map[string]string{"ok": "✓ ok", "failed": "✗ failed", "skipped": "⊘ not executed"}[n.Outcome]
		assert.Contains(t, n.Text, mark, "node %s shows its outcome in words, not only in colour", n.Key)
	}
	rows := eval[[]timelineRow](tb, readTimeline)
	got := map[string]timelineRow{}
	for _, r := range rows {
		got[r.Key] = r
	}
	require.Len(t, got, len(want.Steps), "one timeline row per step: %+v", rows)
	for _, s := range want.Steps {
		r, ok := got[s.Key]
		require.True(t, ok, "no timeline row for %s", s.Key)
		assert.Equal(t, wantOutcome[s.Key], r.Outcome, "timeline row %s", s.Key)
		require.NotNil(t, r.Queued, "%s: queued", s.Key)
		if r.Outcome == "skipped" {
			assert.Nil(t, r.Started, "%s was not executed, yet has a start", s.Key)
			assert.Zero(t, r.Bars, "%s: a call bar for a step not executed", s.Key)
			assert.Contains(t, r.Text, "not executed")
			continue
		}
		require.NotNil(t, r.Started, "%s: started", s.Key)
		require.NotNil(t, r.Duration, "%s: duration", s.Key)
		assert.Equal(t, 1, r.Bars, "%s: one call bar", s.Key)
		assert.GreaterOrEqual(t, *r.Started, *r.Queued, "%s started before it was queued", s.Key)
	}
	// The bars follow the dependencies: a step is queued once its inputs ended (times are rounded to the microsecond).
	for _, s := range want.Steps {
		for _, d := range s.DependsOn {
			from, to := got[d], got[s.Key]
			if from.Started == nil {
				continue
			}
			assert.GreaterOrEqual(t, *to.Queued, *from.Started+*from.Duration-0.005,
				"%s queued at %v before its input %s ended", s.Key, *to.Queued, d)
		}
	}
	assert.Contains(t, eval[string](tb, `document.getElementById('summary').textContent`), "Critical path")

	// A step's response on click, and on Enter from the keyboard.
	tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="Fail"]`)))
	assert.Equal(t, "Fail", eval[string](tb, `document.getElementById('detail').hidden ? '' : document.getElementById('detail').dataset.key`))
	resp := eval[string](tb, `document.getElementById('detail-response').textContent`)
	assert.Contains(t, resp, "this step always fails")
	assert.Contains(t, eval[string](tb, `document.getElementById('detail-facts').textContent`), "500")
	tb.do(chromedp.Focus(chromedp.CSS(`#graph .node[data-key="ProducerAdd"]`)), chromedp.KeyEvent(kb.Enter))
	assert.Equal(t, "ProducerAdd", eval[string](tb, `document.getElementById('detail').dataset.key`))
	assert.Contains(t, eval[string](tb, `document.getElementById('detail-response').textContent`), `"new_id"`)

	if out := os.Getenv("BATCHD_UI_SCREENSHOT"); out != "" {
		tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="Fail"]`)))
		png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		if !filepath.IsAbs(out) {
			out = filepath.Join(moduleRoot(t), out)
		}
		require.NoError(t, os.WriteFile(out, png, 0o644))
		t.Logf("screenshot written to %s", out)
	}
}

// moduleRoot is the directory of go.mod above the test's working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		dir = filepath.Dir(dir)
	}
	t.Fatal("no go.mod above the working directory")
	return ""
}

func TestInspectorShowsRefusals(t *testing.T) {
	base := startBatchd(t)
	refused := `{"requests": [
		{"key": "add", "path": "Producer/Add", "payload": {"name": "must not be created"}},
		{"key": "evil", "path": "https://evil.test/x"},
		{"key": "orphan", "path": "Producer/Get", "payload": {"ids": ["${nope.result.id}"]}},
		{"key": "import", "path": "Item/Import"}]}`
	status, b := post(t, base+"/v1/batch?dry_run=true", refused)
	require.Equal(t, http.StatusBadRequest, status)
	var answer struct {
		Result struct {
			Details []struct{ Key, Reason, Problem string }
		}
	}
	require.NoError(t, json.Unmarshal(b, &answer))
	var want []string
	for _, d := range answer.Result.Details {
		want = append(want, d.Key+" "+d.Reason+" "+d.Problem)
	}
	require.Len(t, want, 3, "%s", b)
	producers := func() int {
		_, b := post(t, base+"/v1/Producer/Get", `{}`)
		var got struct{ Total int }
		require.NoError(t, json.Unmarshal(b, &got), "%s", b)
		return got.Total
	}
	before := producers()

	tb := newTab(t, 1280, 900)
	tb.do(chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("batch")))
	readProblems := `[...document.querySelectorAll('#problems-list tr')].map(r => r.dataset.key + ' ' + r.dataset.reason + ' ' + r.cells[2].textContent)`
	for seq, button := range []string{"plan", "run"} {
		tb.do(chromedp.SetValue(chromedp.ID("batch"), refused), chromedp.Click(chromedp.ID(button)))
		require.Equal(t, "refused", tb.settle("#inspector", seq+1), button)
		assert.False(t, eval[bool](tb, `document.getElementById('problems').hidden`), "%s: problems hidden", button)
		assert.ElementsMatch(t, want, eval[[]string](tb, readProblems), "%s: the problems listed", button)
		assert.Zero(t, eval[int](tb, `document.querySelectorAll('#graph .node').length`), "%s: a graph of a refused batch", button)
		assert.Zero(t, eval[int](tb, `document.querySelectorAll('#timeline .tl-row').length`), "%s: a timeline of a refused batch", button)
	}
	assert.Equal(t, before, producers(), "Run on a refused batch created a producer")

	// Malformed JSON is batchd's to judge: its problem is listed as it says it.
	tb.do(chromedp.SetValue(chromedp.ID("batch"), `{"requests": [`), chromedp.Click(chromedp.ID("plan")))
	require.Equal(t, "refused", tb.settle("#inspector", 3))
	assert.Equal(t, []string{" invalid_json "}, eval[[]string](tb,
		`[...document.querySelectorAll('#problems-list tr')].map(r => r.dataset.key + ' ' + r.dataset.reason + ' ')`))

	// A problem is shown as text, never as markup, even when it quotes the batch.
	tb.do(chromedp.SetValue(chromedp.ID("batch"), `{"requests": [{"key": "<img src=x onerror=window.pwned=1>", "path": "Demo/Echo"}]}`),
		chromedp.Click(chromedp.ID("plan")))
	require.Equal(t, "refused", tb.settle("#inspector", 4))
	assert.Contains(t, eval[string](tb, `document.getElementById('problems-list').textContent`), `"<img src=x onerror=window.pwned=1>"`)
	assert.Zero(t, eval[int](tb, `document.querySelectorAll('main img').length`))
	assert.False(t, eval[bool](tb, `'pwned' in window`))

	// A later batch that plans clears the refusal.
	tb.do(chromedp.SetValue(chromedp.ID("batch"), `[{"path": "Demo/Echo"}]`), chromedp.Click(chromedp.ID("plan")))
	require.Equal(t, "planned", tb.settle("#inspector", 5))
	assert.True(t, eval[bool](tb, `document.getElementById('problems').hidden`))
}

// TestInspectorBareArrayFromFile loads a bare array of steps from a file: it is run as {"batch": […]} with timings,
// the same steps under the same keys, and the page says so.
func TestInspectorBareArrayFromFile(t *testing.T) {
	base := startBatchd(t)
	batch := `[{"path": "Demo/Echo", "body": {"a": 1, "html": "<img src=x onerror=\"window.pwned=1\">"}},
	 {"path": "Demo/Fail", "body": {"description": "${0.result.a}"}},
	 {"path": "Demo/Echo", "body": "${1.result}"}]`
	file := filepath.Join(t.TempDir(), "batch.json")
	require.NoError(t, os.WriteFile(file, []byte(batch), 0o644))

	tb := newTab(t, 1280, 900)
	tb.do(chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("batch")),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{file}))
	_, err := chromedp.Run(tb.ctx, chromedp.Poll[bool](`document.getElementById('batch').value.length > 0`,
		chromedp.WithPollingTimeout(10*time.Second)))
	require.NoError(t, err, "the file was not loaded into the editor")
	require.Equal(t, batch, eval[string](tb, `document.getElementById('batch').value`))

	tb.do(chromedp.Click(chromedp.ID("run")))
	require.Equal(t, "ran", tb.settle("#inspector", 1))
	checkGraph(t, eval[graph](tb, readGraph), dryRun(t, base, batch))
	outcomes := map[string]string{}
	for _, r := range eval[[]timelineRow](tb, readTimeline) {
		outcomes[r.Key] = r.Outcome
	}
	assert.Equal(t, map[string]string{"0": "ok", "1": "failed", "2": "skipped"}, outcomes)
	assert.Contains(t, eval[string](tb, `document.getElementById('status').textContent`), `{"batch": […]}`)

	// A response is shown as text, never as markup.
	tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="0"]`)))
	assert.Contains(t, eval[string](tb, `document.getElementById('detail-response').textContent`), `<img src=x onerror=`)
	assert.Zero(t, eval[int](tb, `document.querySelectorAll('main img').length`))
	assert.False(t, eval[bool](tb, `'pwned' in window`))
}

// TestInspectorNarrowWindow: in a phone-sized window the plan is drawn one row per level, and the page itself never
// scrolls sideways (the graph scrolls inside its own box).
func TestInspectorNarrowWindow(t *testing.T) {
	base := startBatchd(t)
	tb := newTab(t, 390, 844)
	tb.do(chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("batch")),
		chromedp.Click(chromedp.ID("example")), chromedp.Click(chromedp.ID("run")))
	require.Equal(t, "ran", tb.settle("#inspector", 1), eval[string](tb, `document.getElementById('status').textContent`))
	g := eval[graph](tb, readGraph)
	assert.Equal(t, "rows", g.Orient)
	checkGraph(t, g, dryRun(t, base, eval[string](tb, `document.getElementById('batch').value`)))
	assert.LessOrEqual(t, eval[int](tb, `document.documentElement.scrollWidth`), eval[int](tb, `window.innerWidth`),
		"the page scrolls sideways")
	for _, id := range []string{"plan", "run", "example", "file"} {
		assert.True(t, eval[bool](tb, fmt.Sprintf(`(() => { const r = document.getElementById(%q).getBoundingClientRect();
			return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth; })()`, id)), "#%s is off screen", id)
	}
}

// restBatch uses the demo API's REST methods with the REST helpers (its depends_on fix the order of the creations,
// so that ids and pages are known): fan-outs (for_each) whose calls all succeed,
// fail with an HTTP status, or fail with HTTP 200 and "ok": false; a step not executed because a fan-out failed; a
// 404 accepted by ok_status; steps run or not run on their condition (when), one not run because it reads a step
// not run, and one that only depends_on it and runs.
const restBatch = `{"requests": [
  {"key": "acme", "path": "Demo/Create", "payload": {"name": "Acme"}},
  {"key": "bolt", "path": "Demo/Create", "payload": {"name": "Bolt"}, "depends_on": ["acme"]},
  {"key": "page", "method": "GET", "path": "Demo/Page?size=10", "depends_on": ["acme", "bolt"]},
  {"key": "read", "method": "GET", "path": "Demo/Producer?id=${item.id}", "for_each": "${page.result}"},
  {"key": "ids", "path": "Demo/Echo", "payload": [1, 99], "depends_on": ["page"]},
  {"key": "check", "method": "GET", "path": "Demo/Producer?id=${item}", "for_each": "${ids.result}"},
  {"key": "afterCheck", "path": "Demo/Echo", "payload": {"got": "${check}"}},
  {"key": "rules", "path": "Demo/Fail", "for_each": "${ids.result}", "payload": {"description": "rule broken for ${item}"}},
  {"key": "gone", "method": "DELETE", "path": "Demo/Producer?id=99", "ok_status": [404], "depends_on": ["page"]},
  {"key": "recreate", "path": "Demo/Create", "when": "${gone:status} == 404", "payload": {"name": "Comet"}},
  {"key": "report", "path": "Demo/Echo", "when": "${gone:status} == 204", "payload": {"deleted": "${gone:status}"}},
  {"key": "afterReport", "method": "GET", "path": "Demo/Producer?id=${report.result.deleted}"},
  {"key": "last", "method": "GET", "path": "Demo/Page?size=10", "depends_on": ["report", "recreate"]}
]}`

// TestInspectorShowsFanOutsAndConditions runs restBatch: each fan-out shows its number of calls and, on click,
// each call with its status, outcome and response; a step not run on its condition is told apart from a failed
// step and from one not executed because of another, on the graph, the timeline and in the details.
func TestInspectorShowsFanOutsAndConditions(t *testing.T) {
	base := startBatchd(t)
	tb := newTab(t, 1280, 900)
	tb.do(chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("batch")),
		chromedp.SetValue(chromedp.ID("batch"), restBatch), chromedp.Click(chromedp.ID("plan")))
	require.Equal(t, "planned", tb.settle("#inspector", 1), eval[string](tb, `document.getElementById('status').textContent`))
	want := dryRun(t, base, restBatch)
	g := eval[graph](tb, readGraph)
	checkGraph(t, g, want)
	planned := map[string]string{}
	for _, n := range g.Nodes {
		planned[n.Key] = n.Text
	}
	assert.Contains(t, planned["read"], "for each", "a fan-out is marked before it runs")
	assert.Contains(t, planned["report"], "when", "a condition is marked before it runs")
	assert.NotContains(t, planned["page"], "for each")

	tb.do(chromedp.Click(chromedp.ID("run")))
	require.Equal(t, "ran", tb.settle("#inspector", 2), eval[string](tb, `document.getElementById('status').textContent`))
	type outcome struct{ outcome, status, calls string }
	wantOutcome := map[string]outcome{
		"acme": {"ok", "201", ""}, "bolt": {"ok", "201", ""}, "page": {"ok", "200", ""},
		"read":        {"ok", "200", "2"},
		"ids":         {"ok", "200", ""},
		"check":       {"failed", "404", "2"}, // its second call's producer does not exist
		"afterCheck":  {"skipped", "424", ""},
		"rules":       {"failed", "200", "2"}, // both calls answered 200 with "ok": false
		"gone":        {"ok", "404", ""},      // 404 is in its ok_status
		"recreate":    {"ok", "201", ""},
		"report":      {"not-run", "204", ""},
		"afterReport": {"not-run", "204", ""}, // it reads report
		"last":        {"ok", "200", ""},      // it only depends_on report
	}
	g = eval[graph](tb, readGraph)
	checkGraph(t, g, want)
	calls := eval[map[string]string](tb, `Object.fromEntries([...document.querySelectorAll('#graph .node')].map(n => [n.dataset.key, n.dataset.calls ?? '']))`)
	marks := map[string]string{"ok": "✓ ok", "failed": "✗ failed", "skipped": "⊘ not executed", "not-run": "○ not run (when)"}
	for _, n := range g.Nodes {
		w := wantOutcome[n.Key]
		assert.Equal(t, w, outcome{n.Outcome, n.Status, calls[n.Key]}, "node %s", n.Key)
		assert.Contains(t, n.Text, marks[w.outcome], "node %s shows its outcome in words", n.Key)
		if w.calls != "" {
			assert.Contains(t, n.Text, w.calls+" calls", "node %s shows its number of calls", n.Key)
		}
	}
	assert.Contains(t, eval[string](tb, `document.getElementById('status').textContent`), "2 not run on a condition")
	// Not run and not executed look different, not only in words.
	style := func(key string) string {
		return eval[string](tb, fmt.Sprintf(`(() => { const s = getComputedStyle(document.querySelector('#graph .node[data-key=%q] rect'));
			return s.fill + ' ' + s.stroke + ' ' + s.strokeDasharray; })()`, key))
	}
	assert.NotEqual(t, style("afterCheck"), style("report"), "not executed and not run drawn alike")
	assert.NotEqual(t, style("rules"), style("report"), "failed and not run drawn alike")

	rows := map[string]timelineRow{}
	for _, r := range eval[[]timelineRow](tb, readTimeline) {
		rows[r.Key] = r
	}
	require.Len(t, rows, len(wantOutcome))
	for key, w := range wantOutcome {
		r := rows[key]
		assert.Equal(t, w.outcome, r.Outcome, "timeline row %s", key)
		switch w.outcome {
		case "not-run":
			assert.Nil(t, r.Started, "%s was not run, yet has a start", key)
			assert.Contains(t, r.Text, "not run on its condition")
		case "skipped":
			assert.Contains(t, r.Text, "not executed")
		default:
			assert.Equal(t, 1, r.Bars, "%s: one call bar (a fan-out's from its first call's start to its last's end)", key)
		}
	}

	// A fan-out's calls on click: each with its status, outcome and, opened, its response.
	type call struct {
		Index, Status, Outcome, Summary, Response string
	}
	readCalls := `[...document.querySelectorAll('#detail-calls-list li.call')].map(li => ({index: li.dataset.index,
		status: li.dataset.status, outcome: li.dataset.outcome, summary: li.querySelector('summary').textContent,
		response: li.querySelector('pre').textContent}))`
	callsHidden := `document.getElementById('detail-calls').hidden`
	tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="check"]`)))
	require.False(t, eval[bool](tb, callsHidden))
	got := eval[[]call](tb, readCalls)
	require.Len(t, got, 2)
	assert.Equal(t, []string{"0 200 ok", "1 404 failed"}, []string{got[0].Index + " " + got[0].Status + " " + got[0].Outcome,
		got[1].Index + " " + got[1].Status + " " + got[1].Outcome})
	assert.Contains(t, got[0].Response, `"Acme"`)
	assert.Contains(t, got[1].Response, "no producer 99")
	assert.Contains(t, got[1].Summary, "✗ failed")
	assert.Contains(t, eval[string](tb, `document.getElementById('detail-calls').textContent`), "2 calls: 1 ok, 1 failed")
	tb.do(chromedp.Click(chromedp.CSS(`#detail-calls-list li[data-index="1"] summary`)))
	assert.True(t, eval[bool](tb, `document.querySelector('#detail-calls-list li[data-index="1"] details').open`))
	assert.Positive(t, eval[float64](tb, `document.querySelector('#detail-calls-list li[data-index="1"] pre').getBoundingClientRect().height`),
		"an opened call's response is shown")
	assert.Contains(t, eval[string](tb, `document.getElementById('detail-facts').textContent`), "${ids.result}")

	tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="rules"]`)))
	got = eval[[]call](tb, readCalls)
	require.Len(t, got, 2)
	for i, c := range got {
		assert.Equal(t, "200 failed", c.Status+" "+c.Outcome, "rules call %d", i)
		assert.Contains(t, c.Response, fmt.Sprintf("rule broken for %d", []int{1, 99}[i]))
	}

	tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="read"]`)))
	got = eval[[]call](tb, readCalls)
	require.Len(t, got, 2)
	assert.Contains(t, got[0].Response, `"Acme"`)
	assert.Contains(t, got[1].Response, `"Bolt"`)

	// Steps that are no fan-out have no calls list; their own options are listed.
	tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="gone"]`)))
	assert.True(t, eval[bool](tb, callsHidden))
	facts := eval[string](tb, `document.getElementById('detail-facts').textContent`)
	assert.Contains(t, facts, "404 count as success")
	assert.Contains(t, facts, "✓ ok")
	tb.do(chromedp.Click(chromedp.CSS(`#graph .node[data-key="report"]`)))
	facts = eval[string](tb, `document.getElementById('detail-facts').textContent`)
	assert.Contains(t, facts, "${gone:status} == 204")
	assert.Contains(t, facts, "○ not run (when)")
	assert.Contains(t, facts, "2040")
}

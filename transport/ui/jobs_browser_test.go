package ui_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/errcode"
)

// jobState is GET /v1/jobs/{id}.
type jobState struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Batches struct {
		Total   int `json:"total"`
		Done    int `json:"done"`
		Failed  int `json:"failed"`
		Skipped int `json:"skipped"`
	} `json:"batches"`
	Steps struct {
		Done   int `json:"done"`
		Failed int `json:"failed"`
	} `json:"steps"`
	Results struct {
		NotStored int `json:"not_stored"`
	} `json:"results"`
	Created  *string `json:"created"`
	Started  *string `json:"started"`
	Finished *string `json:"finished"`
}

// submitJob posts lines as a job and returns its id.
func submitJob(t *testing.T, base string, lines ...string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/v1/jobs",
		strings.NewReader(strings.Join(lines, "\n")+"\n"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-ndjson")
	status, b := do(t, req)
	require.Equal(t, http.StatusAccepted, status, "%s", b)
	var a struct {
		ID      string
		Batches int
	}
	require.NoError(t, json.Unmarshal(b, &a), "%s", b)
	require.Equal(t, len(lines), a.Batches, "%s", b)
	return a.ID
}

func do(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b.Bytes()
}

func getJob(t *testing.T, base, id string) jobState {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v1/jobs/"+id, nil)
	require.NoError(t, err)
	status, b := do(t, req)
	require.Equal(t, http.StatusOK, status, "%s", b)
	var j jobState
	require.NoError(t, json.Unmarshal(b, &j), "%s", b)
	return j
}

// waitJob reads the job until ok says yes, at most 200 times over at most 30 s.
func waitJob(t *testing.T, base, id, what string, ok func(jobState) bool) jobState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var j jobState
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		if j = getJob(t, base, id); ok(j) {
			return j
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.FailNow(t, "the job never got there", "%s; last read: %+v", what, j)
	return j
}

// resultLine is one line of GET /v1/jobs/{id}/results: the batch's answer, or past the job's answer cap a summary.
type resultLine struct {
	Line      int             `json:"line"`
	Answer    json.RawMessage `json:"answer"`
	Steps     int             `json:"steps"`
	Failed    int             `json:"failed"`
	NotStored bool            `json:"not_stored"`
}

func readResults(t *testing.T, base, id string) []resultLine {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v1/jobs/"+id+"/results", nil)
	require.NoError(t, err)
	status, b := do(t, req)
	require.Equal(t, http.StatusOK, status, "%s", b)
	var lines []resultLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l resultLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "%s", sc.Bytes())
		lines = append(lines, l)
	}
	require.NoError(t, sc.Err())
	return lines
}

// errorResultOf returns the code of an ErrorResult ({"ok": false, "result": {"error": n, …}}), 0 for anything else.
func errorResultOf(body json.RawMessage) errcode.Code {
	var er struct {
		OK     *bool `json:"ok"`
		Result struct {
			Error errcode.Code `json:"error"`
		} `json:"result"`
	}
	if json.Unmarshal(body, &er) != nil || er.OK == nil || *er.OK {
		return 0
	}
	return er.Result.Error
}

// stepResult is one step of a batch's answer.
type stepResult struct {
	Key      string          `json:"key"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
	Items    []struct {
		Status   int             `json:"status"`
		Response json.RawMessage `json:"response"`
	} `json:"items"`
}

// callFailed is the contract's rule for a call without ok_status: status 400 or more, or a JSON object with "ok":
// false.
func callFailed(status int, body json.RawMessage) bool {
	var obj struct {
		OK *bool `json:"ok"`
	}
	return status >= 400 || (json.Unmarshal(body, &obj) == nil && obj.OK != nil && !*obj.OK)
}

// lineFailures is what the jobs page must list for one results line, worked out here from the contract: the keys
// of the steps that failed by themselves ("" for a batch refused whole, or a line past the answer cap that had a
// failure), leaving out the steps batchd did not execute because of another (4240, 4120) and those not run on
// their condition (204, 2040, not a failure). failedSteps counts every failed step as the engine does, those not
// executed because of another included.
func lineFailures(t *testing.T, l resultLine) (listed []string, failedSteps int) {
	t.Helper()
	if l.NotStored {
		if l.Failed > 0 {
			return []string{""}, l.Failed
		}
		return nil, 0
	}
	if errorResultOf(l.Answer) != 0 {
		return []string{""}, 0
	}
	var steps []stepResult
	if bytes.HasPrefix(bytes.TrimSpace(l.Answer), []byte("[")) {
		require.NoError(t, json.Unmarshal(l.Answer, &steps), "line %d", l.Line)
	} else {
		var a struct{ Responses []stepResult }
		require.NoError(t, json.Unmarshal(l.Answer, &a), "line %d", l.Line)
		steps = a.Responses
	}
	for _, s := range steps {
		code := errorResultOf(s.Response)
		failed := callFailed(s.Status, s.Response)
		for _, it := range s.Items {
			failed = failed || callFailed(it.Status, it.Response)
		}
		switch {
		case code == errcode.ConditionFalse && s.Status == http.StatusNoContent:
		case code == errcode.DependencyFailed || code == errcode.NotExecuted:
			failedSteps++
		case failed:
			failedSteps++
			listed = append(listed, s.Key)
		}
	}
	return listed, failedSteps
}

// recordRenders makes the tab record, in every page it loads from now on, each time the jobs page shows a job's
// state: its status, batches done and total, and the progress bar's value and max (window.jobRenders).
func (tb *tab) recordRenders() {
	tb.t.Helper()
	_, err := chromedp.Call(tb.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.jobRenders = [];
new MutationObserver(() => {
  const b = document.getElementById('job-batches'), p = document.getElementById('job-progress');
  window.jobRenders.push({status: document.getElementById('job-state').dataset.status,
    done: Number(b.dataset.done), total: Number(b.dataset.total), value: p.value, max: p.max});
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-done']});`})
	require.NoError(tb.t, err)
}

// render is one showing of a job's state, recorded by recordRenders.
type render struct {
	Status                  string
	Done, Total, Value, Max float64
}

// shown is what the jobs page shows of a job.
type shown struct {
	Status                string
	Done, Total           string
	Failed, Skipped       string
	Steps                 string
	Value, Max            float64
	Lines, FailedLines    string
	Rows                  []string
	Created, Started      string
	Finished, Rate        string
	CreatedAt, StartedAt  string
	FinishedAt, NotStored string
}

const readShown = `(() => {
  const $ = (id) => document.getElementById(id);
  const at = (id) => $(id).querySelector('time')?.getAttribute('datetime') ?? '';
  return {
    status: $('job-state').dataset.status, done: $('job-batches').dataset.done, total: $('job-batches').dataset.total,
    failed: $('job-failed').dataset.failed, skipped: $('job-skipped')?.dataset.skipped ?? '',
    steps: $('job-steps').textContent, value: $('job-progress').value, max: $('job-progress').max,
    lines: $('failures-summary').dataset.lines ?? '', failedLines: $('failures-summary').dataset.failedLines ?? '',
    rows: [...document.querySelectorAll('#failures-list tr')].map(r => r.dataset.line + ': ' +
      [...r.querySelectorAll('li')].map(li => li.dataset.key).join(',')),
    created: $('job-created').textContent, started: $('job-started').textContent,
    finished: $('job-finished').textContent, rate: $('job-rate').textContent,
    createdAt: at('job-created'), startedAt: at('job-started'), finishedAt: at('job-finished'),
    notStored: $('job-results').dataset.notStored ?? '',
  };
})()`

// jobLines is a job for the demo API: lines that sleep, so that it runs across several of the page's reads; lines
// whose batch fails in each way a batch can (an HTTP error with a step not executed because of it, a business
// error of a bare array, a fan-out whose calls fail with HTTP 200 and "ok": false); a step not run on its
// condition (not a failure); and a last line that sleeps too.
var jobLines = []string{
	`{"requests":[{"key":"nap","path":"Demo/Sleep","payload":{"ms":200}},{"key":"echo","path":"Demo/Echo","payload":{"n":1},"depends_on":["nap"]}]}`,
	`{"requests":[{"key":"charge","path":"Demo/Fail","payload":{"status":502,"description":"card declined"}},{"key":"notify","path":"Demo/Echo","payload":{"got":"${charge.result}"}}]}`,
	`[{"path":"Demo/Sleep","body":{"ms":200}},{"path":"Demo/Fail","body":{"description":"business rule broken"}}]`,
	`{"requests":[{"key":"nap","path":"Demo/Sleep","payload":{"ms":200}},{"key":"only_if_slow","path":"Demo/Echo","when":"${nap.result.slept_ms} > 60000"}]}`,
	`{"requests":[{"key":"ids","path":"Demo/Echo","payload":[1,2]},{"key":"each","path":"Demo/Fail","for_each":"${ids.result}","payload":{"description":"item ${item} refused"}}]}`,
	`{"batch":[{"path":"Demo/Sleep","payload":{"ms":200}}]}`,
	`{"requests":[{"key":"add","path":"Producer/Add","payload":{"name":"Fanta"}},{"key":"get","path":"Producer/Get","payload":{"ids":["${add.result.new_id}"]}}]}`,
	`{"requests":[{"key":"nap","path":"Demo/Sleep","payload":{"ms":200}}]}`,
}

// TestJobsPageFollowsARealJob watches a job of the real engine on the jobs page, from /ui/jobs?id=…: the progress
// it shows never goes back and is read while the job runs, the counts at the end are the job's own, the failed
// lines are those of its results, its times are shown in the browser's time zone, and an unknown id gets batchd's
// 404. The last line is held until the page has shown the job running with every other line done, so that the job
// is caught running whatever the machine's speed.
func TestJobsPageFollowsARealJob(t *testing.T) {
	total := len(jobLines)
	release := make(chan struct{})
	var once sync.Once
	releaseLast := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseLast)
	base := startBatchdWith(t, jobsSetup{hold: func(ctx context.Context, line int64) error {
		if line != int64(total) {
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	id := submitJob(t, base, jobLines...)

	tb := newTab(t, 1280, 900)
	tb.recordRenders()
	// Times are shown in the browser's zone: one with a half-hour offset and no summer time tells it from UTC.
	_, err := chromedp.Call(tb.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Kolkata"})
	require.NoError(t, err)
	kolkata := time.FixedZone("UTC+05:30", 5*3600+30*60)
	tb.do(chromedp.Navigate(base + "/ui/jobs?id=" + id))

	// Every line but the held last one ends; then the page shows the job as it is, running.
	frozen := waitJob(t, base, id, "every line but the last done", func(j jobState) bool { return j.Batches.Done == total-1 })
	_, err = chromedp.Run(tb.ctx, chromedp.Poll[bool](fmt.Sprintf(
		`document.getElementById('job-batches').dataset.done === '%d'`, total-1),
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	require.NoError(t, err, "the page never showed the job with %d lines done", total-1)
	running := eval[shown](tb, readShown)
	assert.Equal(t, "running", frozen.Status)
	assert.Equal(t, "running", running.Status)
	assert.Equal(t, fmt.Sprint(frozen.Batches.Failed), running.Failed, "failed batches while running")
	assert.Equal(t, fmt.Sprintf("%d done, %d failed", frozen.Steps.Done, frozen.Steps.Failed), running.Steps)
	assert.Equal(t, "–", running.Finished, "a running job has no finish time")
	assert.Empty(t, running.FinishedAt)
	releaseLast()

	require.Equal(t, "read", tb.settle("#jobs", 1), eval[string](tb, `document.getElementById('job-status').textContent`))
	final := getJob(t, base, id)
	require.Equal(t, "done", final.Status)
	got := eval[shown](tb, readShown)

	// The progress shown, read after read: never back, once below the total while running, the total at the end.
	renders := eval[[]render](tb, `window.jobRenders`)
	require.NotEmpty(t, renders)
	below := false
	for i, r := range renders {
		assert.Equal(t, r.Done, r.Value, "read %d: the bar and the count differ", i)
		assert.Equal(t, float64(total), r.Total, "read %d", i)
		assert.Equal(t, float64(total), r.Max, "read %d: the bar's max", i)
		if i > 0 {
			assert.GreaterOrEqual(t, r.Value, renders[i-1].Value, "read %d: progress went back: %+v", i, renders)
		}
		if r.Value < float64(total) && r.Status == "running" {
			below = true
		}
	}
	assert.True(t, below, "no read showed the job running below its total: %+v", renders)
	assert.Equal(t, float64(total), renders[len(renders)-1].Value)
	assert.Equal(t, "done", renders[len(renders)-1].Status)

	// The counts are the job's.
	assert.Equal(t, "done", got.Status)
	assert.Equal(t, fmt.Sprint(final.Batches.Done), got.Done)
	assert.Equal(t, fmt.Sprint(final.Batches.Total), got.Total)
	assert.Equal(t, fmt.Sprint(final.Batches.Failed), got.Failed)
	assert.Equal(t, fmt.Sprintf("%d done, %d failed", final.Steps.Done, final.Steps.Failed), got.Steps)
	assert.Equal(t, float64(final.Batches.Done), got.Value)
	assert.Equal(t, float64(final.Batches.Total), got.Max)
	assert.Contains(t, got.Rate, "batches/s over the run")

	// The failed lines are those of the results, each with the steps that failed by themselves.
	var wantRows []string
	failedLines, failedSteps := 0, 0
	results := readResults(t, base, id)
	require.Len(t, results, total)
	for _, l := range results {
		keys, n := lineFailures(t, l)
		failedSteps += n
		if len(keys) > 0 {
			failedLines++
			wantRows = append(wantRows, fmt.Sprintf("%d: %s", l.Line, strings.Join(keys, ",")))
		}
	}
	// The rule above agrees with the engine's own counts.
	require.Equal(t, final.Batches.Failed, failedLines, "failed lines by the contract's rule vs the job's count")
	require.Equal(t, final.Steps.Failed, failedSteps, "failed steps by the contract's rule vs the job's count")
	assert.Equal(t, []string{"2: charge", "3: 1", "5: each"}, wantRows, "the job's lines fail as written")
	assert.Equal(t, wantRows, got.Rows, "failed lines listed")
	assert.Equal(t, fmt.Sprint(total), got.Lines)
	assert.Equal(t, fmt.Sprint(failedLines), got.FailedLines)
	assert.NotContains(t, eval[string](tb, `document.getElementById('failures-summary').textContent`), "batchd counts",
		"the page says its list and the job's count differ when they do not")
	list := eval[string](tb, `document.getElementById('failures-list').textContent`)
	for _, s := range []string{"card declined", "business rule broken", "2 of 2 calls failed; the first: item 1 refused"} {
		assert.Contains(t, list, s)
	}
	assert.Contains(t, eval[string](tb, `location.search`), "id="+id, "the job's address can be shared")

	// Times: each as batchd sent it in the datetime, shown in the browser's zone to the millisecond, with how long
	// the job waited and ran.
	times := map[string]time.Time{}
	for name, v := range map[string]*string{"created": final.Created, "started": final.Started, "finished": final.Finished} {
		require.NotNil(t, v, "%s is null in a job done", name)
		ts, err := time.Parse(time.RFC3339Nano, *v)
		require.NoError(t, err, "%s: %s", name, *v)
		times[name] = ts
	}
	assert.Equal(t, *final.Created, got.CreatedAt)
	assert.Equal(t, *final.Started, got.StartedAt)
	assert.Equal(t, *final.Finished, got.FinishedAt)
	local := func(ts time.Time) string { return ts.In(kolkata).Format("2006-01-02 15:04:05.000") + " UTC+05:30" }
	secs := func(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }
	assert.Equal(t, local(times["created"]), got.Created)
	assert.Equal(t, local(times["started"])+" (queued "+secs(times["started"].Sub(times["created"]))+")", got.Started)
	assert.Equal(t, local(times["finished"])+" (ran "+secs(times["finished"].Sub(times["started"]))+")", got.Finished)

	// An id batchd does not know: its 404, as batchd says it.
	unknown := "0123456789abcdef0123456789abcdef"
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v1/jobs/"+unknown, nil)
	require.NoError(t, err)
	status, b := do(t, req)
	require.Equal(t, http.StatusNotFound, status)
	var er struct{ Result struct{ Description string } }
	require.NoError(t, json.Unmarshal(b, &er))
	require.NotEmpty(t, er.Result.Description, "%s", b)
	tb.do(chromedp.SetValue(chromedp.ID("job-id"), unknown), chromedp.Click(chromedp.CSS(`#job-form button`)))
	require.Equal(t, "error", tb.settle("#jobs", 2))
	msg := eval[string](tb, `document.getElementById('job-status').textContent`)
	assert.Contains(t, msg, "404")
	assert.Contains(t, msg, er.Result.Description)
	assert.True(t, eval[bool](tb, `document.getElementById('job').hidden && document.getElementById('failures').hidden`),
		"the last job's figures are still shown under the unknown id")
}

// TestJobsPageFollowsACancelledJobToItsEnd cancels a job while two of its lines run: the page shows it cancelled
// at once, goes on reading it while those lines finish (their answers are stored; the lines not started are
// skipped), and ends with the job's own counts.
func TestJobsPageFollowsACancelledJobToItsEnd(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	lines := make([]string, 6)
	for i := range lines {
		lines[i] = fmt.Sprintf(`[{"path":"Demo/Echo","body":{"line":%d}}]`, i+1)
	}
	held := make(chan int64, len(lines))
	base := startBatchdWith(t, jobsSetup{hold: func(ctx context.Context, line int64) error {
		held <- line
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	id := submitJob(t, base, lines...)

	tb := newTab(t, 1280, 900)
	tb.do(chromedp.Navigate(base + "/ui/jobs?id=" + id))
	// Both workers hold a line (the first two): nothing of the job can end until they are let go.
	var running []int64
	for len(running) < 2 {
		select {
		case line := <-held:
			running = append(running, line)
		case <-time.After(30 * time.Second):
			require.FailNow(t, "the workers did not take two lines within 30s", "took %v", running)
		}
	}
	assert.ElementsMatch(t, []int64{1, 2}, running)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, base+"/v1/jobs/"+id, nil)
	require.NoError(t, err)
	status, b := do(t, req)
	require.Equal(t, http.StatusAccepted, status, "%s", b)
	_, err = chromedp.Run(tb.ctx, chromedp.Poll[bool](`document.getElementById('job-state').dataset.status === 'cancelled'`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	require.NoError(t, err, "the page never showed the job cancelled")
	assert.Equal(t, "watching", eval[string](tb, `document.getElementById('jobs').dataset.state`),
		"the page stopped following the job while two of its lines still ran")
	assert.Equal(t, "0", eval[string](tb, `document.getElementById('job-batches').dataset.done`))
	assert.Contains(t, eval[string](tb, `document.getElementById('job-status').textContent`), "still to finish")
	releaseAll()

	require.Equal(t, "read", tb.settle("#jobs", 1), eval[string](tb, `document.getElementById('job-status').textContent`))
	final := getJob(t, base, id)
	require.Equal(t, "cancelled", final.Status)
	require.Equal(t, 2, final.Batches.Done, "%+v", final)
	require.Equal(t, 4, final.Batches.Skipped, "%+v", final)
	got := eval[shown](tb, readShown)
	assert.Equal(t, "cancelled", got.Status)
	assert.Equal(t, "2", got.Done)
	assert.Equal(t, "6", got.Total)
	assert.Equal(t, "4", got.Skipped)
	assert.Equal(t, "0", got.Failed)
	assert.Equal(t, "2", got.Lines, "results lines read: the two that ran")
	assert.Empty(t, got.Rows)
	require.NotNil(t, final.Started)
	require.NotNil(t, final.Finished)
	assert.Contains(t, got.Finished, "cancelled ")
	assert.Contains(t, got.Finished, " after it started")
}

// TestJobsPageShowsLinesNotKeptOrRefused runs a job on a replica whose answers cap is tiny and whose planner refuses
// a method that the replica which took the job accepted: a line answered by its refusal is listed as the batch's
// failure, a line past the cap by its counts (listed when they say a step failed, not otherwise); a line whose 404
// its step accepts is listed (its answer cannot tell), and the page says why it lists more than the job counts.
func TestJobsPageShowsLinesNotKeptOrRefused(t *testing.T) {
	base := startBatchdWith(t, jobsSetup{maxResultBytes: 1 << 10, runBlocked: []string{"Demo/Form"}})
	pad := strings.Repeat("x", 2000) // an answer over the cap by itself: never kept, whatever the order lines end in
	lines := []string{
		`[{"path":"Demo/Echo","body":{"n":1}}]`,
		`{"requests":[{"key":"form","path":"Demo/Form","headers":{"Content-Type":"application/x-www-form-urlencoded"},"payload":"a=1"}]}`,
		`[{"path":"Demo/Echo","body":{"pad":"` + pad + `"}}]`,
		`{"requests":[{"key":"big","path":"Demo/Fail","payload":{"description":"` + pad + `"}}]}`,
		`{"requests":[{"key":"gone","method":"DELETE","path":"Demo/Producer?id=99","ok_status":[404]}]}`,
	}
	id := submitJob(t, base, lines...)
	final := waitJob(t, base, id, "done", func(j jobState) bool { return j.Status == "done" })
	require.Equal(t, 2, final.Results.NotStored, "%+v", final)
	require.Equal(t, 2, final.Batches.Failed, "%+v", final)

	var want []string
	for _, l := range readResults(t, base, id) {
		if keys, _ := lineFailures(t, l); len(keys) > 0 {
			want = append(want, fmt.Sprintf("%d: %s", l.Line, strings.Join(keys, ",")))
		}
	}
	// Line 5's 404 is accepted by its step's ok_status, which its answer does not show: the results alone make it
	// look failed, and the page says why its list differs from the job's count.
	require.Equal(t, []string{"2: ", "4: ", "5: gone"}, want, "the refused line, the failed line not kept, line 5")

	tb := newTab(t, 1280, 900)
	tb.do(chromedp.Navigate(base + "/ui/jobs?id=" + id))
	require.Equal(t, "read", tb.settle("#jobs", 1), eval[string](tb, `document.getElementById('job-status').textContent`))
	got := eval[shown](tb, readShown)
	assert.Equal(t, want, got.Rows)
	assert.Equal(t, "2", got.NotStored)
	assert.Equal(t, "5", got.Lines)
	assert.Equal(t, "3", got.FailedLines)
	assert.Contains(t, eval[string](tb, `document.getElementById('failures-summary').textContent`),
		"batchd counts 2 failed batches")
	list := eval[string](tb, `document.getElementById('failures-list').textContent`)
	assert.Contains(t, list, "Demo/Form", "the refusal names what it refused")
	assert.Contains(t, list, "1 of 1 steps failed")
}

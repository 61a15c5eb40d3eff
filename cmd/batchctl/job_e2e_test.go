package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/client"
	"github.com/batchd/batchd/internal/syncbuf"
)

// The job commands end to end: the batchctl built from this module (in-process, or its binary where the exit
// status, a pipe or a terminal matters) against the batchd binary built from this module, in demo mode with its
// jobs in memory.

// getJob asks batchd for a job's state: the status, the body and the body read.
func getJob(t *testing.T, server, id string) (int, []byte, client.JobStatus) {
	t.Helper()
	resp, err := http.Get(server + "/v1/jobs/" + id)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var s client.JobStatus
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(body, &s), "%s", body)
	}
	return resp.StatusCode, body, s
}

// waitJob polls a job's state until ok holds, for at most 60 s.
func waitJob(t *testing.T, server, id, what string, ok func(client.JobStatus) bool) ([]byte, client.JobStatus) {
	t.Helper()
	var body []byte
	var s client.JobStatus
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var code int
		code, body, s = getJob(t, server, id)
		require.Equal(t, http.StatusOK, code, "%s", body)
		if ok(s) {
			return body, s
		}
	}
	t.Fatalf("job %s did not reach %s within 60s: %s", id, what, body)
	return nil, s
}

// settled: the job has ended and no batch of it runs any more.
func settled(s client.JobStatus) bool {
	return (s.Status == "done" || s.Status == "cancelled") && s.Batches.Done+s.Batches.Skipped == s.Batches.Total
}

// queuedJobs is batchd's count of jobs queued since it started (batchd_jobs_total{status="queued"}).
func queuedJobs(t *testing.T, server string) int {
	t.Helper()
	resp, err := http.Get(server + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `batchd_jobs_total{status="queued"} `); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	require.NoError(t, sc.Err())
	t.Fatal(`/metrics has no batchd_jobs_total{status="queued"}`)
	return 0
}

// logCount is how many lines of batchd's log have the message msg.
func logCount(logs *syncbuf.Buffer, msg string) int {
	n := 0
	for line := range strings.Lines(logs.String()) {
		var rec struct{ Msg string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

// waitLog waits, for at most 30 s, until batchd has logged one of msgs more often than before (the counts of
// logCount), and returns the message that was.
func waitLog(t *testing.T, logs *syncbuf.Buffer, before map[string]int) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for msg, n := range before {
			if logCount(logs, msg) > n {
				return msg
			}
		}
	}
	t.Fatalf("batchd logged none of %v within 30s:\n%s", before, logs.String())
	return ""
}

// logCounts is logCount of each msg.
func logCounts(logs *syncbuf.Buffer, msgs ...string) map[string]int {
	m := make(map[string]int, len(msgs))
	for _, msg := range msgs {
		m[msg] = logCount(logs, msg)
	}
	return m
}

// runBinary runs the batchctl binary with args; its stdout is a pipe, never a terminal.
func runBinary(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t, "batchctl"), args...)
	cmd.Env = append(os.Environ(), "BATCHD_SERVER=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	require.NoError(t, ctx.Err(), "batchctl %v did not end within 60s", args)
	return result{code, stdout.String(), stderr.String()}
}

// submitJob submits a job file with batchctl and returns the job's id.
func submitJob(t *testing.T, server, file string, args ...string) string {
	t.Helper()
	r := batchctl(t, "", nil, append(append([]string{"job", "submit", "-server", server}, args...), file)...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^[0-9a-f]{32}\n$`, r.stdout, "the id alone")
	return strings.TrimSuffix(r.stdout, "\n")
}

// endLine is the last line job watch writes for an ended job, from batchd's own state of it.
func endLine(s client.JobStatus) string {
	took := ""
	if s.Started != nil && s.Finished != nil {
		took = "; in " + s.Finished.Sub(*s.Started).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("job %s %s: %d/%d batches, %d failed; %d steps, %d failed%s", s.ID, s.Status,
		s.Batches.Done, s.Batches.Total, s.Batches.Failed, s.Steps.Done, s.Steps.Failed, took)
}

func sleepLines(n, ms int) string {
	return strings.Repeat(fmt.Sprintf(`[{"path":"Demo/Sleep","payload":{"ms":%d}}]`+"\n", ms), n)
}

const (
	addLine  = `{"requests":[{"key":"a","path":"Producer/Add","payload":{"name":"x"}}]}`
	echoLine = `[{"path":"Demo/Echo","body":{"q":1}}]`
)

// job submit prints the id alone; an Idempotency-Key makes a second submission the same job; each line of the
// file is a line of the job, so batchd's line numbers are the file's.
func TestJobSubmitE2E(t *testing.T) {
	server := startBatchd(t)
	file := writeFile(t, "jobs.ndjson", addLine+"\n"+echoLine+"\n")
	id := submitJob(t, server, file)
	code, body, s := getJob(t, server, id)
	require.Equal(t, http.StatusOK, code, "%s", body)
	assert.Equal(t, id, s.ID)
	assert.Equal(t, 2, s.Batches.Total)
	assert.Equal(t, 1, queuedJobs(t, server))

	r := batchctl(t, "", nil, "job", "submit", "-server", server, "-idempotency-key", "nightly-1", file)
	require.Equal(t, 0, r.code, r.stderr)
	keyed := strings.TrimSuffix(r.stdout, "\n")
	assert.NotEqual(t, id, keyed)
	assert.Equal(t, "batchctl: job "+keyed+" queued: 2 batches; follow it with: batchctl job watch "+keyed+"\n", r.stderr)
	r = batchctl(t, "", nil, "job", "submit", "-server", server, "-idempotency-key", "nightly-1", file)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, keyed+"\n", r.stdout, "the same key and body: the same job")
	assert.Regexp(t, `^batchctl: job `+keyed+` \(submitted before with this idempotency key\) (queued|running|done): 2 batches; `, r.stderr)
	assert.Equal(t, 2, queuedJobs(t, server), "the second submission with the key queued nothing")

	r = batchctl(t, "", nil, "job", "submit", "-server", server, "-idempotency-key", "nightly-1",
		writeFile(t, "other.ndjson", echoLine+"\n"))
	assert.Equal(t, 2, r.code)
	assert.Empty(t, r.stdout)
	assert.Contains(t, r.stderr, "batchctl: refused: batchd answered 422 (error 4220): this Idempotency-Key was used for a job with another body")
	assert.Equal(t, 2, queuedJobs(t, server))

	// A blank line inside the file is a line of the job, which batchd refuses by its number in the file.
	r = batchctl(t, "", nil, "job", "submit", "-server", server,
		writeFile(t, "blank.ndjson", echoLine+"\n\n"+echoLine+"\n \n"+"https://not-json\n"))
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "blank.ndjson line 5 is not one JSON value", "counted with the blank lines")
	r = batchctl(t, "", nil, "job", "submit", "-server", server,
		writeFile(t, "blank.ndjson", echoLine+"\n\n"+echoLine+"\n \n"+echoLine+"\n"))
	assert.Equal(t, 2, r.code)
	assert.Equal(t, "batchctl: refused: batchd answered 400 (error 4000): job refused: 2 bad lines; nothing was queued\n"+
		"  line 2 (no_steps): empty line: each line must hold one batch\n"+
		"  line 4 (no_steps): empty line: each line must hold one batch\n"+
		"  nothing was run; fix the problems above and try again\n", r.stderr)
	// Blank lines at the end are no lines.
	id = submitJob(t, server, writeFile(t, "trailing.ndjson", echoLine+"\r\n"+echoLine+"\n\n  \n"))
	_, _, s = getJob(t, server, id)
	assert.Equal(t, 2, s.Batches.Total)
	assert.Equal(t, 3, queuedJobs(t, server))
}

// A file with bad lines: exit 2, each bad line named with its step and reason, and no job. batchd may answer
// before it has read the upload whole (the 100th bad line, -job-max-body): its answer is what batchctl reports.
func TestJobSubmitBadLinesE2E(t *testing.T) {
	server := startBatchd(t, "-job-max-body", "1MiB")
	bad := writeFile(t, "bad.ndjson", addLine+"\n"+
		`{"requests":[{"key":"a","path":"https://evil.test/x"}]}`+"\n"+
		`{"requests":[{"key":"ok","path":"Demo/Echo"},{"key":"b","path":"Producer/Get","payload":{"ids":["${nope.result.id}"]}}]}`+"\n")
	r := batchctl(t, "", nil, "job", "submit", "-server", server, bad)
	assert.Equal(t, 2, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, "batchctl: refused: batchd answered 400 (error 4000): job refused: 2 bad lines; nothing was queued\n"+
		`  line 2, step a (invalid_path): path "https://evil.test/x" refused: ":" in the first segment (a scheme or absolute URL)`+"\n"+
		"  line 3, step b (unknown_ref): placeholder ${nope.result.id} names no step of this batch\n"+
		"  nothing was run; fix the problems above and try again\n", r.stderr)

	// 120 bad lines, then 6 MiB that batchd never reads: it stops at the 100th bad line and answers.
	var b strings.Builder
	for range 120 {
		b.WriteString(`{"requests":[{"key":"a","path":"https://evil.test/x"}]}` + "\n")
	}
	pad := strings.Repeat("x", 8<<10)
	for range 6 << 7 {
		b.WriteString(`[{"path":"Demo/Echo","body":{"pad":"` + pad + `"}}]` + "\n")
	}
	manyBad := writeFile(t, "many-bad.ndjson", b.String())
	tooLarge := writeFile(t, "too-large.ndjson", b.String()[120*len(`{"requests":[{"key":"a","path":"https://evil.test/x"}]}`+"\n"):])
	for range 3 { // the race between batchd's answer and the rest of the upload, run a few times
		r = batchctl(t, "", nil, "job", "submit", "-server", server, manyBad)
		assert.Equal(t, 2, r.code)
		assert.True(t, strings.HasPrefix(r.stderr, "batchctl: refused: batchd answered 400 (error 4000): job refused: "+
			"at least 100 bad lines (reading stopped at line 100); nothing was queued\n"), r.stderr)
		assert.Contains(t, r.stderr, "\n  line 100, step a (invalid_path): ")
		assert.NotContains(t, r.stderr, "line 101")

		r = batchctl(t, "", nil, "job", "submit", "-server", server, tooLarge)
		assert.Equal(t, 2, r.code)
		assert.Equal(t, "batchctl: refused: batchd answered 413 (error 4130): the job body exceeds 1048576 bytes "+
			"(-job-max-body); split it; nothing was queued\n", r.stderr)
	}
	assert.Equal(t, 0, queuedJobs(t, server))
}

// A job of CSV rows filled into a template: its results, one line per row in row order, each answer as batchd
// gives it, the row's values reaching the API as text.
func TestJobCSVResultsE2E(t *testing.T) {
	server := startBatchd(t)
	names := []string{"Acme", `Coca "Cola"`, "${x} a/b", "Über Straße", "$${y}", "comma, inside"}
	for i := range 30 {
		names = append(names, fmt.Sprintf("producer-%02d", i))
	}
	var rows bytes.Buffer
	w := csv.NewWriter(&rows)
	require.NoError(t, w.Write([]string{"name", "note"}))
	for i, n := range names {
		require.NoError(t, w.Write([]string{n, fmt.Sprintf("note %d", i)}))
	}
	w.Flush()
	require.NoError(t, w.Error())
	csvFile := writeFile(t, "producers.csv", rows.String())
	tmpl := writeFile(t, "producer.json", `{"requests": [
  {"key": "add", "path": "Producer/Add", "payload": {"name": "${row.name}"}},
  {"key": "get", "path": "Producer/Get", "payload": {"ids": ["${add.result.new_id}"]}},
  {"key": "note", "path": "Demo/Echo", "payload": {"note": "${row.note} of ${row.name}"}}
]}`)
	r := batchctl(t, "", nil, "job", "submit", "-server", server, "-csv", csvFile, "-template", tmpl)
	require.Equal(t, 0, r.code, r.stderr)
	id := strings.TrimSuffix(r.stdout, "\n")
	assert.Equal(t, "batchctl: job "+id+" queued: 36 batches; follow it with: batchctl job watch "+id+"\n", r.stderr)

	r = batchctl(t, "", nil, "job", "results", "-server", server, "-wait", id)
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, len(names))
	for i, line := range lines {
		var l struct {
			Line   int `json:"line"`
			Answer struct {
				Responses []struct {
					Key      string          `json:"key"`
					Status   int             `json:"status"`
					Response json.RawMessage `json:"response"`
				} `json:"responses"`
			} `json:"answer"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &l), line)
		assert.Equal(t, i+1, l.Line)
		require.Len(t, l.Answer.Responses, 3, line)
		var got struct {
			Result []struct{ Name string }
		}
		require.NoError(t, json.Unmarshal(l.Answer.Responses[1].Response, &got), line)
		require.Len(t, got.Result, 1, line)
		assert.Equal(t, names[i], got.Result[0].Name, "line %d", i+1)
		assert.JSONEq(t, fmt.Sprintf(`{"ok":true,"result":{"note":%q}}`, fmt.Sprintf("note %d of %s", i, names[i])),
			string(l.Answer.Responses[2].Response))
	}

	// The job has ended: batchd's own results and status are what batchctl printed.
	resp, err := http.Get(server + "/v1/jobs/" + id + "/results")
	require.NoError(t, err)
	theirs, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, string(theirs), r.stdout)
	_, body, s := getJob(t, server, id)
	assert.Equal(t, "done", s.Status)
	r = batchctl(t, "", nil, "job", "status", "-server", server, id)
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, string(body), r.stdout)
}

// An upload cut by a bad CSV row creates no job: batchd read the rows before it, and then no end of the body.
func TestJobUploadCutE2E(t *testing.T) {
	server, logs := startBatchdLogs(t)
	tmpl := writeFile(t, "t.json", `[{"path":"Producer/Add","payload":{"name":"${row.name}"}}]`)
	var csv strings.Builder
	csv.WriteString("name\n")
	for i := range 3000 { // far over batchctl's 64 KiB buffer: rows reach batchd before the bad one is read
		fmt.Fprintf(&csv, "producer-%05d-%s\n", i, strings.Repeat("x", 60))
	}
	good := csv.String()
	outcomes := []string{"job body not read", "job queued", "job refused"}
	before := logCounts(logs, outcomes...)
	r := batchctl(t, "", nil, "job", "submit", "-server", server, "-idempotency-key", "cut-1",
		"-csv", writeFile(t, "cut.csv", good+"one,two\n"), "-template", tmpl)
	assert.Equal(t, 2, r.code)
	assert.Equal(t, "batchctl: CSV row 3001: record on line 3002: wrong number of fields\n", r.stderr)
	assert.Empty(t, r.stdout)
	assert.Equal(t, "job body not read", waitLog(t, logs, before), "batchd read a body cut short:\n%s", logs.String())
	assert.Equal(t, 0, queuedJobs(t, server))
	assert.Equal(t, 0, logCount(logs, "job queued"))

	// The key names no job: the rows without the bad one are a new job, not a replay or a key used with another body.
	r = batchctl(t, "", nil, "job", "submit", "-server", server, "-idempotency-key", "cut-1",
		"-csv", writeFile(t, "good.csv", good), "-template", tmpl)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, " queued: 3000 batches;")
	assert.Equal(t, 1, queuedJobs(t, server))
}

// batchd creates no job from a body cut short at a line's end: every line came whole, but not the body's end.
func TestJobUploadCutAtLineEndE2E(t *testing.T) {
	server, logs := startBatchdLogs(t)
	addr := strings.TrimPrefix(server, "http://")
	lines := echoLine + "\n" + echoLine + "\n"
	for name, framing := range map[string]string{
		"chunked":        fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(lines), lines),
		"content-length": fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(lines)+len(echoLine)+1, lines),
	} {
		t.Run(name, func(t *testing.T) {
			before := logCounts(logs, "job body not read", "job queued", "job refused")
			queued := queuedJobs(t, server)
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			require.NoError(t, err)
			_, err = io.WriteString(conn, "POST /v1/jobs HTTP/1.1\r\nHost: "+addr+"\r\n"+
				"Content-Type: application/x-ndjson\r\nIdempotency-Key: cut-"+name+"\r\n"+framing)
			require.NoError(t, err)
			require.NoError(t, conn.Close())
			assert.Equal(t, "job body not read", waitLog(t, logs, before))
			assert.Equal(t, queued, queuedJobs(t, server))

			// The same lines, whole, with the same key: a new job, not a replay.
			req, err := http.NewRequest("POST", server+"/v1/jobs", strings.NewReader(lines))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Header.Set("Idempotency-Key", "cut-"+name)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusAccepted, resp.StatusCode)
			assert.Empty(t, resp.Header.Get("Idempotent-Replayed"))
			_ = waitLog(t, logs, map[string]int{"job queued": before["job queued"]})
			assert.Equal(t, 1, logCount(logs, "job queued")-before["job queued"])
		})
	}
}

// plainLine is a line job watch writes for a job that runs, in a pipe.
var plainLine = regexp.MustCompile(`^job ([0-9a-f]{32}) (queued|running): (\d+)/(\d+) batches \((\d+)%\), (\d+) failed(, \d+\.\d batches/s(, ETA \S+)?)?$`)

// job watch in a pipe writes plain lines until the job ends: exit 0 when no batch failed, 1 when some did.
func TestJobWatchPlainE2E(t *testing.T) {
	server := startBatchd(t, "-job-workers", "2")
	for _, tt := range []struct {
		name   string
		lines  string
		code   int
		failed int
	}{
		{name: "done", lines: sleepLines(8, 150), code: 0},
		{name: "some batches failed", code: 1, failed: 2, lines: sleepLines(4, 150) + `[{"path":"Demo/Fail"}]` + "\n" +
			`{"requests":[{"key":"ok","path":"Demo/Echo"},{"key":"bad","path":"Demo/Fail","payload":{"status":500}}]}` + "\n" +
			echoLine + "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := submitJob(t, server, writeFile(t, "job.ndjson", tt.lines))
			r := runBinary(t, "-server", server, "job", "watch", "-interval", "100ms", id)
			assert.Equal(t, tt.code, r.code, r.stderr)
			_, _, s := getJob(t, server, id)
			require.Equal(t, "done", s.Status)
			assert.Equal(t, tt.failed, s.Batches.Failed)

			require.True(t, strings.HasSuffix(r.stdout, "\n"), r.stdout)
			out := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			assert.Equal(t, endLine(s), out[len(out)-1])
			done := 0
			for _, line := range out[:len(out)-1] {
				m := plainLine.FindStringSubmatch(line)
				require.NotNil(t, m, "not a progress line: %q", line)
				assert.Equal(t, id, m[1])
				n, _ := strconv.Atoi(m[3])
				assert.GreaterOrEqual(t, n, done, "progress never goes back")
				done = n
				assert.Equal(t, strconv.Itoa(s.Batches.Total), m[4])
			}
			assert.NotContains(t, r.stdout, "\r", "no bar in a pipe")
			if tt.code == 0 {
				assert.Empty(t, r.stderr)
			} else {
				assert.Equal(t, fmt.Sprintf("batchctl: job %s: 2 of %d batches failed; read them with: batchctl job results %s\n",
					id, s.Batches.Total, id), r.stderr)
			}
		})
	}
}

// job watch on a terminal draws the bar of a real job, redrawn in place, and ends it at done.
func TestJobWatchTerminalE2E(t *testing.T) {
	server := startBatchd(t, "-job-workers", "1")
	bin := shellQuote(binary(t, "batchctl"))
	// 8 batches of 300 ms one after the other: the job runs for 2.4 s at least, and its watch starts right
	// after its submission, in the same shell.
	file := writeFile(t, "job.ndjson", sleepLines(8, 300))
	record := filepath.Join(t.TempDir(), "tty.out")
	term := newTerminal(t, "read go; ID=$("+bin+" -server "+server+" job submit "+shellQuote(file)+" 2>/dev/null) && "+
		"echo ID=$ID && "+bin+" -server "+server+" job watch -interval 100ms $ID")
	term.tmux("pipe-pane", "-t", "t", "-o", "cat > "+shellQuote(record)) // every byte the pane is sent
	term.tmux("send-keys", "-t", "t", "Enter")
	s := term.waitFor("EXIT=")
	t.Logf("screen at the end:\n%s", s)
	require.Contains(t, s, "EXIT=0")
	m := regexp.MustCompile(`ID=([0-9a-f]{32})`).FindStringSubmatch(s)
	require.NotNil(t, m)
	id := m[1]
	_, _, st := getJob(t, server, id)
	require.Equal(t, "done", st.Status)
	assert.Contains(t, s, "\n"+endLine(st)+"\n")
	bar := ""
	for line := range strings.Lines(s) {
		if strings.Contains(line, "job "+id+" done") && strings.Contains(line, "|") {
			bar = line
		}
	}
	assert.Regexp(t, `100% \|█{30}\| +job `+id+` done`, bar, "the bar, full, ends at done")

	// What the terminal was sent: the bar drawn while the job ran, redrawn in place (\r), then at done.
	var raw []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(record)
		require.NoError(t, err)
		if raw = b; bytes.Contains(raw, []byte("EXIT=0")) {
			break
		}
	}
	out := string(raw)
	running := strings.Index(out, "job "+id+" running: ")
	ended := strings.Index(out, "job "+id+" done")
	require.GreaterOrEqual(t, running, 0, "the bar of the running job:\n%q", out)
	assert.Less(t, running, ended)
	assert.Contains(t, out[running:ended], "\r", "redrawn in place")
	assert.Regexp(t, `\d+% \|[█ ]*\| +job `+id+` running: \d/8 batches`, out)
}

// job cancel, then job watch: exit 1, the job was cancelled; batches running at the cancel finish, the others
// never run.
func TestJobCancelE2E(t *testing.T) {
	server := startBatchd(t, "-job-workers", "1")
	// 30 batches of 1 s one after the other: the job runs for 30 s unless cancelled; it is cancelled at once.
	id := submitJob(t, server, writeFile(t, "sleep.ndjson", sleepLines(30, 1000)))

	r := batchctl(t, "", nil, "job", "cancel", "-server", server, id)
	require.Equal(t, 0, r.code, r.stderr)
	var atCancel client.JobStatus
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &atCancel), r.stdout)
	require.Equal(t, "cancelled", atCancel.Status, "cancelled before it ended: %s", r.stdout)
	assert.Less(t, atCancel.Batches.Done, 30)

	r = batchctl(t, "", nil, "job", "watch", "-server", server, "-interval", "100ms", id)
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "batchctl: job "+id+" was cancelled\n", r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, "job "+id+" cancelled: "), r.stdout)
	assert.Equal(t, 1, strings.Count(r.stdout, "\n"), "one line: the job had ended")

	// The batches of the worker at the cancel end (the one it ran and the one whose answer it was storing, if
	// any); the rest never run.
	body, s := waitJob(t, server, id, "no batch running", settled)
	assert.Equal(t, "cancelled", s.Status)
	assert.LessOrEqual(t, s.Batches.Done, atCancel.Batches.Done+2, "at most the worker's batches at the cancel ended after it")
	assert.Equal(t, 30-s.Batches.Done, s.Batches.Skipped)
	r = batchctl(t, "", nil, "job", "status", "-server", server, id)
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, string(body), r.stdout)
	r = batchctl(t, "", nil, "job", "results", "-server", server, "-wait", id)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, s.Batches.Done, strings.Count(r.stdout, "\n"), "one result per batch that ran:\n%s", r.stdout)

	// Cancelling again changes nothing.
	r = batchctl(t, "", nil, "job", "cancel", "-server", server, id)
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, string(body), r.stdout)
	r = runBinary(t, "-server", server, "job", "watch", id)
	assert.Equal(t, 1, r.code)
	assert.Equal(t, endLine(s)+"\n", r.stdout)
}

// An unknown job is batchd's 404: exit 2, with what to check.
func TestJobUnknownE2E(t *testing.T) {
	server := startBatchd(t)
	const id = "0123456789abcdef0123456789abcdef"
	code, body, _ := getJob(t, server, id)
	require.Equal(t, http.StatusNotFound, code, "%s", body)
	want := `batchctl: refused: batchd answered 404 (error 4040): no job "` + id + `": unknown, or its results expired` + "\n" +
		"  check the job ID (job submit prints it) and -server (" + server + "): a job is kept -job-results-ttl " +
		"after its last progress, and without -jobs-redis only by the batchd that took it\n"
	for _, cmd := range []string{"status", "watch", "results", "cancel"} {
		r := runBinary(t, "-server", server, "job", cmd, id)
		assert.Equal(t, 2, r.code, cmd)
		assert.Empty(t, r.stdout, cmd)
		assert.Equal(t, want, r.stderr, cmd)
	}
}

// run of a batch using the REST helpers: what batchctl prints is batchd's own JSON answer, and its exit status
// follows the failed count batchd reports.
func TestRunRESTHelpersE2E(t *testing.T) {
	server := startBatchd(t)
	r := batchctl(t, `{"requests": [
		{"key": "acme", "path": "Demo/Create", "payload": {"name": "Acme"}},
		{"key": "bolt", "path": "Demo/Create", "payload": {"name": "Bolt"}, "depends_on": ["acme"]},
		{"key": "read", "method": "GET", "path": "${bolt:headers.Location}"}]}`, nil, "run", "-server", server, "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"name": "Bolt"`)

	// Nothing below changes the demo's state: each batch answers the same every time it runs.
	helpers := `
		{"key": "one", "method": "GET", "path": "Demo/Producer?id=1", "capture_headers": ["ETag", "X-Absent"]},
		{"key": "page1", "method": "GET", "path": "Demo/Page?size=1"},
		{"key": "page2", "method": "GET", "path": "${page1.links.next}"},
		{"key": "greet", "path": "Demo/Echo", "for_each": "${page2.result}", "payload": {"hello": "${item.name}", "n": "${index}"}},
		{"key": "empty", "path": "Demo/Echo", "payload": {"list": []}},
		{"key": "none", "path": "Demo/Echo", "for_each": "${empty.result.list}", "payload": {"x": "${item}"}},
		{"key": "gone", "method": "DELETE", "path": "Demo/Producer?id=999", "ok_status": [404]},
		{"key": "then", "path": "Demo/Echo", "when": "${gone:status} == 404", "payload": {"was": "${gone:status}", "etag": "${one:headers.ETag}"}},
		{"key": "skipped", "path": "Demo/Echo", "when": "${gone:status} == 204"},
		{"key": "after", "path": "Demo/Echo", "depends_on": ["skipped"]}`
	for _, tt := range []struct {
		name, batch string
		code        int
	}{
		{name: "no step failed", code: 0, batch: `{"requests": [` + helpers + `]}`},
		{name: "some steps failed", code: 1, batch: `{"requests": [` + helpers + `,
			{"key": "missing", "method": "GET", "path": "Demo/Producer?id=998"},
			{"key": "each", "method": "GET", "path": "Demo/Producer?id=${item}", "for_each": "${empty.result.ids}"},
			{"key": "fans", "path": "Demo/Fail", "for_each": "${page1.result}", "payload": {"status": 409}}]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runBinary(t, "-server", server, "run", writeFile(t, "rest.json", tt.batch))

			resp, err := http.Post(server+"/v1/batch", "application/json", strings.NewReader(tt.batch))
			require.NoError(t, err)
			theirs, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", theirs)
			assert.JSONEq(t, string(theirs), r.stdout)

			req, err := http.NewRequest("POST", server+"/v1/batch", strings.NewReader(tt.batch))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/x-ndjson")
			resp, err = http.DefaultClient.Do(req)
			require.NoError(t, err)
			stream, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			lines := strings.Split(strings.TrimSuffix(string(stream), "\n"), "\n")
			var summary struct{ Steps, Failed int }
			require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &summary))
			assert.Equal(t, tt.code, min(summary.Failed, 1), "the batch fails as meant")

			assert.Equal(t, tt.code, r.code, r.stderr)
			assert.Equal(t, fmt.Sprintf("batchctl: %d steps, %d failed\n", summary.Steps, summary.Failed), r.stderr)
			for _, s := range []string{`"items": [`, `"headers": {`, `"ETag": "\"1-`, `"error": 2040`} {
				assert.Contains(t, r.stdout, s)
			}
		})
	}
}

package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The job commands against a loopback server of the jobs wire form: what they send and how they read the answers.
// The same commands against batchd's own jobs are end-to-end tests of their own.

// Each line of the file is a line of the job, a blank one included (batchd refuses it by its number, the file's);
// blank lines at the end are no lines.
func TestJobSubmitNDJSON(t *testing.T) {
	api, server := startJobsServer(t)
	ndjson := `{"requests": [{"key": "a", "path": "Demo/Echo"}]}` + "\r\n \n" + `[{"path": "Demo/Echo"}]` // no final newline
	r := batchctl(t, ndjson, nil, "job", "submit", "-server", server, "-idempotency-key", "nightly-1", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "j-1\n", r.stdout)
	assert.Equal(t, "batchctl: job j-1 queued: 3 batches; follow it with: batchctl job watch j-1\n", r.stderr)
	r = batchctl(t, "[1]\n\n\n[2]\n\n \r\n\n", nil, "job", "submit", "-server", server, "-")
	require.Equal(t, 0, r.code, r.stderr)
	uploads := api.settledUploads()
	require.Len(t, uploads, 2)
	u := uploads[0]
	assert.True(t, u.whole)
	assert.Equal(t, []string{`{"requests": [{"key": "a", "path": "Demo/Echo"}]}`, "", `[{"path": "Demo/Echo"}]`}, u.lines)
	assert.Equal(t, "application/x-ndjson", u.header.Get("Content-Type"))
	assert.Equal(t, "nightly-1", u.header.Get("Idempotency-Key"))
	assert.True(t, uploads[1].whole)
	assert.Equal(t, []string{"[1]", "", "", "[2]"}, uploads[1].lines)
}

// A file that is not NDJSON is refused before its end is sent: batchd gets no whole upload, so no job.
func TestJobSubmitNotNDJSON(t *testing.T) {
	api, server := startJobsServer(t)
	pretty := "{\"requests\": [\n  {\"key\": \"a\", \"path\": \"Demo/Echo\"}\n]}\n"
	r := batchctl(t, "", nil, "job", "submit", "-server", server, writeFile(t, "batch.json", pretty))
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "batch.json line 1 is not one JSON value: a job file holds one batch per line (NDJSON)")
	assert.Contains(t, r.stderr, "jq -c . FILE")
	assert.Empty(t, r.stdout)
	for _, u := range api.settledUploads() {
		assert.False(t, u.whole, "an upload cut short never ends cleanly")
	}
}

const producersCSV = "id,name\n1,Fanta\n2,\"Sprite \"\"zero\"\"\"\n3,${evil}\n"

const producerTemplate = `{"requests": [
  {"key": "add", "path": "Producer/Add", "payload": {"name": "${row.name}", "ref": "csv-${row.id}"}},
  {"key": "get", "path": "Producer/Get", "payload": {"ids": ["${add.result.new_id}"]}}
]}`

var producerLines = []string{
	`{"requests":[{"key":"add","path":"Producer/Add","payload":{"name":"Fanta","ref":"csv-1"}},{"key":"get","path":"Producer/Get","payload":{"ids":["${add.result.new_id}"]}}]}`,
	`{"requests":[{"key":"add","path":"Producer/Add","payload":{"name":"Sprite \"zero\"","ref":"csv-2"}},{"key":"get","path":"Producer/Get","payload":{"ids":["${add.result.new_id}"]}}]}`,
	`{"requests":[{"key":"add","path":"Producer/Add","payload":{"name":"$${evil}","ref":"csv-3"}},{"key":"get","path":"Producer/Get","payload":{"ids":["${add.result.new_id}"]}}]}`,
}

func TestJobSubmitCSV(t *testing.T) {
	api, server := startJobsServer(t)
	tmpl := writeFile(t, "producer.json", producerTemplate)

	r := batchctl(t, producersCSV, nil, "job", "submit", "-print", "-csv", "-", "-template", tmpl)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, strings.Join(producerLines, "\n")+"\n", r.stdout)
	api.mu.Lock()
	assert.Empty(t, api.uploads, "-print submits nothing")
	api.mu.Unlock()

	r = batchctl(t, "", nil, "job", "submit", "-server", server, "-csv", writeFile(t, "p.csv", producersCSV), "-template", tmpl)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "j-1\n", r.stdout)
	uploads := api.settledUploads()
	require.Len(t, uploads, 1)
	assert.True(t, uploads[0].whole)
	assert.Equal(t, producerLines, uploads[0].lines)

	// The template from standard input.
	r = batchctl(t, `["${row.id}"]`, nil, "job", "submit", "-print", "-template", "-", "-csv", writeFile(t, "p.csv", producersCSV))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "[\"1\"]\n[\"2\"]\n[\"3\"]\n", r.stdout)
}

// A bad row stops the upload: the rows before it were streamed already, but the body never ends cleanly, so batchd
// creates no job.
func TestJobSubmitCSVBadRow(t *testing.T) {
	api, server := startJobsServer(t)
	csv := "id,name\n1,a\n2,b\n3\n"
	r := batchctl(t, csv, nil, "job", "submit", "-server", server, "-csv", "-", "-template", writeFile(t, "t.json", producerTemplate))
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "batchctl: CSV row 3: record on line 4: wrong number of fields")
	assert.Empty(t, r.stdout)
	for _, u := range api.settledUploads() {
		assert.False(t, u.whole)
	}

	_, server = startJobsServer(t)
	r = batchctl(t, "id\n1\n", nil, "job", "submit", "-server", server, "-csv", "-", "-template", writeFile(t, "t.json", `["${row.email}"]`))
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, `${row.email} names no column of the CSV header; columns: "id"`)
}

func TestJobSubmitToAServerWithoutJobs(t *testing.T) {
	_, server := startJobsServer(t)
	r := batchctl(t, "[]\n", nil, "job", "submit", "-server", server+"/elsewhere", "-")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "batchd answered 404 (error 4040)")
	assert.Contains(t, r.stderr, "serve jobs (POST /v1/jobs)?")
}

func TestJobStatusResultsCancel(t *testing.T) {
	api, server := startJobsServer(t)
	api.seq = []string{jobStatus("running", 4, 2, 1)}
	r := batchctl(t, "", nil, "job", "status", "-server", server, "j-1")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"status": "running"`)
	assert.Contains(t, r.stdout, `"failed": 1`)

	api.results = `{"line":1,"answer":{"responses":[]}}` + "\n" + `{"line":2,"answer":[{"key":"0","status":200,"response":null}]}` + "\n"
	r = batchctl(t, "", nil, "job", "results", "-server", server, "-wait", "j-1")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, api.results, r.stdout)
	assert.Contains(t, api.requests, "GET /v1/jobs/j-1/results?wait=true")

	api.results = `{"line":1,"answer":{}}` + "\n" + `{"line":2,"ans`
	r = batchctl(t, "", nil, "job", "results", "-server", server, "j-1")
	assert.Equal(t, 3, r.code, "a stream cut short")
	assert.Equal(t, `{"line":1,"answer":{}}`+"\n", r.stdout)

	r = batchctl(t, "", nil, "job", "cancel", "-server", server, "j-1")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"status": "cancelled"`)

	r = batchctl(t, "", nil, "job", "status", "-server", server, "nope")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "batchd answered 404")
}

func TestJobWatchPlain(t *testing.T) {
	api, server := startJobsServer(t)
	api.seq = []string{jobStatus("queued", 4, 0, 0), jobStatus("running", 4, 1, 0), jobStatus("running", 4, 3, 1), jobStatus("done", 4, 4, 1)}
	r := batchctl(t, "", nil, "job", "watch", "-server", server, "-interval", "100ms", "j-1")
	assert.Equal(t, 1, r.code, "a batch failed")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 4, r.stdout)
	assert.Equal(t, "job j-1 queued: 0/4 batches (0%), 0 failed", lines[0])
	assert.Regexp(t, `^job j-1 running: 1/4 batches \(25%\), 0 failed, [0-9.]+ batches/s, ETA \S+$`, lines[1])
	assert.Regexp(t, `^job j-1 running: 3/4 batches \(75%\), 1 failed, [0-9.]+ batches/s`, lines[2])
	assert.Equal(t, "job j-1 done: 4/4 batches, 1 failed; 8 steps, 1 failed; in 41s", lines[3])
	assert.Contains(t, r.stderr, "job j-1: 1 of 4 batches failed; read them with: batchctl job results j-1")
	assert.NotContains(t, r.stdout, "\x1b", "no terminal codes in plain lines")

	api.mu.Lock()
	api.seq, api.polls = []string{jobStatus("done", 4, 4, 0)}, 0
	api.mu.Unlock()
	r = batchctl(t, "", nil, "job", "watch", "-server", server, "j-1")
	assert.Equal(t, 0, r.code, r.stderr)

	api.mu.Lock()
	api.seq, api.polls = []string{jobStatus("cancelled", 4, 2, 0)}, 0
	api.mu.Unlock()
	r = batchctl(t, "", nil, "job", "watch", "-server", server, "j-1")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "job j-1 was cancelled")
}

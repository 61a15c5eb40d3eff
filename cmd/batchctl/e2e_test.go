package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const planBatch = `{"requests": [
  {"key": "A", "path": "Producer/Add", "payload": {"name": "x"}},
  {"key": "B", "path": "Demo/Echo"},
  {"key": "C", "path": "Producer/Get", "payload": {"ids": ["${A.result.new_id}"]}, "depends_on": ["B"]},
  {"key": "D", "method": "GET", "path": "Demo/Echo/${C.result.0.id}"}
]}`

const planText = `level 0:  A  POST  Producer/Add
          B  POST  Demo/Echo
level 1:  C  POST  Producer/Get                ← A, B
level 2:  D  GET   Demo/Echo/${C.result.0.id}  ← C
critical path: A → C → D (3 levels, 4 steps)
`

func TestPlanEndToEnd(t *testing.T) {
	server := startBatchd(t)
	file := writeFile(t, "batch.json", planBatch)

	r := batchctl(t, "", nil, "-server", server, "plan", file)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, planText, r.stdout)

	r = batchctl(t, planBatch, nil, "plan", "-json", "-", "-server", server)
	require.Equal(t, 0, r.code, r.stderr)
	var p struct {
		Plan struct {
			Levels       int      `json:"levels"`
			CriticalPath []string `json:"critical_path"`
		} `json:"plan"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &p))
	assert.Equal(t, 3, p.Plan.Levels)
	assert.Equal(t, []string{"A", "C", "D"}, p.Plan.CriticalPath)

	// The dry run sent nothing: the first Producer/Add still gets id 1.
	r = batchctl(t, `[{"path": "Producer/Add", "body": {"name": "first"}}]`, nil, "-server", server, "run", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"new_id": 1`)

	r = batchctl(t, `{"requests": [{"key": "A", "path": "Demo/Echo", "depends_on": ["A"]}]}`, nil, "-server", server, "plan", "-")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "refused: batchd answered 400 (error 4000)")
	assert.Contains(t, r.stderr, "  step A (")
}

func TestRunEndToEnd(t *testing.T) {
	server := startBatchd(t)
	for _, tt := range []struct {
		name, batch string
		code        int
		stdout      []string
		stderr      []string
	}{
		{name: "every step succeeded", code: 0,
			batch:  `{"requests": [{"key": "add", "path": "Producer/Add", "payload": {"name": "Coca-Cola"}}, {"key": "get", "path": "Producer/Get", "payload": {"ids": ["${add.result.new_id}"]}}]}`,
			stdout: []string{`"key": "add"`, `"name": "Coca-Cola"`}, stderr: []string{"batchctl: 2 steps, 0 failed"}},
		{name: "a step failed", code: 1,
			batch:  `{"requests": [{"key": "ok", "path": "Demo/Echo"}, {"key": "bad", "path": "Demo/Fail", "payload": {"status": 409, "description": "taken"}}, {"key": "after", "path": "Demo/Echo", "depends_on": ["bad"]}]}`,
			stdout: []string{`"status": 409`, `"description": "taken"`, `"error": 4240`}, stderr: []string{"batchctl: 3 steps, 2 failed"}},
		{name: "a business failure with HTTP 200", code: 1,
			batch:  `[{"path": "Demo/Fail"}]`,
			stdout: []string{`"status": 200`, `"ok": false`}, stderr: []string{"1 step, 1 failed"}},
		{name: "refused with details", code: 2,
			batch: `{"requests": [{"key": "a", "path": "https://evil.test/x"}, {"key": "b", "path": "Producer/Get", "payload": {"ids": ["${nope.result.id}"]}}, {"key": "c", "path": "Item/Import"}]}`,
			stderr: []string{"refused: batchd answered 400 (error 4000): batch refused: 3 problems",
				`  step a (invalid_path): path "https://evil.test/x" refused`,
				"  step b (unknown_ref): placeholder ${nope.result.id} names no step of this batch",
				"  step c (blocked):", "nothing was run; fix the problems above"}},
		{name: "not JSON", code: 2, batch: "{\"requests\": [\n  {\"key\": \"a\",, }\n]}",
			stderr: []string{"standard input is not JSON: line 2: invalid character ','"}},
		{name: "a batch that asks for a dry run", code: 0, batch: `{"dry_run": true, "requests": [{"key": "a", "path": "Demo/Echo"}]}`,
			stdout: []string{"level 0:  a  POST  Demo/Echo\ncritical path: a (1 level, 1 step)\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := batchctl(t, tt.batch, nil, "run", "-server", server, "-")
			assert.Equal(t, tt.code, r.code, "stderr: %s", r.stderr)
			for _, s := range tt.stdout {
				assert.Contains(t, r.stdout, s)
			}
			for _, s := range tt.stderr {
				assert.Contains(t, r.stderr, s)
			}
			if tt.code == 2 {
				assert.Empty(t, r.stdout)
			}
		})
	}
}

// What run prints is batchd's own JSON answer, indented.
func TestRunPrintsBatchdsAnswer(t *testing.T) {
	server := startBatchd(t)
	batch := `{"atomic": true, "requests": [
		{"key": "a", "path": "Demo/Echo", "payload": {"x": [1, "two", null]}, "rollback": {"path": "Demo/Echo"}},
		{"key": "b", "path": "Demo/Fail", "payload": {"status": 500}, "depends_on": ["a"]}]}`
	r := batchctl(t, "", nil, "run", "-server", server, writeFile(t, "b.json", batch))
	require.Equal(t, 1, r.code, r.stderr)
	resp, err := http.Post(server+"/v1/batch", "application/json", strings.NewReader(batch))
	require.NoError(t, err)
	defer resp.Body.Close()
	theirs, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.JSONEq(t, string(theirs), r.stdout)
	assert.Contains(t, r.stdout, "\n  \"responses\": [\n", "indented")
}

func TestRunIdempotencyKey(t *testing.T) {
	server := startBatchd(t)
	file := writeFile(t, "b.json", `[{"path": "Producer/Add", "body": {"name": "once"}}]`)
	for range 2 {
		r := batchctl(t, "", nil, "run", "-server", server, "-idempotency-key", "k-1", file)
		require.Equal(t, 0, r.code, r.stderr)
		assert.Contains(t, r.stdout, `"new_id": 1`, "the retry replays the first answer")
	}
	r := batchctl(t, "", nil, "run", "-server", server, file)
	assert.Contains(t, r.stdout, `"new_id": 2`)
}

func TestServerFromEnvironment(t *testing.T) {
	server := startBatchd(t)
	r := batchctl(t, `[{"path": "Demo/Echo"}]`, []string{"BATCHD_SERVER=" + server}, "run", "-")
	assert.Equal(t, 0, r.code, r.stderr)
	r = batchctl(t, `[{"path": "Demo/Echo"}]`, []string{"BATCHD_SERVER=http://127.0.0.1:1"}, "run", "-", "-server", server)
	assert.Equal(t, 0, r.code, "-server wins over BATCHD_SERVER: %s", r.stderr)
}

func TestUnreachable(t *testing.T) {
	r := batchctl(t, `[{"path": "Demo/Echo"}]`, nil, "-server", "http://127.0.0.1:1", "run", "-")
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stderr, "cannot reach batchd at http://127.0.0.1:1")
	assert.Contains(t, r.stderr, "point -server or BATCHD_SERVER at it")
	r = batchctl(t, "", nil, "-server", "http://127.0.0.1:1", "job", "watch", "j-1")
	assert.Equal(t, 3, r.code)
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{args: nil, code: 2, stderr: "batchctl: a command is required\n\nbatchctl runs"},
		{args: []string{"-h"}, code: 0, stdout: "Examples:\n  batchctl run batch.json"},
		{args: []string{"help"}, code: 0, stdout: "Exit status:"},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"run"}, code: 2, stderr: "run takes one FILE"},
		{args: []string{"run", "a", "b"}, code: 2, stderr: "run takes one FILE"},
		{args: []string{"run", "-h"}, code: 0, stdout: "Usage: batchctl run"},
		{args: []string{"run", "-nope", "x"}, code: 2, stderr: "flag provided but not defined: -nope\n\nUsage: batchctl run"},
		{args: []string{"run", "/does/not/exist"}, code: 2, stderr: "cannot read /does/not/exist: no such file or directory"},
		{args: []string{"-server", "localhost:8080", "run", "-"}, code: 2, stderr: `must start with http:// or https://`},
		{args: []string{"plan"}, code: 2, stderr: "plan takes one FILE"},
		{args: []string{"job"}, code: 2, stderr: "job needs a subcommand"},
		{args: []string{"job", "-h"}, code: 0, stdout: "Subcommands:"},
		{args: []string{"job", "nope"}, code: 2, stderr: `unknown job subcommand "nope"`},
		{args: []string{"job", "submit"}, code: 2, stderr: "job submit takes one FILE"},
		{args: []string{"job", "submit", "-h"}, code: 0, stdout: "${row.COLUMN}"},
		{args: []string{"job", "submit", "-csv", "x.csv"}, code: 2, stderr: "-csv FILE and -template FILE go together"},
		{args: []string{"job", "submit", "-csv", "-", "-template", "-"}, code: 2, stderr: "cannot both read standard input"},
		{args: []string{"job", "watch"}, code: 2, stderr: "job watch takes one job ID"},
		{args: []string{"job", "watch", "-interval", "1ms", "x"}, code: 2, stderr: "-interval must be at least 100ms"},
		{args: []string{"job", "results", "a", "b"}, code: 2, stderr: "job results takes one job ID"},
		{args: []string{"job", "status"}, code: 2, stderr: "job status takes one job ID"},
		{args: []string{"job", "cancel", "-h"}, code: 0, stdout: "Usage: batchctl job cancel"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := batchctl(t, "", nil, tt.args...)
			assert.Equal(t, tt.code, r.code, "stderr: %s", r.stderr)
			if tt.stdout != "" {
				assert.Contains(t, r.stdout, tt.stdout)
			}
			if tt.stderr != "" {
				assert.Contains(t, r.stderr, tt.stderr)
			}
		})
	}
}

// The exit statuses through the real binary's os.Exit.
func TestBinaryExitStatus(t *testing.T) {
	server := startBatchd(t)
	for _, tt := range []struct {
		batch string
		code  int
	}{
		{`[{"path": "Demo/Echo"}]`, 0},
		{`[{"path": "Demo/Fail"}]`, 1},
		{`[{"path": "Item/Import"}]`, 2},
	} {
		cmd := exec.Command(binary(t, "batchctl"), "run", "-")
		cmd.Env = append(cmd.Environ(), "BATCHD_SERVER="+server)
		cmd.Stdin = strings.NewReader(tt.batch)
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		assert.Equal(t, tt.code, code, tt.batch)
	}
	cmd := exec.Command(binary(t, "batchctl"), "-server", "http://127.0.0.1:1", "plan", "-")
	cmd.Stdin = strings.NewReader(`[]`)
	var ee *exec.ExitError
	require.ErrorAs(t, cmd.Run(), &ee)
	assert.Equal(t, 3, ee.ExitCode())
}

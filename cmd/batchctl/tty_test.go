package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the batchctl binary on a real pseudo-terminal: a tmux session of its own (a server on a socket
// of its own, killed when the test ends), read back with capture-pane. tmux must be installed (CI installs it).

// terminal is one tmux session running one command.
type terminal struct {
	t      *testing.T
	socket string
}

// newTerminal runs shell command line in a fresh 160×40 tmux session whose pane stays after the command ends.
func newTerminal(t *testing.T, line string) *terminal {
	t.Helper()
	_, err := exec.LookPath("tmux")
	require.NoError(t, err, "tmux is needed to test batchctl on a terminal (apt-get install tmux)")
	term := &terminal{t: t, socket: fmt.Sprintf("batchctl-test-%d-%d", os.Getpid(), time.Now().UnixNano())}
	// The shell traps SIGINT (a trap, not an ignore, which the command would inherit) so that it outlives a Ctrl-C
	// sent to the command and reports its exit status.
	term.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "160", "-y", "40", "sh", "-c",
		"trap : INT; "+line+"; echo EXIT=$?; sleep 60")
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", term.socket, "kill-server").Run() })
	return term
}

func (term *terminal) tmux(args ...string) string {
	term.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", term.socket}, args...)...).CombinedOutput()
	require.NoError(term.t, err, "tmux %v: %s", args, out)
	return string(out)
}

// screen is the pane's text with its attributes as escape sequences (capture-pane -e).
func (term *terminal) screen() string { return term.tmux("capture-pane", "-p", "-e", "-t", "t") }

// waitFor polls the screen until it holds every want, for at most 30 s; it returns the screen.
func (term *terminal) waitFor(want ...string) string {
	term.t.Helper()
	var s string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		s = term.screen()
		missing := false
		for _, w := range want {
			missing = missing || !strings.Contains(s, w)
		}
		if !missing {
			return s
		}
	}
	term.t.Fatalf("the terminal did not show %q within 30s; it shows:\n%s", want, s)
	return ""
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// plan and run write the same plain text on a terminal as in a pipe: no colour or other terminal codes.
func TestTerminalPlanAndRun(t *testing.T) {
	server := startBatchd(t)
	bin := binary(t, "batchctl")
	file := writeFile(t, "batch.json", planBatch)

	term := newTerminal(t, shellQuote(bin)+" -server "+server+" plan "+shellQuote(file))
	s := term.waitFor("EXIT=0")
	assert.NotContains(t, s, "\x1b", "no terminal codes")
	assert.Contains(t, s, planText)

	failing := writeFile(t, "fail.json", `{"requests": [{"key": "ok", "path": "Demo/Echo"}, {"key": "bad", "path": "Demo/Fail"}]}`)
	term = newTerminal(t, shellQuote(bin)+" -server "+server+" run "+shellQuote(failing))
	s = term.waitFor("EXIT=1")
	assert.NotContains(t, s, "\x1b", "no terminal codes")
	assert.Contains(t, s, "      \"key\": \"bad\",\n      \"status\": 200,")
	assert.Contains(t, s, "batchctl: 2 steps, 1 failed")
}

// job watch draws a progress bar on a terminal, with the counts, rate and ETA, from a job's statuses.
func TestTerminalWatchBar(t *testing.T) {
	api, server := startJobsServer(t)
	api.mu.Lock() // batchctl runs in another process: the server's handlers read these under the lock
	api.seq = []string{
		jobStatus("running", 100, 0, 0), jobStatus("running", 100, 10, 0), jobStatus("running", 100, 25, 1),
		jobStatus("running", 100, 50, 2), jobStatus("done", 100, 100, 2),
	}
	api.holdAt, api.hold, api.held = 4, make(chan struct{}), make(chan struct{})
	held := api.held
	api.mu.Unlock()
	term := newTerminal(t, shellQuote(binary(t, "batchctl"))+" -server "+server+" job watch -interval 100ms j-1")

	select {
	case <-held: // the bar has drawn 50/100 and the next poll waits
	case <-time.After(30 * time.Second):
		t.Fatalf("batchctl did not poll five times within 30s:\n%s", term.screen())
	}
	s := term.waitFor("50/100 batches (50%), 2 failed, ", " batches/s, ETA ")
	t.Logf("screen while held:\n%s", s)
	bar := barLine(s)
	assert.Contains(t, bar, "50%")
	assert.Contains(t, bar, "|", "the bar's frame")
	assert.Contains(t, bar, "job j-1 running: 50/100 batches (50%), 2 failed, ")
	assert.Regexp(t, `[0-9.]+ batches/s, ETA [0-9hms]+`, bar)
	assert.Equal(t, 1, strings.Count(s, "batches/s"), "the bar is redrawn in place, not written line after line:\n%s", s)

	api.mu.Lock()
	close(api.hold)
	api.mu.Unlock()
	s = term.waitFor("EXIT=1")
	t.Logf("screen at the end:\n%s", s)
	assert.Contains(t, s, "job j-1 done: 100/100 batches, 2 failed; 200 steps, 2 failed; in 41s")
	assert.Contains(t, s, "100%")
	assert.Contains(t, s, "batchctl: job j-1: 2 of 100 batches failed")
}

// barLine is the screen's line that holds the bar.
func barLine(screen string) string {
	for line := range strings.Lines(screen) {
		if strings.Contains(line, "batches/s") {
			return line
		}
	}
	return ""
}

// Ctrl-C stops watching, not the job, and a second watch resumes from where the job is.
func TestTerminalWatchInterruptAndResume(t *testing.T) {
	api, server := startJobsServer(t)
	api.mu.Lock()
	api.seq = []string{jobStatus("running", 100, 10, 0), jobStatus("running", 100, 20, 0), jobStatus("running", 100, 30, 0)}
	api.holdAt, api.hold, api.held = 2, make(chan struct{}), make(chan struct{})
	held := api.held
	api.mu.Unlock()
	watch := shellQuote(binary(t, "batchctl")) + " -server " + server + " job watch -interval 100ms j-1"
	term := newTerminal(t, watch)
	select {
	case <-held: // the third poll waits: the job makes no progress
	case <-time.After(30 * time.Second):
		t.Fatalf("batchctl did not poll three times within 30s:\n%s", term.screen())
	}
	term.waitFor("20/100 batches (20%)")
	term.tmux("send-keys", "-t", "t", "C-c")
	s := term.waitFor("EXIT=130")
	assert.Contains(t, s, "batchctl: stopped watching job j-1; it goes on. Resume with: batchctl job watch j-1")
	assert.Contains(t, s, "batchctl: interrupted")

	// The job went on meanwhile; the next watch starts where it is, with no rate until it has seen progress.
	api.mu.Lock()
	close(api.hold)
	api.seq, api.polls, api.holdAt = []string{jobStatus("running", 100, 60, 0), jobStatus("done", 100, 100, 0)}, 0, -1
	api.mu.Unlock()
	term = newTerminal(t, watch)
	s = term.waitFor("EXIT=0")
	assert.Contains(t, s, "job j-1 done: 100/100 batches, 0 failed; 200 steps, 0 failed; in 41s")
}

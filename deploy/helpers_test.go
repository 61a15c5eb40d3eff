package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// repoRoot is the module root: go test runs in deploy/.
const repoRoot = ".."

// tool returns the path of an external program the test needs. Without it the test skips, except in CI
// (CI=true), where the program is installed and its absence is a failure.
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found on PATH, and CI=true: CI must install it (Debian: apt-get install prometheus)", name)
	}
	t.Skipf("%s not found on PATH: install it to run this test (Debian: apt-get install prometheus); "+
		"with CI=true its absence fails instead", name)
	return ""
}

// runTool runs a program and returns its combined output and whether it exited 0.
func runTool(t testing.TB, dir, name string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("running %s %v: %v", name, args, err)
		}
	}
	return out.String(), err == nil
}

func readFile(t testing.TB, path ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(path...))
	require.NoError(t, err)
	return b
}

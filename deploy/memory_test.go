package deploy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMemoryBudgetFitsUnderGOMEMLIMIT runs the binary built from the tree with the environment of the Kubernetes
// Deployment and of the compose service, and reads the configuration it logs at start: the memory budget it
// derives from their GOMEMLIMIT is 60 % of it, and what batchd holds by design (the budget of the batches in
// flight, the in-memory idempotency store, the GC ballast of half the heap floor) fits under GOMEMLIMIT, which
// itself sits below the container's limit (TestKubernetesManifests, TestCompose).
func TestMemoryBudgetFitsUnderGOMEMLIMIT(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts batchd")
	}
	bin := buildBatchd(t)

	m := loadManifests(t)
	k8sEnv := map[string]string{}
	for _, e := range m.deploy.Spec.Template.Spec.Containers[0].Env {
		k8sEnv[e.Name] = e.Value
	}
	for name, env := range map[string]map[string]string{
		"kubernetes/deployment.yaml": k8sEnv,
		"docker-compose.yml":         loadCompose(t).Services["batchd"].Environment,
	} {
		t.Run(name, func(t *testing.T) {
			require.NotEmpty(t, env["GOMEMLIMIT"])
			goLimit := parseGoMemLimit(t, env["GOMEMLIMIT"])
			rec := startupLine(t, bin, env)
			// batchd writes sizes as GOMEMLIMIT does: bytes, or a whole number of KiB, MiB or GiB.
			budget := parseGoMemLimit(t, rec.MemoryBudget)
			assert.InDelta(t, 0.6, float64(budget)/float64(goLimit), 0.001, "-memory-budget defaults to 60 %% of GOMEMLIMIT")
			held := budget + parseGoMemLimit(t, rec.Config["idempotency-max-bytes"]) + parseGoMemLimit(t, rec.Config["gc-heap-floor"])/2
			assert.Less(t, held, goLimit, "budget %d + idempotency store %s + ballast under GOMEMLIMIT %d",
				budget, rec.Config["idempotency-max-bytes"], goLimit)
		})
	}
}

type startup struct {
	Msg          string            `json:"msg"`
	MemoryBudget string            `json:"memory_budget"`
	Config       map[string]string `json:"config"`
}

// startupLine starts bin on loopback with env (and nothing of this process's BATCHD_ or GOMEMLIMIT variables), and
// returns its "listening" log line.
func startupLine(t *testing.T, bin string, env map[string]string) startup {
	t.Helper()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0", "-log-format", "json", "-drain-delay", "0")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATCHD_") && !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, "GOGC=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		if k != "BATCHD_ADDR" && k != "BATCHD_METRICS_ADDR" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan startup, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec startup
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				lines <- rec
			}
		}
		close(lines)
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			assert.NoError(t, err, "batchd exits 0 on SIGTERM")
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("batchd did not exit within 30s of SIGTERM")
		}
	}()
	select {
	case rec, ok := <-lines:
		require.True(t, ok, "batchd exited without listening")
		return rec
	case <-time.After(30 * time.Second):
		t.Fatal("batchd did not log its listening line within 30s")
	}
	return startup{}
}

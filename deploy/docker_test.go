package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper case
	Args string
}

func parseDockerfile(t testing.TB, data []byte) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)})
		cur.Reset()
	}
	require.Zero(t, cur.Len(), "a continuation line ends the file")
	return out
}

// stages splits the instructions at each FROM.
func stages(ins []instruction) [][]instruction {
	var out [][]instruction
	for _, in := range ins {
		if in.Cmd == "FROM" {
			out = append(out, nil)
		}
		if len(out) > 0 {
			out[len(out)-1] = append(out[len(out)-1], in)
		}
	}
	return out
}

// dockerfileUser is the numeric user the final image runs as.
func dockerfileUser(t testing.TB) int64 {
	t.Helper()
	st := stages(parseDockerfile(t, readFile(t, "Dockerfile")))
	require.NotEmpty(t, st)
	user := ""
	for _, in := range st[len(st)-1] {
		if in.Cmd == "USER" {
			user = in.Args
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	n, err := strconv.ParseInt(uid, 10, 64)
	require.NoError(t, err, "USER must be numeric (%q) so that Kubernetes' runAsNonRoot can verify it", user)
	return n
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, readFile(t, "Dockerfile"))
	st := stages(ins)
	require.GreaterOrEqual(t, len(st), 2, "multi-stage: a build stage and a minimal final stage")

	for _, in := range ins {
		assert.NotEqual(t, "HEALTHCHECK", in.Cmd, "no HEALTHCHECK: Kubernetes probes /healthz and /readyz")
		assert.NotEqual(t, "ADD", in.Cmd, "COPY, not ADD")
	}

	build := st[0]
	from := strings.Fields(build[0].Args)
	require.Len(t, from, 3, "FROM image AS name")
	assert.True(t, strings.EqualFold(from[1], "AS"))
	buildName := from[2]
	// The builder's Go is the module's Go (major.minor), so the image builds what go.mod says.
	image := from[0]
	goMod := string(readFile(t, repoRoot, "go.mod"))
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	require.NotNil(t, m)
	assert.True(t, strings.HasPrefix(image, "golang:"+m[1]), "builder %s for go %s", image, m[1])

	var buildCmd string
	for _, in := range build {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			buildCmd = in.Args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/batchd",
		"-ldflags=\"-s -w -X main.version=${VERSION} -X main.revision=${REVISION}\""} {
		assert.Contains(t, buildCmd, want)
	}
	args := map[string]bool{}
	for _, in := range build {
		if in.Cmd == "ARG" {
			name, _, _ := strings.Cut(in.Args, "=")
			args[name] = true
		}
	}
	assert.True(t, args["VERSION"] && args["REVISION"], "the build stage takes VERSION and REVISION (make image passes them)")
	info, err := os.Stat(filepath.Join(repoRoot, "cmd", "batchd"))
	require.NoError(t, err, "the Dockerfile builds ./cmd/batchd")
	assert.True(t, info.IsDir())

	final := st[len(st)-1]
	base := strings.Fields(final[0].Args)[0]
	assert.Regexp(t, `^(gcr\.io/distroless/static(-debian\d+)?(:nonroot)?|scratch)$`, base, "a minimal base for a static binary")
	var copied, exposed, entry bool
	for _, in := range final {
		switch in.Cmd {
		case "COPY":
			copied = copied || strings.Contains(in.Args, "--from="+buildName)
		case "EXPOSE":
			exposed = exposed || in.Args == "8080"
		case "ENTRYPOINT":
			entry = strings.HasPrefix(in.Args, "[") // exec form: the binary is PID 1 and gets SIGTERM
		case "RUN":
			t.Errorf("the final stage runs nothing (no shell in distroless): RUN %s", in.Args)
		}
	}
	assert.True(t, copied, "the final stage copies the binary from the build stage")
	assert.True(t, exposed, "EXPOSE 8080")
	assert.True(t, entry, "ENTRYPOINT in exec form")
	assert.NotZero(t, dockerfileUser(t), "USER is not root")
}

// compose is the part of docker-compose.yml the tests read.
type compose struct {
	Name     string `json:"name"`
	Services map[string]struct {
		Image string `json:"image"`
		Build *struct {
			Context    string            `json:"context"`
			Dockerfile string            `json:"dockerfile"`
			Args       map[string]string `json:"args"`
		} `json:"build"`
		Command         []string          `json:"command"`
		Environment     map[string]string `json:"environment"`
		Ports           []string          `json:"ports"`
		Volumes         []string          `json:"volumes"`
		DependsOn       []string          `json:"depends_on"`
		ReadOnly        bool              `json:"read_only"`
		CapDrop         []string          `json:"cap_drop"`
		SecurityOpt     []string          `json:"security_opt"`
		StopGracePeriod string            `json:"stop_grace_period"`
		MemLimit        string            `json:"mem_limit"`
		Restart         string            `json:"restart"`
	} `json:"services"`
	Volumes map[string]any `json:"volumes"`
}

func loadCompose(t testing.TB) compose {
	t.Helper()
	var c compose
	require.NoError(t, yaml.UnmarshalStrict(readFile(t, "docker-compose.yml"), &c),
		"docker-compose.yml holds a field this test does not know: add it to the compose type")
	return c
}

func TestCompose(t *testing.T) {
	c := loadCompose(t)
	for _, s := range []string{"batchd", "prometheus", "grafana"} {
		require.Contains(t, c.Services, s)
	}

	b := c.Services["batchd"]
	require.NotNil(t, b.Build)
	_, err := os.Stat(filepath.Join(b.Build.Context, b.Build.Dockerfile))
	require.NoError(t, err, "the build context and Dockerfile exist")
	assert.Equal(t, "..", b.Build.Context, "the build context is the module root")
	assert.True(t, b.ReadOnly)
	grace, err := time.ParseDuration(b.StopGracePeriod)
	require.NoError(t, err)
	batchTimeout, err := time.ParseDuration(b.Environment["BATCHD_BATCH_TIMEOUT"])
	require.NoError(t, err)
	drainDelay, err := time.ParseDuration(b.Environment["BATCHD_DRAIN_DELAY"])
	require.NoError(t, err)
	assert.Greater(t, grace, drainDelay+batchTimeout+10*time.Second, "stop_grace_period lets the batches in flight finish")
	assert.Equal(t, "${VERSION:-devel}", b.Build.Args["VERSION"], "the version reaches the image (make compose sets it)")
	assert.Equal(t, "${REVISION:-unknown}", b.Build.Args["REVISION"])

	// GOMEMLIMIT is about 90 % of the container's memory limit.
	memLimit := regexp.MustCompile(`^(\d+)m$`).FindStringSubmatch(b.MemLimit)
	require.NotNil(t, memLimit, "mem_limit %q: write it in m (MiB)", b.MemLimit)
	limit, err := strconv.ParseInt(memLimit[1], 10, 64)
	require.NoError(t, err)
	assert.InDelta(t, 0.9, float64(parseGoMemLimit(t, b.Environment["GOMEMLIMIT"]))/float64(limit<<20), 0.03)

	// The metrics listener is published on loopback only.
	assert.Contains(t, b.Ports, "127.0.0.1:8081:8081")
	assert.Equal(t, ":8081", b.Environment["BATCHD_METRICS_ADDR"])

	// Every bind-mounted file or directory exists, and every named volume is declared.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, rest, ok := strings.Cut(v, ":")
			require.True(t, ok, "%s: volume %q", name, v)
			require.True(t, strings.HasPrefix(rest, "/"), "%s: volume %q mounts at an absolute path", name, v)
			if strings.HasPrefix(src, ".") {
				_, err := os.Stat(src)
				assert.NoError(t, err, "%s mounts %s", name, src)
			} else {
				assert.Contains(t, c.Volumes, src, "%s: named volume %s is declared", name, src)
			}
		}
		for _, dep := range s.DependsOn {
			assert.Contains(t, c.Services, dep, "%s depends on an unknown service", name)
		}
	}

	// Prometheus reads the config and rules where prometheus.yml expects them, and scrapes the batchd service
	// on the port of its metrics listener.
	p := c.Services["prometheus"]
	assert.Contains(t, p.Command, "--config.file=/etc/prometheus/prometheus.yml")
	assert.Contains(t, p.Volumes, "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro")
	assert.Contains(t, p.Volumes, "./prometheus/rules.yml:/etc/prometheus/rules.yml:ro")
	var promCfg struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(readFile(t, "prometheus", "prometheus.yml"), &promCfg))
	assert.Equal(t, []string{"rules.yml"}, promCfg.RuleFiles)
	found := false
	for _, sc := range promCfg.ScrapeConfigs {
		if sc.JobName == "batchd" {
			found = true
			require.Len(t, sc.StaticConfigs, 1)
			assert.Equal(t, []string{"batchd" + b.Environment["BATCHD_METRICS_ADDR"]}, sc.StaticConfigs[0].Targets,
				"Prometheus scrapes batchd's metrics listener")
		}
	}
	assert.True(t, found, "a scrape job named batchd (the rules select job=\"batchd\")")
}

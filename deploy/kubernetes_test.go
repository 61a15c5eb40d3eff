package deploy_test

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// serviceMonitor mirrors the fields of monitoring.coreos.com/v1 ServiceMonitor that servicemonitor.yaml uses
// (k8s.io/api has no type for it); decoding strictly into it refuses any other field.
type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// decodeStrict decodes one YAML manifest into obj, refusing unknown fields, duplicate fields, wrong types and more
// than one document, and checks its apiVersion and kind.
func decodeStrict(t testing.TB, data []byte, obj any, apiVersion, kind string) error {
	t.Helper()
	if bytes.Contains(append([]byte("\n"), data...), []byte("\n---")) {
		return errString("one manifest per file, please")
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		return err
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		return err
	}
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		return errString("got " + tm.APIVersion + " " + tm.Kind + ", want " + apiVersion + " " + kind)
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }

type manifests struct {
	deploy  appsv1.Deployment
	service corev1.Service
	hpa     autoscalingv2.HorizontalPodAutoscaler
	pdb     policyv1.PodDisruptionBudget
	sm      serviceMonitor
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{}
	for _, f := range []struct {
		file             string
		obj              any
		apiVersion, kind string
	}{
		{"deployment.yaml", &m.deploy, "apps/v1", "Deployment"},
		{"service.yaml", &m.service, "v1", "Service"},
		{"hpa.yaml", &m.hpa, "autoscaling/v2", "HorizontalPodAutoscaler"},
		{"pdb.yaml", &m.pdb, "policy/v1", "PodDisruptionBudget"},
		{"servicemonitor.yaml", &m.sm, "monitoring.coreos.com/v1", "ServiceMonitor"},
	} {
		require.NoError(t, decodeStrict(t, readFile(t, "kubernetes", f.file), f.obj, f.apiVersion, f.kind), f.file)
	}
	// Every file of the directory is one of the above.
	entries, err := os.ReadDir("kubernetes")
	require.NoError(t, err)
	for _, e := range entries {
		assert.Contains(t, []string{"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "servicemonitor.yaml"},
			e.Name(), "a manifest this test does not decode")
	}
	return m
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	d := &m.deploy
	pod := &d.Spec.Template.Spec
	podLabels := labels.Set(d.Spec.Template.Labels)

	t.Run("deployment selector matches its pods", func(t *testing.T) {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		require.NoError(t, err)
		assert.False(t, sel.Empty())
		assert.True(t, sel.Matches(podLabels))
		assert.Nil(t, d.Spec.Replicas, "the HPA owns the replica count; apply must not reset it")
	})

	require.Len(t, pod.Containers, 1)
	c := &pod.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}

	t.Run("probes", func(t *testing.T) {
		require.NotNil(t, c.ReadinessProbe)
		require.NotNil(t, c.LivenessProbe)
		require.NotNil(t, c.ReadinessProbe.HTTPGet)
		require.NotNil(t, c.LivenessProbe.HTTPGet)
		assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
		assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			assert.Equal(t, "http", pr.HTTPGet.Port.String(), "probes go to the public port, where /readyz is")
		}
		assert.Equal(t, int32(8080), ports["http"])
		assert.Contains(t, c.Args, "-addr=:8080")
		assert.Equal(t, int32(8081), ports["metrics"])
		assert.Contains(t, c.Args, "-metrics-addr=:8081", "the metrics port is where batchd serves /metrics")
	})

	t.Run("GOMEMLIMIT is about 90 % of the memory limit", func(t *testing.T) {
		limit := c.Resources.Limits.Memory().Value()
		goLimit := parseGoMemLimit(t, env["GOMEMLIMIT"])
		assert.InDelta(t, 0.9, float64(goLimit)/float64(limit), 0.03,
			"GOMEMLIMIT %d of a %d limit: below it, so that the GC acts before the OOM killer; near it, so that memory is used", goLimit, limit)
	})

	t.Run("graceful termination outlasts the batch timeout", func(t *testing.T) {
		batchTimeout := 60 * time.Second // batchd's default
		if v := env["BATCHD_BATCH_TIMEOUT"]; v != "" {
			var err error
			batchTimeout, err = time.ParseDuration(v)
			require.NoError(t, err)
		}
		drainDelay := 5 * time.Second // batchd's default
		if v := env["BATCHD_DRAIN_DELAY"]; v != "" {
			var err error
			drainDelay, err = time.ParseDuration(v)
			require.NoError(t, err)
		}
		var preStop time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		require.NotNil(t, pod.TerminationGracePeriodSeconds)
		grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		// The server's own shutdown allows -batch-timeout plus 10s; leave 5s more before SIGKILL.
		assert.Greater(t, grace, preStop+drainDelay+batchTimeout+15*time.Second,
			"terminationGracePeriodSeconds must exceed preStop (%v) + -drain-delay (%v) + -batch-timeout (%v) + 15s",
			preStop, drainDelay, batchTimeout)
	})

	t.Run("security context", func(t *testing.T) {
		require.NotNil(t, pod.SecurityContext)
		require.NotNil(t, pod.SecurityContext.RunAsNonRoot)
		assert.True(t, *pod.SecurityContext.RunAsNonRoot)
		require.NotNil(t, pod.SecurityContext.SeccompProfile)
		assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type)
		require.NotNil(t, pod.AutomountServiceAccountToken)
		assert.False(t, *pod.AutomountServiceAccountToken)
		sc := c.SecurityContext
		require.NotNil(t, sc)
		require.NotNil(t, sc.RunAsNonRoot)
		assert.True(t, *sc.RunAsNonRoot)
		require.NotNil(t, sc.ReadOnlyRootFilesystem)
		assert.True(t, *sc.ReadOnlyRootFilesystem)
		require.NotNil(t, sc.AllowPrivilegeEscalation)
		assert.False(t, *sc.AllowPrivilegeEscalation)
		require.NotNil(t, sc.Capabilities)
		assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
		require.NotNil(t, pod.SecurityContext.RunAsUser)
		assert.NotZero(t, *pod.SecurityContext.RunAsUser)
		assert.Equal(t, dockerfileUser(t), *pod.SecurityContext.RunAsUser, "the pod runs as the image's USER")
	})

	t.Run("resources", func(t *testing.T) {
		req, lim := c.Resources.Requests, c.Resources.Limits
		assert.False(t, req.Cpu().IsZero(), "cpu request (the HPA's utilisation is relative to it)")
		assert.False(t, req.Memory().IsZero(), "memory request")
		assert.False(t, lim.Memory().IsZero(), "memory limit")
		assert.GreaterOrEqual(t, lim.Memory().Cmp(*req.Memory()), 0, "limit ≥ request")
	})

	t.Run("service selects the pods and targets the http and metrics ports", func(t *testing.T) {
		s := &m.service
		require.NotEmpty(t, s.Spec.Selector)
		assert.True(t, labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels))
		require.Len(t, s.Spec.Ports, 2)
		for _, p := range s.Spec.Ports {
			assert.Contains(t, []string{"http", "metrics"}, p.Name)
			assert.Equal(t, p.Name, p.TargetPort.String(), "the Service port targets the container port of its name")
		}
		assert.Equal(t, "batchd", s.Name, "the job label of the targets, which rules.yml selects")
	})

	t.Run("hpa scales the deployment on cpu", func(t *testing.T) {
		h := &m.hpa
		assert.Equal(t, "Deployment", h.Spec.ScaleTargetRef.Kind)
		assert.Equal(t, "apps/v1", h.Spec.ScaleTargetRef.APIVersion)
		assert.Equal(t, d.Name, h.Spec.ScaleTargetRef.Name)
		require.NotNil(t, h.Spec.MinReplicas)
		assert.GreaterOrEqual(t, *h.Spec.MinReplicas, int32(2), "two replicas survive a node drain")
		assert.Greater(t, h.Spec.MaxReplicas, *h.Spec.MinReplicas)
		require.Len(t, h.Spec.Metrics, 1)
		require.NotNil(t, h.Spec.Metrics[0].Resource)
		assert.Equal(t, corev1.ResourceCPU, h.Spec.Metrics[0].Resource.Name)
	})

	t.Run("pdb covers the pods and allows a drain", func(t *testing.T) {
		p := &m.pdb
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		require.NoError(t, err)
		assert.True(t, sel.Matches(podLabels))
		require.NotNil(t, p.Spec.MaxUnavailable, "maxUnavailable, so that a drain can always make progress")
		assert.Positive(t, p.Spec.MaxUnavailable.IntValue())
	})

	t.Run("servicemonitor scrapes the service's metrics port", func(t *testing.T) {
		sm := &m.sm
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		require.NoError(t, err)
		assert.True(t, sel.Matches(labels.Set(m.service.Labels)))
		require.Len(t, sm.Spec.Endpoints, 1)
		ep := sm.Spec.Endpoints[0]
		assert.Equal(t, "metrics", ep.Port, "with -metrics-addr the public port serves no /metrics")
		assert.Equal(t, "/metrics", ep.Path)
		iv, err := time.ParseDuration(ep.Interval)
		require.NoError(t, err)
		st, err := time.ParseDuration(ep.ScrapeTimeout)
		require.NoError(t, err)
		assert.Less(t, st, iv)
		assert.Empty(t, sm.Spec.JobLabel, "the job label stays the Service name")
	})

	t.Run("no latest tag", func(t *testing.T) {
		assert.False(t, strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":"), c.Image)
	})
}

// TestStrictDecodingCatchesMistakes proves decodeStrict fails on the mistakes a lenient decoder would let through.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	good := readFile(t, "kubernetes", "deployment.yaml")
	var d appsv1.Deployment
	require.NoError(t, decodeStrict(t, good, &d, "apps/v1", "Deployment"))

	for name, mutate := range map[string]func(string) string{
		"unknown field": func(s string) string {
			return strings.Replace(s, "imagePullPolicy:", "imagePulPolicy:", 1)
		},
		"wrong type": func(s string) string {
			return strings.Replace(s, "terminationGracePeriodSeconds: 90", `terminationGracePeriodSeconds: "90"`, 1)
		},
		"bad quantity": func(s string) string { return strings.Replace(s, "memory: 64Mi", "memory: 64 megs", 1) },
		"duplicate field": func(s string) string {
			return strings.Replace(s, "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  revisionHistoryLimit: 6\n", 1)
		},
		"wrong kind":    func(s string) string { return strings.Replace(s, "kind: Deployment", "kind: StatefulSet", 1) },
		"two documents": func(s string) string { return s + "\n---\n" + s },
		"field at the wrong level": func(s string) string {
			return strings.Replace(s, "              path: /readyz\n              port: http", "            path: /readyz\n            port: http", 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			bad := mutate(string(good))
			require.NotEqual(t, string(good), bad, "the mutation must apply")
			var d appsv1.Deployment
			assert.Error(t, decodeStrict(t, []byte(bad), &d, "apps/v1", "Deployment"))
		})
	}

	var sm serviceMonitor
	bad := strings.Replace(string(readFile(t, "kubernetes", "servicemonitor.yaml")), "interval:", "intervall:", 1)
	assert.Error(t, decodeStrict(t, []byte(bad), &sm, "monitoring.coreos.com/v1", "ServiceMonitor"))
}

// parseGoMemLimit reads a GOMEMLIMIT value as the Go runtime does: a number of bytes with an optional unit B, KiB,
// MiB, GiB or TiB.
func parseGoMemLimit(t testing.TB, v string) int64 {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(v)
	require.NotNil(t, m, "GOMEMLIMIT %q: a number of bytes with an optional unit (B, KiB, MiB, GiB, TiB)", v)
	n, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	return n << map[string]int{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
}

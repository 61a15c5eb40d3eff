package deploy_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// TestPromtoolCheckConfig checks prometheus.yml, and through its rule_files the rules, as Prometheus would load them.
func TestPromtoolCheckConfig(t *testing.T) {
	promtool := tool(t, "promtool")
	out, ok := runTool(t, "prometheus", promtool, "check", "config", "prometheus.yml")
	if !ok {
		t.Fatalf("promtool check config prometheus.yml:\n%s", out)
	}
}

// TestPromtoolCheckRules checks the rules' syntax, PromQL and templates.
func TestPromtoolCheckRules(t *testing.T) {
	promtool := tool(t, "promtool")
	out, ok := runTool(t, "prometheus", promtool, "check", "rules", "rules.yml")
	if !ok {
		t.Fatalf("promtool check rules rules.yml:\n%s", out)
	}
}

// TestPromtoolTestRules runs the alert unit tests: each alert fires on its symptom, with the expected labels and
// rendered annotations, and stays quiet on a healthy input.
func TestPromtoolTestRules(t *testing.T) {
	promtool := tool(t, "promtool")
	out, ok := runTool(t, "prometheus", promtool, "test", "rules", "rules_test.yml")
	if !ok {
		t.Fatalf("promtool test rules rules_test.yml:\n%s", out)
	}
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Record      string            `json:"record"`
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// ruleTestFile is the part of a promtool unit test file the tests read.
type ruleTestFile struct {
	Tests []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			Alertname string           `json:"alertname"`
			ExpAlerts []map[string]any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
		PromqlExprTest []struct {
			Expr string `json:"expr"`
		} `json:"promql_expr_test"`
	} `json:"tests"`
}

func loadRules(t testing.TB) ruleFile {
	t.Helper()
	var rf ruleFile
	require.NoError(t, yaml.Unmarshal(readFile(t, "prometheus", "rules.yml"), &rf))
	return rf
}

func loadRuleTests(t testing.TB) ruleTestFile {
	t.Helper()
	var tf ruleTestFile
	require.NoError(t, yaml.Unmarshal(readFile(t, "prometheus", "rules_test.yml"), &tf))
	return tf
}

// TestEveryAlertIsDocumentedAndTested: each alert has a severity, a summary, a description and runbook text, and
// rules_test.yml holds a case where it fires and one where it stays quiet.
func TestEveryAlertIsDocumentedAndTested(t *testing.T) {
	rf := loadRules(t)
	tf := loadRuleTests(t)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			assert.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], "%s: severity", r.Alert)
			for _, a := range []string{"summary", "description", "runbook"} {
				assert.NotEmpty(t, strings.TrimSpace(r.Annotations[a]), "%s: annotation %s", r.Alert, a)
			}
			assert.Greater(t, len(r.Annotations["runbook"]), 200, "%s: the runbook says what to do", r.Alert)
			assert.True(t, fires[r.Alert], "%s: no test case where it fires", r.Alert)
			assert.True(t, quiet[r.Alert], "%s: no test case where it stays quiet", r.Alert)
		}
	}
	for _, want := range []string{"BatchdDown", "BatchdUpstreamFailing", "BatchdHighClientErrorRatio", "BatchdStepTimeouts",
		"BatchdHighBatchLatencyP99", "BatchdBatchesRejected", "BatchdRollbackFailed", "BatchdOverloaded",
		"BatchdIdempotencyStoreDown"} {
		assert.True(t, alerts[want], "alert %s missing", want)
	}
	for name := range fires {
		assert.True(t, alerts[name], "rules_test.yml tests an alert rules.yml does not define: %s", name)
	}
}

package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/batchd/batchd/metrics"
)

// promExpr is one PromQL expression found in a deployment file, with where it was found.
type promExpr struct {
	Where string
	Expr  string
}

// ruleExprs returns every expression of rules.yml, and of the promql_expr_test cases of rules_test.yml.
func ruleExprs(t testing.TB) []promExpr {
	var out []promExpr
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			out = append(out, promExpr{Where: "rules.yml: " + r.Record + r.Alert, Expr: r.Expr})
		}
	}
	for _, tc := range loadRuleTests(t).Tests {
		for _, pt := range tc.PromqlExprTest {
			out = append(out, promExpr{Where: "rules_test.yml: " + tc.Name, Expr: pt.Expr})
		}
	}
	return out
}

// recordedNames are the series the recording rules create.
func recordedNames(t testing.TB) map[string]bool {
	names := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				names[r.Record] = true
			}
		}
	}
	return names
}

// knownSeries returns every series name a batchd scrape yields (the registry of metrics.New on metrics.NewRegistry,
// histograms and summaries as their _bucket, _sum and _count series), the series Prometheus adds to each scrape
// and for alerts, and the recording rules' names. A histogram's bare name is deliberately absent: the rules and
// dashboard read classic histograms, and the bare name only exists when native histograms are ingested.
func knownSeries(t testing.TB) map[string]bool {
	t.Helper()
	reg := metrics.NewRegistry()
	_, err := metrics.New(reg, metrics.Config{})
	require.NoError(t, err)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	known := map[string]bool{
		"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true,
		"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
		"ALERTS": true, "ALERTS_FOR_STATE": true,
	}
	for _, mf := range mfs {
		n := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			known[n+"_bucket"], known[n+"_sum"], known[n+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			known[n], known[n+"_sum"], known[n+"_count"] = true, true, true
		default:
			known[n] = true
		}
	}
	for n := range recordedNames(t) {
		known[n] = true
	}
	return known
}

// checkExprs parses every expression with promtool (as recording rules of a scratch rule file: promtool check
// rules runs Prometheus' own parser on each) and checks that each names only known series. It returns one
// problem per failure, naming where the expression came from.
func checkExprs(t testing.TB, promtool string, exprs []promExpr, known map[string]bool) []string {
	t.Helper()
	var problems []string
	for _, pe := range exprs {
		if strings.TrimSpace(pe.Expr) == "" {
			problems = append(problems, pe.Where+": empty expression")
			continue
		}
		if strings.Contains(pe.Expr, "__name__") {
			problems = append(problems, pe.Where+": selects by __name__, which this check cannot follow")
		}
		for _, n := range metricNames(pe.Expr) {
			if !known[n] {
				problems = append(problems, fmt.Sprintf("%s: names %s, which batchd does not export and no rule records", pe.Where, n))
			}
		}
	}
	if bad := unparsable(t, promtool, exprs); len(bad) > 0 {
		problems = append(problems, bad...)
	}
	return problems
}

// unparsable runs promtool check rules over all expressions at once and, when that fails, over each alone to name
// the culprits.
func unparsable(t testing.TB, promtool string, exprs []promExpr) []string {
	t.Helper()
	if _, ok := promtoolParse(t, promtool, exprs); ok {
		return nil
	}
	var bad []string
	for _, pe := range exprs {
		if out, ok := promtoolParse(t, promtool, []promExpr{pe}); !ok {
			bad = append(bad, fmt.Sprintf("%s: promtool cannot parse %q:\n%s", pe.Where, pe.Expr, out))
		}
	}
	if len(bad) == 0 {
		t.Fatal("promtool rejected the expressions together but accepted each alone")
	}
	return bad
}

func promtoolParse(t testing.TB, promtool string, exprs []promExpr) (string, bool) {
	t.Helper()
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, pe := range exprs {
		rules = append(rules, rule{Record: fmt.Sprintf("check:expr_%d", i), Expr: pe.Expr})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "check", "rules": rules}}})
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "exprs.yml")
	require.NoError(t, os.WriteFile(f, b, 0o644))
	return runTool(t, "", promtool, "check", "rules", f)
}

var (
	// PromQL string literals: "…", '…' and `…`.
	promString  = regexp.MustCompile("\"(?:\\\\.|[^\"\\\\])*\"|'(?:\\\\.|[^'\\\\])*'|`[^`]*`")
	promComment = regexp.MustCompile(`#[^\n]*`)
	// Label matchers, ranges and subqueries hold label names and durations, never series names.
	promBraces   = regexp.MustCompile(`\{[^{}]*\}`)
	promBrackets = regexp.MustCompile(`\[[^\[\]]*\]`)
	// Label lists of grouping and vector matching.
	promGrouping = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent    = regexp.MustCompile(`^[A-Za-z_:][A-Za-z0-9_:]*`)
	promNumber   = regexp.MustCompile(`^(?i:0x[0-9a-f]+|[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?[a-z0-9]*)`)
)

// promKeywords are identifiers that are not series names when not followed by "(": aggregators (which may be
// followed by "by"/"without"), binary and modifier keywords, and the literals Inf and NaN.
var promKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "count_values": true, "stddev": true,
	"stdvar": true, "topk": true, "bottomk": true, "quantile": true, "group": true, "limitk": true,
	"limit_ratio": true, "inf": true, "nan": true, "start": true, "end": true,
}

// metricNames returns the series names an expression selects, sorted and unique. It is a tokenizer, not a parser
// (promtool checks the syntax): strings, comments, label matchers, ranges and grouping label lists are removed;
// of the identifiers left, a function or aggregator is followed by "(", a keyword is in promKeywords, and every
// other identifier is a series name.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promComment.ReplaceAllString(s, " ")
	s = promBraces.ReplaceAllString(s, "{}")
	s = promBrackets.ReplaceAllString(s, "[]")
	s = promGrouping.ReplaceAllString(s, "$1 ")
	seen := map[string]bool{}
	for i := 0; i < len(s); {
		rest := s[i:]
		c := rest[0]
		if c >= '0' && c <= '9' || c == '.' && len(rest) > 1 && rest[1] >= '0' && rest[1] <= '9' {
			n := promNumber.FindString(rest)
			if n == "" {
				n = rest[:1]
			}
			i += len(n)
			continue
		}
		id := promIdent.FindString(rest)
		if id == "" {
			i++
			continue
		}
		i += len(id)
		next := strings.TrimLeft(s[i:], " \t\r\n")
		if strings.HasPrefix(next, "(") || promKeywords[strings.ToLower(id)] {
			continue
		}
		seen[id] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func TestMetricNamesTokenizer(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job="batchd"} == 0`, []string{"up"}},
		{`sum by (job, le) (rate(batchd_batch_duration_seconds_bucket{job="batchd", outcome!="rejected"}[5m]))`,
			[]string{"batchd_batch_duration_seconds_bucket"}},
		{`histogram_quantile(0.99, sum without (instance) (rate(a_bucket[1m:10s] offset 5m)))`, []string{"a_bucket"}},
		{`a / ignoring (reason) group_left sum by (job) (b)`, []string{"a", "b"}},
		{`x:y:rate5m > 0.05 and on (job) z > 1e-3 or vector(1)`, []string{"x:y:rate5m", "z"}},
		{`SUM BY (job) (rate(m_total{name="sum(by)"}[5m])) # comment names_nothing`, []string{"m_total"}},
		{`absent(up{job="batchd"}) unless bool Inf > NaN`, []string{"up"}},
		{`count_values("le", foo) + topk(3, bar) + quantile(0.5, baz)`, []string{"bar", "baz", "foo"}},
		{`max(process_max_fds{instance=~".+"}) - .5 * 0x1F`, []string{"process_max_fds"}},
	} {
		assert.Equal(t, tc.want, metricNames(tc.expr), tc.expr)
	}
}

// TestRuleExpressions: every expression of rules.yml parses and names only series batchd or the rules produce.
func TestRuleExpressions(t *testing.T) {
	promtool := tool(t, "promtool")
	exprs := ruleExprs(t)
	require.NotEmpty(t, exprs)
	for _, p := range checkExprs(t, promtool, exprs, knownSeries(t)) {
		t.Error(p)
	}
}

// TestDashboardExpressions: every query of the dashboard, panels and variables, parses once Grafana's variables
// are substituted and names only series batchd or the rules produce.
func TestDashboardExpressions(t *testing.T) {
	promtool := tool(t, "promtool")
	d := loadDashboard(t, readFile(t, "grafana", "batchd.json"))
	exprs, problems := dashboardExprs(d)
	require.Empty(t, problems)
	require.Greater(t, len(exprs), 30)
	for _, p := range checkExprs(t, promtool, exprs, knownSeries(t)) {
		t.Error(p)
	}
}

// TestExpressionCheckerCatchesMistakes proves the checks above can fail: an unknown series, a bare histogram name
// and an expression promtool cannot parse are each reported, and a sound expression is not.
func TestExpressionCheckerCatchesMistakes(t *testing.T) {
	promtool := tool(t, "promtool")
	problems := checkExprs(t, promtool, []promExpr{
		{Where: "good", Expr: `sum(rate(batchd_step_timeouts_total[5m])) / sum(batchd:steps_executed:rate5m)`},
		{Where: "unknown", Expr: `sum(rate(batchd_steps_timed_out_total[5m]))`},
		{Where: "bare", Expr: `histogram_quantile(0.99, rate(batchd_step_duration_seconds[5m]))`},
		{Where: "unparsable", Expr: `sum(rate(batchd_step_timeouts_total[5m])`},
		{Where: "badfunc", Expr: `rat(batchd_step_timeouts_total[5m])`},
	}, knownSeries(t))
	joined := strings.Join(problems, "\n")
	assert.Contains(t, joined, "unknown: names batchd_steps_timed_out_total")
	assert.Contains(t, joined, "bare: names batchd_step_duration_seconds,")
	assert.Contains(t, joined, "unparsable: promtool cannot parse")
	assert.Contains(t, joined, "badfunc: promtool cannot parse")
	assert.NotContains(t, joined, "good:")
	assert.Len(t, problems, 4, joined)
}

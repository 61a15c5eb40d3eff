package deploy_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// dashboard is the part of a Grafana dashboard JSON model the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"` // a string, or {"query": "…"} for query variables
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasourceRef           `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t testing.TB, raw []byte) dashboard {
	t.Helper()
	var d dashboard
	require.NoError(t, json.Unmarshal(raw, &d), "the dashboard is not valid JSON of the expected shape")
	return d
}

// allPanels flattens rows' nested panels.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// panelsWithUnit are the panel types that show numbers and must say in what unit.
var panelsWithUnit = map[string]bool{"timeseries": true, "stat": true, "gauge": true, "bargauge": true}

// checkDashboard returns every structural problem of a dashboard: identity, unique panel ids, a Prometheus
// datasource variable that every panel and query uses, a unit on every numeric panel, non-overlapping panels,
// and queries present with unique refIds.
func checkDashboard(d dashboard) []string {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if d.UID == "" || d.Title == "" {
		add("dashboard: uid and title are required")
	}
	if d.SchemaVersion < 36 {
		add("dashboard: schemaVersion %d predates datasource references by uid (36)", d.SchemaVersion)
	}

	dsVar := ""
	for _, v := range d.Templating.List {
		var q string
		_ = json.Unmarshal(v.Query, &q)
		if v.Type == "datasource" && q == "prometheus" {
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		add("dashboard: no templated datasource variable of type prometheus")
	}
	dsOK := func(ds *datasourceRef) bool {
		return ds != nil && ds.Type == "prometheus" && dsVar != "" && (ds.UID == "${"+dsVar+"}" || ds.UID == "$"+dsVar)
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && !dsOK(v.Datasource) {
			add("variable %s: datasource must be the %q variable", v.Name, dsVar)
		}
	}

	ids := map[int]string{}
	panels := d.allPanels()
	if len(panels) == 0 {
		add("dashboard: no panels")
	}
	for _, p := range panels {
		name := fmt.Sprintf("panel %d (%s)", p.ID, p.Title)
		if p.ID <= 0 {
			add("%s: id must be positive", name)
		} else if other, dup := ids[p.ID]; dup {
			add("%s: id already used by %q", name, other)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			add("%s: no title", name)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			add("%s: gridPos %+v outside the 24-column grid", name, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if !dsOK(p.Datasource) {
			add("%s: datasource must be {type: prometheus, uid: ${%s}}", name, dsVar)
		}
		if panelsWithUnit[p.Type] && p.FieldConfig.Defaults.Unit == "" {
			add("%s: %s panel without a unit", name, p.Type)
		}
		if len(p.Targets) == 0 {
			add("%s: no query", name)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				add("%s: refId %q missing or repeated", name, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && !dsOK(tg.Datasource) {
				add("%s query %s: datasource must be ${%s}", name, tg.RefID, dsVar)
			}
		}
	}
	// Panels of the top level must not overlap (Grafana would move them, silently changing the layout).
	for i, a := range d.Panels {
		for _, b := range d.Panels[i+1:] {
			if a.GridPos.X < b.GridPos.X+b.GridPos.W && b.GridPos.X < a.GridPos.X+a.GridPos.W &&
				a.GridPos.Y < b.GridPos.Y+b.GridPos.H && b.GridPos.Y < a.GridPos.Y+a.GridPos.H {
				add("panels %d and %d overlap", a.ID, b.ID)
			}
		}
	}
	return problems
}

var (
	grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::[\w]+)?\}|\$(\w+)`)
	// label_values(selector, label) and query_result(expr): the PromQL inside Grafana's variable query functions.
	labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*\w+\s*\)\s*$`)
	queryResult = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
)

// substituteGrafanaVars replaces Grafana's variables by values of the right PromQL type: interval variables by
// durations, dashboard variables (used inside label matchers) by a regex.
func substituteGrafanaVars(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__interval_ms", "__range_ms", "__range_s":
			return "300000"
		default:
			return ".+"
		}
	})
}

// dashboardExprs returns every PromQL expression of the dashboard with Grafana's variables substituted: panel
// queries, and the selectors inside variable queries.
func dashboardExprs(d dashboard) ([]promExpr, []string) {
	var exprs []promExpr
	var problems []string
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			exprs = append(exprs, promExpr{
				Where: fmt.Sprintf("batchd.json: panel %d (%s) query %s", p.ID, p.Title, tg.RefID),
				Expr:  substituteGrafanaVars(tg.Expr),
			})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // the older string form
		}
		inner := ""
		if m := labelValues.FindStringSubmatch(q.Query); m != nil {
			inner = m[1]
		} else if m := queryResult.FindStringSubmatch(q.Query); m != nil {
			inner = m[1]
		} else {
			problems = append(problems, fmt.Sprintf("variable %s: query %q is neither label_values(selector, label) nor query_result(expr)", v.Name, q.Query))
			continue
		}
		exprs = append(exprs, promExpr{Where: "batchd.json: variable " + v.Name, Expr: substituteGrafanaVars(inner)})
	}
	for _, e := range exprs {
		if strings.Contains(e.Expr, "$") {
			problems = append(problems, e.Where+": a Grafana variable this test does not know: "+e.Expr)
		}
	}
	return exprs, problems
}

func TestDashboardStructure(t *testing.T) {
	raw := readFile(t, "grafana", "batchd.json")
	require.True(t, json.Valid(raw))
	d := loadDashboard(t, raw)
	for _, p := range checkDashboard(d) {
		t.Error(p)
	}
	// The dashboard covers what the operating guide promises: RED for batches and steps, timeouts, in-flight work,
	// batch shape, rejections, upstream errors, upstream failures told from client errors by status class and
	// verb, versions running, budgets and memory, rollbacks, idempotency, Go runtime.
	var all strings.Builder
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			all.WriteString(tg.Expr + "\n")
		}
	}
	for _, want := range []string{
		"batchd_batch_duration_seconds_count", "batchd_batch_duration_seconds_bucket", "batchd_step_duration_seconds_count",
		"batchd_step_duration_seconds_bucket", "batchd_step_timeouts_total", "batchd_batches_in_flight",
		"batchd_steps_in_flight", "batchd_batch_steps_bucket", "batchd_batch_depth_bucket", "batchd_batches_rejected_total",
		"batchd_upstream_errors_total", "go_goroutines", "process_cpu_seconds_total",
		"batchd_steps_total", "status_class", "verb", "batchd_build_info", "batchd_rollbacks_total",
		"batchd_idempotency_total", "batchd_budget_bytes_in_use", "go_gc_gomemlimit_bytes",
		"histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,",
	} {
		assert.Contains(t, all.String(), want)
	}
}

// TestDashboardCheckerCatchesMistakes proves checkDashboard can fail, on a copy of the dashboard broken on purpose.
func TestDashboardCheckerCatchesMistakes(t *testing.T) {
	var m map[string]any
	require.NoError(t, json.Unmarshal(readFile(t, "grafana", "batchd.json"), &m))
	panels := m["panels"].([]any)
	var series []map[string]any
	for _, p := range panels {
		if pm := p.(map[string]any); pm["type"] == "timeseries" {
			series = append(series, pm)
		}
	}
	require.GreaterOrEqual(t, len(series), 3)
	series[1]["id"] = series[0]["id"]
	delete(series[1]["fieldConfig"].(map[string]any)["defaults"].(map[string]any), "unit")
	series[2]["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
	m["templating"] = map[string]any{"list": []any{}}
	raw, err := json.Marshal(m)
	require.NoError(t, err)

	problems := strings.Join(checkDashboard(loadDashboard(t, raw)), "\n")
	assert.Contains(t, problems, "id already used")
	assert.Contains(t, problems, "timeseries panel without a unit")
	assert.Contains(t, problems, "no templated datasource variable")
	assert.Contains(t, problems, "datasource must be")
}

// TestGrafanaProvisioning: the compose provisioning files are valid YAML of the expected shape, point the
// datasource at the compose Prometheus service, and load dashboards from where compose mounts batchd.json.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string         `json:"name"`
			UID       string         `json:"uid"`
			Type      string         `json:"type"`
			Access    string         `json:"access"`
			URL       string         `json:"url"`
			IsDefault bool           `json:"isDefault"`
			Editable  bool           `json:"editable"`
			JSONData  map[string]any `json:"jsonData"`
		} `json:"datasources"`
	}
	require.NoError(t, yaml.UnmarshalStrict(readFile(t, "grafana", "provisioning", "datasources", "prometheus.yml"), &ds))
	require.Len(t, ds.Datasources, 1)
	assert.Equal(t, 1, ds.APIVersion)
	assert.Equal(t, "prometheus", ds.Datasources[0].Type)
	assert.Equal(t, "http://prometheus:9090", ds.Datasources[0].URL)

	var prov struct {
		APIVersion int `json:"apiVersion"`
		Providers  []struct {
			Name                  string `json:"name"`
			Folder                string `json:"folder"`
			Type                  string `json:"type"`
			DisableDeletion       bool   `json:"disableDeletion"`
			AllowUIUpdates        bool   `json:"allowUiUpdates"`
			UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `json:"path"`
				FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
			} `json:"options"`
		} `json:"providers"`
	}
	require.NoError(t, yaml.UnmarshalStrict(readFile(t, "grafana", "provisioning", "dashboards", "batchd.yml"), &prov))
	require.Len(t, prov.Providers, 1)
	assert.Equal(t, "file", prov.Providers[0].Type)

	c := loadCompose(t)
	mounted := false
	for _, v := range c.Services["grafana"].Volumes {
		src, dst, _ := strings.Cut(strings.TrimSuffix(v, ":ro"), ":")
		if src == "./grafana/batchd.json" && strings.HasPrefix(dst, prov.Providers[0].Options.Path+"/") {
			mounted = true
		}
	}
	assert.True(t, mounted, "compose must mount grafana/batchd.json under the provider path %s", prov.Providers[0].Options.Path)
	_, ok := c.Services["prometheus"]
	assert.True(t, ok, "the datasource URL names a compose service prometheus")
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// reporter prints the run: text and markdown stream one table per scenario as it finishes, json prints one document
// at the end.
type reporter interface {
	header(runInfo)
	scenario(scenarioResult)
	footer([]scenarioResult)
}

func newReporter(format string, w io.Writer) reporter {
	switch format {
	case "markdown":
		return &mdReporter{w: w}
	case "json":
		return &jsonReporter{w: w}
	default:
		return &textReporter{w: w}
	}
}

var tableHeader = []string{"mode", "clients", "measured (+warm-up)", "p50", "p99", "mean", "batches/s", "steps/s", "errors", "upstream calls/batch"}

func tableRow(p phaseResult) []string {
	errs := fmt.Sprint(p.Errors)
	if p.Aborted {
		errs += " (cut short)"
	}
	return []string{
		p.Mode,
		fmt.Sprint(p.Clients),
		fmt.Sprintf("%d (+%d)", p.Measured, p.Warmup),
		fmtMS(p.Lat.P50),
		fmtMS(p.Lat.P99),
		fmtMS(p.Lat.Mean),
		fmt.Sprintf("%.1f", p.Throughput),
		fmt.Sprintf("%.0f", p.StepsPerSecond()),
		errs,
		describeCalls(p.Upstream),
	}
}

// describeCalls renders what the upstream counted, with a verdict.
func describeCalls(c *callCheck) string {
	switch {
	case c == nil:
		return "n/a (demo API)"
	case c.OK() && c.MinPerGroup >= 0:
		return fmt.Sprintf("%d ✓", c.PerGroup)
	case c.OK() && c.CountedWith != "":
		return fmt.Sprintf("%d ✓ (%d calls / %d, with %s)", c.PerGroup, c.Total, c.Expected/max(c.PerGroup, 1), c.CountedWith)
	case c.OK():
		return fmt.Sprintf("%d ✓ (%d calls / %d)", c.PerGroup, c.Total, c.Expected/max(c.PerGroup, 1))
	}
	var parts []string
	if c.MinPerGroup >= 0 && (c.MinPerGroup != c.PerGroup || c.MaxPerGroup != c.PerGroup) {
		parts = append(parts, fmt.Sprintf("%d–%d per batch", c.MinPerGroup, c.MaxPerGroup))
	}
	if c.Total != c.Expected {
		parts = append(parts, fmt.Sprintf("%d calls in all, want %d", c.Total, c.Expected))
	}
	if c.Bad > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected (last: %s)", c.Bad, c.LastBad))
	}
	return fmt.Sprintf("want %d ✗ FAIL: %s", c.PerGroup, strings.Join(parts, "; "))
}

func verdictLine(res scenarioResult) string {
	if len(res.Failures) > 0 {
		return "CHECK FAILED: " + strings.Join(res.Failures, "; ")
	}
	return "checks: 0 errors, upstream calls exact"
}

func (i runInfo) machine() string {
	m := fmt.Sprintf("nproc %d, GOMAXPROCS %d, %s, %s", i.NProc, i.GoMaxProc, i.GoVersion, i.Platform)
	if i.LoadAvg != "" {
		m += ", load average " + i.LoadAvg + " at the start"
	}
	return m
}

type textReporter struct{ w io.Writer }

func (r *textReporter) header(i runInfo) {
	fmt.Fprintf(r.w, "batchload %s\ncommand: %s\ncommit:  %s\nbatchd:  %s\nmachine: %s\nsettings: %s\n",
		i.Date, i.Command, i.Commit, i.Batchd, i.machine(), strings.Join(i.Settings, "; "))
}

func (r *textReporter) scenario(res scenarioResult) {
	fmt.Fprintf(r.w, "\n== %s: %s\n", res.Name, res.Title)
	tw := tabwriter.NewWriter(r.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t"))
	for _, p := range res.Rows {
		fmt.Fprintln(tw, strings.Join(tableRow(p), "\t"))
	}
	_ = tw.Flush()
	for _, t := range res.Targets {
		fmt.Fprintln(r.w, "target:", t)
	}
	fmt.Fprintln(r.w, verdictLine(res))
	for _, n := range res.Notes {
		fmt.Fprintln(r.w, "note:", n)
	}
}

func (r *textReporter) footer(results []scenarioResult) {
	fmt.Fprintln(r.w)
	for _, res := range results {
		for _, t := range res.Targets {
			fmt.Fprintf(r.w, "%-7s %s  %s (%.3f%s)\n", res.Name, passFail(t.Pass), t.Desc, t.Value, t.Unit)
		}
		if len(res.Failures) > 0 {
			fmt.Fprintf(r.w, "%-7s CHECK FAILED\n", res.Name)
		}
	}
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

type mdReporter struct{ w io.Writer }

func (r *mdReporter) header(i runInfo) {
	fmt.Fprintf(r.w, "## batchload run, %s\n\n", i.Date)
	fmt.Fprintf(r.w, "- command: `%s`\n", i.Command)
	fmt.Fprintf(r.w, "- commit: `%s`\n", i.Commit)
	fmt.Fprintf(r.w, "- batchd: %s\n", i.Batchd)
	fmt.Fprintf(r.w, "- machine: %s\n", i.machine())
	for _, s := range i.Settings {
		fmt.Fprintf(r.w, "- %s\n", s)
	}
}

func (r *mdReporter) scenario(res scenarioResult) {
	fmt.Fprintf(r.w, "\n### %s: %s\n\n", res.Name, res.Title)
	fmt.Fprintf(r.w, "| %s |\n", strings.Join(tableHeader, " | "))
	fmt.Fprintf(r.w, "|%s\n", strings.Repeat("---|", len(tableHeader)))
	for _, p := range res.Rows {
		cells := tableRow(p)
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintf(r.w, "| %s |\n", strings.Join(cells, " | "))
	}
	fmt.Fprintln(r.w)
	for _, t := range res.Targets {
		fmt.Fprintf(r.w, "- target: %s — **%s**\n", t.line(), passFail(t.Pass))
	}
	fmt.Fprintf(r.w, "- %s\n", verdictLine(res))
	for _, n := range res.Notes {
		fmt.Fprintf(r.w, "- %s\n", n)
	}
}

func (r *mdReporter) footer(results []scenarioResult) {
	if len(results) == 0 {
		return
	}
	fmt.Fprint(r.w, "\n### Summary\n\n| scenario | target | value | verdict |\n|---|---|---|---|\n")
	for _, res := range results {
		for _, t := range res.Targets {
			fmt.Fprintf(r.w, "| %s | %s | %.3f%s | %s |\n", res.Name, t.Desc, t.Value, t.Unit, passFail(t.Pass))
		}
		if len(res.Failures) > 0 {
			fmt.Fprintf(r.w, "| %s | checks (0 errors, exact upstream calls) | | CHECK FAILED |\n", res.Name)
		}
	}
}

type jsonReporter struct {
	w    io.Writer
	info runInfo
}

func (r *jsonReporter) header(i runInfo)        { r.info = i }
func (r *jsonReporter) scenario(scenarioResult) {}
func (r *jsonReporter) footer(results []scenarioResult) {
	enc := json.NewEncoder(r.w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(struct {
		Run       runInfo          `json:"run"`
		Scenarios []scenarioResult `json:"scenarios"`
	}{r.info, results})
}

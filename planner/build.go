package planner

import (
	"errors"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"github.com/heimdalr/dag"
)

// Stage four of Parse: build. The dependency graph of record is a heimdalr/dag DAG of the steps: every dependency
// is one of its edges, added in request order, and the DAG refuses exactly the edges that would close a cycle, each
// one reported naming the steps on the cycle. A batch with no problem becomes the Plan, which keeps the DAG (its
// steps' levels are read from it, Plan.Levels).

// problem is a Problem before steps are labelled. idx is the step index, -1 for the batch; phase orders a step's
// problems (its key first), keeping the order they were found in within a phase.
type problem struct {
	idx   int
	phase int
	Problem
}

const (
	phaseKey = iota
	phaseStep
	phaseRefs
	phaseGraph
)

// problems collects what Parse finds, in every stage.
type problems struct{ list []problem }

func (p *problems) add(idx, phase int, r Reason, detail string) {
	p.list = append(p.list, problem{idx: idx, phase: phase, Problem: Problem{Reason: r, Detail: detail}})
}

// refusal is the *Error of a batch with problems: batch problems first, then by step, each naming the step's key
// or "#i".
func (p *problems) refusal(label func(int) string) *Error {
	slices.SortStableFunc(p.list, func(a, b problem) int {
		if a.idx != b.idx {
			return a.idx - b.idx
		}
		return a.phase - b.phase
	})
	out := make([]Problem, len(p.list))
	for k, pr := range p.list {
		out[k] = pr.Problem
		switch {
		case pr.idx < 0:
		case label(pr.idx) != "":
			out[k].Key = label(pr.idx)
		default:
			out[k].Key = "#" + strconv.Itoa(pr.idx)
		}
	}
	return &Error{Problems: out}
}

// graph builds the DAG of steps whose dependencies are deps, reporting each cycle. id names a step as a vertex (its
// key, or "#i" when it has none).
func graph(deps [][]int, id func(int) string, probs *problems) *dag.DAG {
	g := dag.NewDAG()
	for v := range deps {
		_ = g.AddVertexByID(id(v), v) // ids are unique: keys are, and "#i" is not a key
	}
	for v, ds := range deps {
		for _, u := range ds {
			err := g.AddEdge(id(u), id(v))
			var loop dag.EdgeLoopError
			if errors.As(err, &loop) {
				probs.add(v, phaseGraph, ReasonCycle, "dependency cycle: "+cycleText(g, v, u, id)+
					" (each step waits for the next)")
			}
		}
	}
	return g
}

// cycleText renders the cycle that the refused edge u → v (v waits for u) would close: the DAG holds a path v → …
// → u of steps each waited for by the next, so in "waits for" order the cycle is v, u, then that path back to v.
func cycleText(g *dag.DAG, v, u int, id func(int) string) string {
	path := pathBetween(g, id(v), id(u))
	var b strings.Builder
	b.WriteString(id(v))
	for k := len(path) - 1; k >= 0; k-- {
		b.WriteString(" → ")
		b.WriteString(path[k])
	}
	return b.String()
}

// pathBetween returns a shortest path from → … → to along the DAG's edges (from included first, to last),
// searching breadth-first over GetChildren; nil when there is none.
func pathBetween(g *dag.DAG, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for k := 0; k < len(queue); k++ {
		if queue[k] == to {
			var path []string
			for v := to; v != ""; v = prev[v] {
				path = append(path, v)
			}
			slices.Reverse(path)
			return path
		}
		children, _ := g.GetChildren(queue[k])
		ids := make([]string, 0, len(children))
		for c := range children {
			ids = append(ids, c)
		}
		slices.Sort(ids) // deterministic reports
		for _, c := range ids {
			if _, seen := prev[c]; !seen {
				prev[c] = queue[k]
				queue = append(queue, c)
			}
		}
	}
	return nil
}

// levelsVisitor computes each step's level while the DAG is walked in topological order: 0 without dependencies,
// else one more than its deepest dependency (the vertex's parents, which are the step's Deps).
type levelsVisitor struct {
	steps  []Step
	levels []int
}

func (lv *levelsVisitor) Visit(v dag.Vertexer) {
	_, value := v.Vertex()
	i := value.(int)
	for _, d := range lv.steps[i].Deps {
		lv.levels[i] = max(lv.levels[i], lv.levels[d]+1)
	}
}

// assemble builds the Plan of a batch with no problem. read holds, by step, the headers other steps' placeholders
// read of its response.
func assemble(b *batchDraft, calls []checkedCall, rollbacks []*checkedCall, deps, reads [][]int, read [][]string,
	g *dag.DAG) *Plan {
	plan := &Plan{Form: b.form, StopOnError: b.stop || b.atomic, Atomic: b.atomic, Timings: b.timing, DryRun: b.dryRun,
		Steps: make([]Step, len(b.steps)), graph: g}
	for i := range b.steps {
		c := &calls[i]
		s := &plan.Steps[i]
		*s = Step{Index: i, Key: b.steps[i].key, Method: c.method, Name: c.name, Path: &c.path, Headers: c.headers,
			Body: c.body, Text: c.text, Deps: deps[i], Reads: reads[i], OKStatus: c.okStatus, When: c.when,
			CaptureHeaders: c.capture}
		if c.forEach != nil {
			s.ForEach = &ForEach{ref: *c.forEach}
		}
		s.Capture = slices.Clone(read[i])
		for _, name := range c.capture {
			s.Capture = append(s.Capture, textproto.CanonicalMIMEHeaderKey(name))
		}
		slices.Sort(s.Capture)
		s.Capture = slices.Compact(s.Capture)
		if len(s.Capture) == 0 {
			s.Capture = nil
		}
		if rb := rollbacks[i]; rb != nil {
			s.Rollback = &Rollback{Method: rb.method, Name: rb.name, Path: &rb.path, Headers: rb.headers, Body: rb.body,
				Text: rb.text}
		}
	}
	count := make([]int, len(plan.Steps))
	for i := range plan.Steps {
		for _, d := range plan.Steps[i].Deps {
			count[d]++
		}
	}
	for i := range plan.Steps {
		for _, d := range plan.Steps[i].Deps {
			if plan.Steps[d].Dependents == nil {
				plan.Steps[d].Dependents = make([]int, 0, count[d])
			}
			plan.Steps[d].Dependents = append(plan.Steps[d].Dependents, i)
		}
	}
	return plan
}

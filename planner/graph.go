package planner

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"hash/maphash"

	"github.com/heimdalr/dag"
)

// finish checks keys, binds references, checks the dependency graph and builds the Plan.
func (p *parser) finish() (*Plan, error) {
	n := len(p.steps)
	switch {
	case p.stepsField == "":
		p.problem(-1, phaseStep, ReasonNoSteps, `no steps: the batch has no "requests"`)
	case n == 0 && !p.stepsBad:
		p.problem(-1, phaseStep, ReasonNoSteps, "no steps: the batch is empty")
	}
	if n > p.cfg.MaxSteps {
		p.problem(-1, phaseStep, ReasonTooManySteps, strconv.Itoa(n)+" steps; at most "+strconv.Itoa(p.cfg.MaxSteps)+" allowed")
	}

	// The graph is built in the Plan's steps directly (Deps, Dependents); a refused batch drops them.
	steps := make([]Step, n)
	edges := p.bindRefs(p.bindKeys(), steps)
	if p.atomic && p.cfg.RequireRollback {
		p.requireRollbacks()
	}
	invert(steps, p.ints(n), edges[len(edges):cap(edges)])
	depth := 0
	// A batch over the step limit is refused anyway; analysing a huge graph would only give a hostile body more
	// work to cause.
	if n <= p.cfg.MaxSteps {
		var remaining []bool
		if depth, remaining = longestChain(steps, p.ints(3*n)); remaining != nil {
			p.reportCycles(steps, remaining)
		}
	}

	if len(p.probs) > 0 {
		return nil, p.refusal()
	}
	return p.build(steps, depth), nil
}

// ints returns k ints of pooled working space, their contents left over from earlier use.
func (p *parser) ints(k int) []int {
	if cap(p.work.ints) < k {
		p.work.ints = make([]int, k)
	}
	return p.work.ints[:k]
}

// bindKeys gives every step its key (defaulting to the index where the form allows), marks the usable ones
// keyBound and returns them indexed by key.
func (p *parser) bindKeys() keyIndex {
	size := 8
	for size < 2*len(p.steps) {
		size *= 2
	}
	if cap(p.work.slots) < size {
		p.work.slots = make([]int32, size)
	}
	keys := keyIndex{steps: p.steps, seed: p.work.seed, slots: p.work.slots[:size]}
	clear(keys.slots) // 4 bytes a slot and no pointers: a plain memclr
	for i := range p.steps {
		d := &p.steps[i]
		switch d.keyState {
		case keyBad:
			continue
		case keyAbsent:
			if p.form == FormRequests {
				p.problem(i, phaseKey, ReasonInvalidKey, `missing "key"`)
				continue
			}
			d.key = strconv.Itoa(i)
		}
		switch {
		case !validKey(d.key):
			p.problem(i, phaseKey, ReasonInvalidKey, "key "+quoteClip(d.key)+" must match [A-Za-z0-9_-]{1,64}")
		case d.key == "self":
			p.problem(i, phaseKey, ReasonInvalidKey, `key "self" is reserved`)
		default:
			if j, dup := keys.add(d.key, i); dup {
				p.problem(i, phaseKey, ReasonInvalidKey, "duplicate key "+quote(d.key)+" (step #"+strconv.Itoa(j)+" has it too)")
				continue
			}
			d.keyState = keyBound
		}
	}
	return keys
}

// keyIndex finds a step by its key: an open-addressing hash table of step indices, reused from batch to batch.
// A map[string]int did the same, but reusing one means clearing its string pointers (under write barriers while
// the GC runs) and a fresh one cost four allocations for ten keys; these slots hold no pointers. The seed is
// random per table, so that a client cannot choose keys that collide.
type keyIndex struct {
	steps []draft // the keys are steps[i].key
	seed  maphash.Seed
	slots []int32 // a step's index plus one, 0 for an empty slot; a power of two, more than twice the steps
}

// slot returns the slot that holds key or, when none does, the empty slot where it belongs (linear probing; there
// is always an empty slot).
func (x keyIndex) slot(key string) int {
	mask := len(x.slots) - 1
	h := int(maphash.String(x.seed, key)) & mask
	for x.slots[h] != 0 && x.steps[x.slots[h]-1].key != key {
		h = (h + 1) & mask
	}
	return h
}

// find returns the index of the step with key; ok is false when there is none.
func (x keyIndex) find(key string) (i int, ok bool) {
	s := x.slots[x.slot(key)]
	return int(s) - 1, s != 0
}

// add indexes step i under key, unless a step has it already: then it returns that step's index and dup true.
func (x keyIndex) add(key string, i int) (first int, dup bool) {
	h := x.slot(key)
	if s := x.slots[h]; s != 0 {
		return int(s) - 1, true
	}
	x.slots[h] = int32(i + 1)
	return i, false
}

// label names step i in problems: its key when usable, "" when it has none.
func (p *parser) label(i int) string {
	if d := &p.steps[i]; d.keyState == keyBound {
		return d.key
	}
	return ""
}

// bindRefs points every placeholder at its step and sets each step's Deps, ascending and unique. It returns the
// array that holds every Deps, with room after them for as many Dependents (invert's).
func (p *parser) bindRefs(keys keyIndex, steps []Step) []int {
	total := len(p.depends)
	for i := range p.steps {
		total += len(p.steps[i].path.refList()) + len(p.steps[i].body.refList())
	}
	for _, h := range p.headers {
		total += len(h.value.refs)
	}
	// One backing array for every Deps and every Dependents. total bounds the edges, so appending never moves it.
	all := make([]int, 0, 2*total)
	var reported []string // keys already reported unknown for the current step
	for i := range p.steps {
		d := &p.steps[i]
		start := len(all)
		reported = reported[:0]
		// rf is the placeholder, nil for a depends_on entry; the problem text is only built for a problem.
		bind := func(key string, rf *ref) int {
			j, ok := keys.find(key)
			if ok && j != i {
				all = append(all, j)
				return j
			}
			what := "depends_on " + quoteClip(key)
			if rf != nil {
				what = "placeholder " + rf.text
			}
			switch {
			case !ok && !slices.Contains(reported, key):
				reported = append(reported, key)
				if key == "self" && rf != nil {
					p.problem(i, phaseRefs, ReasonUnknownRef, what+": ${self…} may only be used in a \"rollback\"")
					break
				}
				p.problem(i, phaseRefs, ReasonUnknownRef, what+" names no step of this batch")
			case ok:
				p.problem(i, phaseRefs, ReasonSelfRef, what+" names the step itself")
			}
			return -1
		}
		bindAll := func(refs []ref) {
			for k := range refs {
				refs[k].step = bind(refs[k].key, &refs[k])
			}
		}
		bindAll(d.path.refList())
		for _, h := range p.headers[d.hdr0:d.hdr1] {
			bindAll(h.value.refs)
		}
		bindAll(d.body.refList())
		for _, key := range p.depends[d.dep0:d.dep1] {
			bind(key, nil)
		}
		mine := all[start:]
		slices.Sort(mine)
		all = all[:start+len(slices.Compact(mine))]
		if end := len(all); end > start {
			steps[i].Deps = all[start:end:end]
		}
		if rb := p.rollbackOf(d); rb != nil {
			p.bindRollback(i, rb, keys, steps[i].Deps)
		}
	}
	return all
}

// bindRollback points the placeholders of step i's rollback at their steps. A rollback runs after its step
// succeeded and before the rollbacks of the step's dependencies, so it may use the step's own response (${self…},
// or the step's key) and those of the step's direct dependencies (deps, ascending), and nothing else: any other
// step may have failed, never run, or been rolled back already.
func (p *parser) bindRollback(i int, rb *draftRollback, keys keyIndex, deps []int) {
	var reported []string
	bindAll := func(refs []ref) {
		for k := range refs {
			rf := &refs[k]
			rf.step = -1
			if rf.key == "self" {
				rf.step = i
				continue
			}
			j, ok := keys.find(rf.key)
			if _, dep := slices.BinarySearch(deps, j); ok && (j == i || dep) {
				rf.step = j
				continue
			}
			if slices.Contains(reported, rf.key) {
				continue
			}
			reported = append(reported, rf.key)
			if !ok {
				p.problem(i, phaseRefs, ReasonUnknownRef, "rollback placeholder "+rf.text+" names no step of this batch")
				continue
			}
			p.problem(i, phaseRefs, ReasonUnknownRef, "rollback placeholder "+rf.text+" names step "+quote(rf.key)+
				", which this step does not depend on; a rollback may use ${self…} and the step's dependencies")
		}
	}
	bindAll(rb.path.refList())
	for _, h := range p.headers[rb.hdr0:rb.hdr1] {
		bindAll(h.value.refs)
	}
	bindAll(rb.body.refList())
}

// requireRollbacks refuses the steps of an atomic batch that could not be undone: every step needs a rollback
// except GET, HEAD and OPTIONS, which HTTP defines as safe (without side effects).
func (p *parser) requireRollbacks() {
	for i := range p.steps {
		d := &p.steps[i]
		switch {
		case d.rb != 0, d.method == "GET", d.method == "HEAD", d.method == "OPTIONS":
			continue
		}
		p.problem(i, phaseStep, ReasonMissingRollback, `no "rollback": in an atomic batch every step except GET, `+
			"HEAD and OPTIONS needs one on this server, so that it can be undone")
	}
}

// invert sets the Dependents of each step, ascending (steps are visited in order) and unique. count is working
// space of one int per step; backing holds the Dependents and has room for one per edge (every Deps entry).
func invert(steps []Step, count, backing []int) {
	clear(count)
	total := 0
	for i := range steps {
		for _, j := range steps[i].Deps {
			count[j]++
		}
		total += len(steps[i].Deps)
	}
	if total == 0 {
		return
	}
	off := 0
	for j, c := range count {
		if c > 0 {
			steps[j].Dependents = backing[off : off : off+c]
			off += c
		}
	}
	for i := range steps {
		for _, j := range steps[i].Deps {
			steps[j].Dependents = append(steps[j].Dependents, i)
		}
	}
}

// longestChain runs Kahn's algorithm over the steps. It returns the number of steps on the longest dependency
// chain, or, when the graph has a cycle, the steps that could not be ordered (on or after a cycle). work is working
// space of three ints per step.
//
// Why not heimdalr/dag here: its AddEdge copies the transitive ancestor and descendant sets of both ends, so
// validating a 50-step chain costs about 0.9 ms and 1000 allocations, six times the whole rest of Parse, against
// about 2 µs for this pass (BenchmarkDAGLibrary). This pass answers "acyclic?" and "how deep?" for every batch;
// heimdalr is kept for refused batches, where its edge-by-edge loop detection gives the clearest report.
func longestChain(steps []Step, work []int) (int, []bool) {
	n := len(steps)
	clear(work)
	indeg, depth, queue := work[:n], work[n:2*n], work[2*n:2*n]
	for i := range steps {
		indeg[i] = len(steps[i].Deps)
		if indeg[i] == 0 {
			depth[i] = 1
			queue = append(queue, i)
		}
	}
	longest := 0
	for k := 0; k < len(queue); k++ {
		u := queue[k]
		longest = max(longest, depth[u])
		for _, v := range steps[u].Dependents {
			depth[v] = max(depth[v], depth[u]+1)
			if indeg[v]--; indeg[v] == 0 {
				queue = append(queue, v)
			}
		}
	}
	if len(queue) == n {
		return longest, nil
	}
	remaining := make([]bool, n)
	for i := range indeg {
		remaining[i] = indeg[i] > 0
	}
	return 0, remaining
}

// dagLimit bounds the steps handed to heimdalr/dag when reporting cycles: its AddEdge is quadratic in the steps
// involved, harmless at the default 50 steps but a way to burn CPU if an operator raises -max-steps into the
// thousands. Beyond it the same edge-by-edge loop test is made by a breadth-first search of our own.
const dagLimit = 256

// reportCycles reports each dependency cycle, naming the steps on it.
//
// The steps that Kahn's algorithm could not order are first pruned of those that merely wait for a cycle, then
// their edges are added one by one, in request order, to a heimdalr/dag DAG. The DAG refuses exactly the edges that
// would close a loop (dag.EdgeLoopError), so each refused edge is one problem, and the cycle it closes is found by
// walking the edges accepted so far. This only runs for a refused batch.
func (p *parser) reportCycles(steps []Step, remaining []bool) {
	// Drop steps that no remaining step waits for, repeatedly: what is left lies on a cycle or between cycles.
	out := make([]int, len(steps))
	var queue []int
	for v, in := range remaining {
		if !in {
			continue
		}
		for _, w := range steps[v].Dependents {
			if remaining[w] {
				out[v]++
			}
		}
		if out[v] == 0 {
			queue = append(queue, v)
		}
	}
	for k := 0; k < len(queue); k++ {
		v := queue[k]
		remaining[v] = false
		for _, u := range steps[v].Deps {
			if remaining[u] {
				if out[u]--; out[u] == 0 {
					queue = append(queue, u)
				}
			}
		}
	}

	id := func(v int) string {
		if l := p.label(v); l != "" {
			return l
		}
		return "#" + strconv.Itoa(v)
	}
	cyclic := 0
	for _, in := range remaining {
		if in {
			cyclic++
		}
	}
	var g *dag.DAG
	if cyclic <= dagLimit {
		g = dag.NewDAG()
		for v, in := range remaining {
			if in {
				// Vertex values must be distinct for heimdalr; the index is.
				_ = g.AddVertexByID(id(v), v)
			}
		}
	}
	children := make([][]int, len(steps)) // edges accepted so far: u → v where v waits for u
	var finder pathFinder
	for v, in := range remaining {
		if !in {
			continue
		}
		for _, u := range steps[v].Deps {
			if !remaining[u] {
				continue
			}
			var (
				err     error
				cycle   []int
				loop    dag.EdgeLoopError
				same    dag.SrcDstEqualError
				unknown dag.IDUnknownError
				twice   dag.EdgeDuplicateError
			)
			if g != nil {
				err = g.AddEdge(id(u), id(v))
				if errors.As(err, &loop) {
					cycle = finder.find(children, v, u)
				}
			} else if cycle = finder.find(children, v, u); cycle != nil {
				err = loop
			}
			switch {
			case err == nil:
				children[u] = append(children[u], v)
			case cycle != nil:
				p.problem(v, phaseGraph, ReasonCycle, "dependency cycle: "+cycleText(cycle, id)+
					" (each step waits for the next)")
			case errors.As(err, &same):
				p.problem(v, phaseGraph, ReasonSelfRef, "step "+id(v)+" depends on itself")
			case errors.As(err, &unknown):
				p.problem(v, phaseGraph, ReasonUnknownRef, "step "+id(u)+" is unknown: "+err.Error())
			case errors.As(err, &twice):
				// Deps are unique; a duplicate edge would be harmless anyway.
			default:
				p.problem(v, phaseGraph, ReasonCycle, "dependency graph: "+err.Error())
			}
		}
	}
}

// pathFinder searches the accepted edges breadth-first. Its arrays are reused across searches (seen holds the
// search's generation) so that checking many edges costs no allocation per edge.
type pathFinder struct {
	prev, seen, queue []int
	gen               int
}

// find returns a path from → … → to over children, or nil if there is none.
func (f *pathFinder) find(children [][]int, from, to int) []int {
	if f.prev == nil {
		f.prev, f.seen = make([]int, len(children)), make([]int, len(children))
	}
	f.gen++
	f.seen[from] = f.gen
	f.queue = append(f.queue[:0], from)
	for k := 0; k < len(f.queue) && f.seen[to] != f.gen; k++ {
		u := f.queue[k]
		for _, v := range children[u] {
			if f.seen[v] != f.gen {
				f.seen[v], f.prev[v] = f.gen, u
				f.queue = append(f.queue, v)
			}
		}
	}
	if f.seen[to] != f.gen {
		return nil
	}
	path := []int{to}
	for v := to; v != from; {
		v = f.prev[v]
		path = append(path, v)
	}
	slices.Reverse(path)
	return path
}

// cycleText renders the cycle closed by the refused edge (v waits for u) where path runs v → … → u along accepted
// edges (each waits for the previous): in "waits for" order that is v, u, then path backwards to v.
func cycleText(path []int, id func(int) string) string {
	var b strings.Builder
	v := path[0]
	b.WriteString(id(v))
	for k := len(path) - 1; k >= 0; k-- {
		b.WriteString(" → ")
		b.WriteString(id(path[k]))
	}
	return b.String()
}

// refusal builds the *Error: batch problems first, then by step, each naming the step's key or "#i".
func (p *parser) refusal() *Error {
	slices.SortStableFunc(p.probs, func(a, b problem) int {
		if a.idx != b.idx {
			return a.idx - b.idx
		}
		return a.phase - b.phase
	})
	out := make([]Problem, len(p.probs))
	for k, pr := range p.probs {
		out[k] = pr.Problem
		switch {
		case pr.idx < 0:
		case p.label(pr.idx) != "":
			out[k].Key = p.label(pr.idx)
		default:
			out[k].Key = "#" + strconv.Itoa(pr.idx)
		}
	}
	return &Error{Problems: out}
}

// buildRollback returns a step's Rollback; every Rollback of the plan shares one backing array.
func (p *parser) buildRollback(rb *draftRollback, headers []Header) *Rollback {
	if p.rollbacks == nil {
		p.rollbacks = make([]Rollback, 0, len(p.rbs))
	}
	p.rollbacks = append(p.rollbacks, Rollback{Method: rb.method, Name: rb.name, Path: &rb.path})
	r := &p.rollbacks[len(p.rollbacks)-1]
	if rb.hasBody {
		r.Body = &rb.body
	}
	if rb.hdr1 > rb.hdr0 {
		r.Headers = headers[rb.hdr0:rb.hdr1:rb.hdr1]
	}
	return r
}

// stepTemplates holds a step's compiled templates in the Plan: the drafts they were compiled into are reused by the
// next Parse.
type stepTemplates struct {
	path PathTemplate
	body JSONTemplate
}

// build assembles the Plan around steps (their Deps and Dependents set), copying the steps' templates out of the
// drafts into one array of the Plan's own.
func (p *parser) build(steps []Step, depth int) *Plan {
	plan := &Plan{Form: p.form, StopOnError: p.stop || p.atomic, Atomic: p.atomic, Timings: p.timings,
		Steps: steps, Depth: depth}
	tmpl := make([]stepTemplates, len(p.steps))
	var headers []Header
	if len(p.headers) > 0 {
		headers = make([]Header, len(p.headers))
		for k := range p.headers {
			headers[k] = Header{Name: p.headers[k].name, Value: &p.headers[k].value}
		}
	}
	for i := range p.steps {
		d := &p.steps[i]
		s := &plan.Steps[i]
		s.Index, s.Key, s.Method, s.Name = i, d.key, d.method, d.name
		t := &tmpl[i]
		t.path = d.path
		s.Path = &t.path
		if d.hasBody {
			t.body = d.body
			s.Body = &t.body
		}
		if d.hdr1 > d.hdr0 {
			s.Headers = headers[d.hdr0:d.hdr1:d.hdr1]
		}
		if rb := p.rollbackOf(d); rb != nil {
			s.Rollback = p.buildRollback(rb, headers)
		}
	}
	return plan
}

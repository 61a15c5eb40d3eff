package planner

import (
	"slices"
	"strconv"
)

// Stage three of Parse: bind. Every step gets its key (the index, where the form allows none), and every
// placeholder and depends_on entry the step it names: the steps a step waits for are its dependencies.

// binder holds the keys of a batch, and the headers each step's placeholders read of the others.
type binder struct {
	b     *batchDraft
	probs *problems
	keys  map[string]int // usable keys → step index
	read  [][]string     // by step: the headers placeholders read of its response (${key:headers.Name}), canonical
}

// bindKeys gives every step its key, checks it, and marks the usable ones keyBound.
func bindKeys(b *batchDraft, probs *problems) *binder {
	bd := &binder{b: b, probs: probs, keys: make(map[string]int, len(b.steps)), read: make([][]string, len(b.steps))}
	for i := range b.steps {
		d := &b.steps[i]
		switch d.keyState {
		case keyBad:
			continue
		case keyAbsent:
			if b.form == FormRequests {
				probs.add(i, phaseKey, ReasonInvalidKey, `missing "key"`)
				continue
			}
			d.key = strconv.Itoa(i)
		}
		switch j, dup := bd.keys[d.key]; {
		case !validKey(d.key):
			probs.add(i, phaseKey, ReasonInvalidKey, "key "+quoteClip(d.key)+" must match [A-Za-z0-9_-]{1,64}")
		case d.key == keySelf || d.key == keyItem || d.key == keyIndex:
			probs.add(i, phaseKey, ReasonInvalidKey, "key "+quote(d.key)+" is reserved: ${"+d.key+"} means something else in a placeholder")
		case dup:
			probs.add(i, phaseKey, ReasonInvalidKey, "duplicate key "+quote(d.key)+" (step #"+strconv.Itoa(j)+" has it too)")
		default:
			bd.keys[d.key] = i
			d.keyState = keyBound
		}
	}
	return bd
}

// label names step i in problems: its key when usable, "" when it has none.
func (bd *binder) label(i int) string {
	if i >= 0 && i < len(bd.b.steps) && bd.b.steps[i].keyState == keyBound {
		return bd.b.steps[i].key
	}
	return ""
}

// deps binds the references of step i's call and its depends_on entries. It returns the steps the step waits for
// and, among them, those whose responses it reads (its placeholders, for_each and when), each ascending and unique.
func (bd *binder) deps(i int, c *checkedCall) (deps, reads []int) {
	var reported []string // keys already reported unknown for this step
	// rf is the placeholder, nil for a depends_on entry; the problem's text is built only for a problem.
	bind := func(key string, rf *ref) int {
		j, ok := bd.keys[key]
		if ok && j != i {
			deps = append(deps, j)
			return j
		}
		what := "depends_on " + quoteClip(key)
		if rf != nil {
			what = "placeholder " + rf.text
		}
		switch {
		case !ok && !slices.Contains(reported, key):
			reported = append(reported, key)
			if key == keySelf && rf != nil {
				bd.probs.add(i, phaseRefs, ReasonUnknownRef, what+`: ${self…} may only be used in a "rollback"`)
				break
			}
			bd.probs.add(i, phaseRefs, ReasonUnknownRef, what+" names no step of this batch")
		case ok:
			bd.probs.add(i, phaseRefs, ReasonSelfRef, what+" names the step itself")
		}
		return -1
	}
	c.eachRef(func(rf *ref) {
		if bd.fanOutRef(i, c, rf, "placeholder ") {
			return
		}
		rf.step = bind(rf.key, rf)
		bd.reads(rf)
	})
	slices.Sort(deps)
	deps = slices.Compact(deps)
	depends := bd.b.steps[i].depends
	if len(depends) == 0 {
		return deps, deps // a Plan's slices are never appended to, so the two may share one array
	}
	reads = slices.Clone(deps)
	for _, key := range depends {
		bind(key, nil)
	}
	slices.Sort(deps)
	return slices.Compact(deps), reads
}

// fanOutRef binds ${item…} and ${index}, which only a for_each step (or its rollback: call is the step's) may use,
// and reports whether rf was one of them.
func (bd *binder) fanOutRef(i int, call *checkedCall, rf *ref, what string) bool {
	switch rf.key {
	case keyItem:
		rf.step = refItem
	case keyIndex:
		rf.step = refIndex
	default:
		return false
	}
	if call.forEach == nil {
		rf.step = -1
		bd.probs.add(i, phaseRefs, ReasonPlaceholder, what+rf.text+` is only defined in a step with "for_each"`)
	}
	return true
}

// reads notes the header a placeholder reads of a step's response, so that the step's call keeps it.
func (bd *binder) reads(rf *ref) {
	if rf.meta == metaHeader && rf.step >= 0 && !slices.Contains(bd.read[rf.step], rf.header) {
		bd.read[rf.step] = append(bd.read[rf.step], rf.header)
	}
}

// rollback binds the references of step i's rollback. A rollback runs after its step succeeded and before the
// rollbacks of the step's dependencies, so it may use the step's own response (${self…}, or the step's key) and
// those of the step's direct dependencies (deps, ascending), and nothing else: any other step may have failed,
// never run, or been rolled back already.
func (bd *binder) rollback(i int, step, c *checkedCall, deps []int) {
	var reported []string
	c.eachRef(func(rf *ref) {
		if bd.fanOutRef(i, step, rf, "rollback placeholder ") {
			return
		}
		rf.step = -1
		if rf.key == keySelf {
			rf.step = i
			bd.reads(rf)
			return
		}
		j, ok := bd.keys[rf.key]
		if _, dep := slices.BinarySearch(deps, j); ok && (j == i || dep) {
			rf.step = j
			bd.reads(rf)
			return
		}
		if slices.Contains(reported, rf.key) {
			return
		}
		reported = append(reported, rf.key)
		if !ok {
			bd.probs.add(i, phaseRefs, ReasonUnknownRef, "rollback placeholder "+rf.text+" names no step of this batch")
			return
		}
		bd.probs.add(i, phaseRefs, ReasonUnknownRef, "rollback placeholder "+rf.text+" names step "+quote(rf.key)+
			", which this step does not depend on; a rollback may use ${self…} and the step's dependencies")
	})
}

// requireRollbacks refuses the steps of an atomic batch that could not be undone: every step needs a rollback
// except GET, HEAD and OPTIONS, which HTTP defines as safe (without side effects).
func requireRollbacks(calls []checkedCall, rollbacks []*checkedCall, probs *problems) {
	for i := range calls {
		switch m := calls[i].method; {
		case rollbacks[i] != nil, m == "GET", m == "HEAD", m == "OPTIONS":
			continue
		}
		probs.add(i, phaseStep, ReasonMissingRollback, `no "rollback": in an atomic batch every step except GET, `+
			"HEAD and OPTIONS needs one on this server, so that it can be undone")
	}
}

// eachRef calls f with each reference of a call: its for_each's, its when's, its path's, each header's, its
// body's, in that order.
func (c *checkedCall) eachRef(f func(rf *ref)) {
	each := func(refs []ref) {
		for k := range refs {
			f(&refs[k])
		}
	}
	if c.forEach != nil {
		f(c.forEach)
	}
	if c.when != nil {
		f(&c.when.ref)
	}
	each(c.path.refs)
	for _, h := range c.headers {
		each(h.Value.refs)
	}
	if c.body != nil {
		each(c.body.refs)
	}
	if c.text != nil {
		each(c.text.refs)
	}
}

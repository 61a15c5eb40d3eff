package metrics

import (
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/batchd/batchd/runner"
)

// learned holds the method labels learned from steps that match no known pattern (Config.LearnMethods): the first
// path segment of a step's method, labelled "<segment>/*", once the upstream answered a step under it with a status
// below 400, which proves a route exists there. At most max are learned, the first come; steps under any other
// segment stay "other". A client cannot fill the set with names of its own choosing without the upstream answering
// them as real routes, and however many it tries, the set stays bounded.
type learned struct {
	max       int
	newSeries func(label string) *methodSeries

	bySegment sync.Map // segment → *methodSeries; written under mu
	mu        sync.Mutex
	n         int
}

// get returns the series of segment, learning it when learn is set and room is left; nil when it is not learned.
func (l *learned) get(segment string, learn bool) *methodSeries {
	if v, ok := l.bySegment.Load(segment); ok {
		return v.(*methodSeries)
	}
	if !learn {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.bySegment.Load(segment); ok {
		return v.(*methodSeries)
	}
	if l.n >= l.max {
		return nil
	}
	l.n++
	s := l.newSeries(segment + "/*")
	l.bySegment.Store(segment, s)
	return s
}

// learnable reports whether a step's end proves that a route exists under its method's first segment: the upstream
// answered it with a status from 200 to 399 (a business failure with "ok": false included).
func learnable(ev runner.StepEvent) bool {
	c := StatusClass(ev)
	return c == Class2xx || c == Class3xx
}

// maxSegmentLen bounds a learned segment, and so a learned label value.
const maxSegmentLen = 64

// firstSegment is the segment a name is learned under: its first, when that is a method name rather than an
// identifier, at most maxSegmentLen bytes long, and printable UTF-8 (a label value must be valid UTF-8); ""
// otherwise.
func firstSegment(segs []string) string {
	if len(segs) == 0 || segs[0] == idSegment || len(segs[0]) > maxSegmentLen || !utf8.ValidString(segs[0]) {
		return ""
	}
	for _, r := range segs[0] {
		if !unicode.IsPrint(r) {
			return ""
		}
	}
	return segs[0]
}

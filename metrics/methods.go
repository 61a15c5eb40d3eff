package metrics

import (
	"fmt"
	"strings"
)

// OtherMethod is the method label of every step whose method matches no known pattern.
const OtherMethod = "other"

// idSegment replaces a numeric, UUID or placeholder path segment before matching.
const idSegment = ":id"

// maxNameLen bounds the work Label does on a name a client chose; longer names are labelled OtherMethod at once.
const maxNameLen = 512

// pattern is one known method. An exact pattern labels its matches with the folded name, which is the pattern
// itself; a wildcard pattern labels every match with the pattern text, so that "Producer/*" stays one series
// however many Producer methods clients invent.
type pattern struct {
	text string
	segs []string
	// rest: the last segment is "*", which matches one or more remaining segments.
	rest bool
}

// compilePattern checks a known-method pattern: segments separated by "/", no leading "/" (one is trimmed), no
// query, no empty segment. A segment "*" matches any one segment, or one or more when it is the last; a segment
// ending in "*" ("Get*") matches any segment with that prefix. "*" anywhere else is refused.
func compilePattern(p string) (pattern, error) {
	text := strings.TrimPrefix(strings.TrimSpace(p), "/")
	if text == "" {
		return pattern{}, fmt.Errorf("metrics: empty method pattern %q", p)
	}
	if text == OtherMethod {
		return pattern{}, fmt.Errorf("metrics: method pattern %q is reserved", p)
	}
	if strings.ContainsAny(text, "?#") {
		return pattern{}, fmt.Errorf("metrics: method pattern %q holds a query or fragment", p)
	}
	segs := strings.Split(text, "/")
	for _, s := range segs {
		if s == "" {
			return pattern{}, fmt.Errorf("metrics: method pattern %q has an empty segment", p)
		}
		if i := strings.IndexByte(s, '*'); i >= 0 && i != len(s)-1 {
			return pattern{}, fmt.Errorf("metrics: method pattern %q: '*' may only end a segment", p)
		}
	}
	for i, s := range segs {
		if isID(s) {
			segs[i] = idSegment // "Users/42/Orders" is written as it will be matched: "Users/:id/Orders"
		}
	}
	pt := pattern{text: strings.Join(segs, "/"), segs: segs}
	if segs[len(segs)-1] == "*" {
		pt.rest = true
	}
	return pt, nil
}

func (p *pattern) wildcard() bool { return strings.IndexByte(p.text, '*') >= 0 }

// match reports whether the folded name's segments match p.
func (p *pattern) match(segs []string) bool {
	n := len(p.segs)
	if p.rest {
		if len(segs) < n {
			return false
		}
	} else if len(segs) != n {
		return false
	}
	for i, ps := range p.segs {
		if p.rest && i == n-1 {
			return true // "*" as the last segment takes the rest, which is not empty by the length check
		}
		if !matchSegment(ps, segs[i]) {
			return false
		}
	}
	return true
}

func matchSegment(pat, seg string) bool {
	if prefix, ok := strings.CutSuffix(pat, "*"); ok {
		return strings.HasPrefix(seg, prefix)
	}
	return pat == seg
}

// foldSegments splits a step's method name into segments, trimming a leading "/" and any query or fragment, and
// replaces numeric, UUID and placeholder segments by ":id". It returns nil for a name that cannot be a method.
func foldSegments(name string) []string {
	name = strings.TrimPrefix(name, "/")
	if i := strings.IndexAny(name, "?#"); i >= 0 {
		name = name[:i]
	}
	if name == "" || len(name) > maxNameLen {
		return nil
	}
	segs := strings.Split(name, "/")
	for i, s := range segs {
		if isID(s) {
			segs[i] = idSegment
		}
	}
	return segs
}

// isID reports whether a path segment is an identifier rather than a method name: all digits, a UUID, or one
// holding a placeholder (its value is only known at run time).
func isID(s string) bool {
	if s == "" {
		return false
	}
	if strings.Contains(s, "${") {
		return true
	}
	digits := true
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			digits = false
			break
		}
	}
	return digits || isUUID(s)
}

// isUUID reports whether s is a UUID in its canonical 8-4-4-4-12 hexadecimal form, in either case.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

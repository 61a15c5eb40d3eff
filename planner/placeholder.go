package planner

import (
	"net/textproto"
	"strings"
)

// piece is one run of a string that may hold placeholders: literal text, or a reference.
// A string is split into pieces once, at parse time; the pieces become a template's parts.
type piece struct {
	lit   string // literal text, already unescaped ($${ is ${ here)
	ref   refSpec
	isRef bool
}

// refSpec is a placeholder as written (README "Placeholders", "REST APIs"): ${key}, ${key.a.0.b} (the step's response
// body), ${key:status} (its HTTP status), ${key:headers.Name} (a response header), and in a for_each step ${item},
// ${item.a.b} (the element the call is for) and ${index} (its position). ':' after the key selects metadata, '.' walks
// the body.
type refSpec struct {
	text string // "${A.result.0.id}", for messages and ResolveError.Placeholder
	key  string // "A"; "item" or "index" for a fan-out's element
	// path is the segments after the key, still joined by "." ("result.0.id"); empty for ${A}. Segments cannot
	// contain '.', so splitting at resolve time is a cheap strings.Cut and a ref needs no slice of its own.
	path   string
	meta   meta
	header string // metaHeader: the header's name, canonical
}

// meta is what a placeholder reads of a step's response: its body, its status or one of its headers.
type meta uint8

const (
	metaBody meta = iota
	metaStatus
	metaHeader
)

// Keys a placeholder gives a meaning of its own, which no step may take.
const (
	keySelf  = "self"  // in a rollback: the step it undoes
	keyItem  = "item"  // in a for_each step: the element its call is for
	keyIndex = "index" // in a for_each step: that element's position, from 0
)

// hasTemplate is the cheap gate: a string without "${" has neither a placeholder nor a $${ escape.
func hasTemplate(s string) bool { return strings.Contains(s, "${") }

// splitTemplate splits s into literal pieces and references, scanning left to right: "$${" is always the literal
// "${" (so "$$${A}" is "$" + literal "${A}"), "${…}" is a placeholder, any other '$' is literal. Malformed
// placeholders are returned as messages; the scan resumes after them so that every one is reported.
//
// Pieces are appended to dst, which lets a caller reuse one slice for many strings.
func splitTemplate(dst []piece, s string) (pieces []piece, problems []string) {
	pieces = dst
	litStart := 0
	i := 0
	for i < len(s) {
		j := strings.IndexByte(s[i:], '$')
		if j < 0 {
			break
		}
		i += j
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			if litStart < i {
				pieces = append(pieces, piece{lit: s[litStart:i]})
			}
			pieces = append(pieces, piece{lit: "${"})
			i += 3
			litStart = i
		case strings.HasPrefix(s[i:], "${"):
			spec, end, msg := scanPlaceholder(s, i)
			if msg != "" {
				problems = append(problems, msg)
				if end <= i {
					// Unterminated: nothing after it can be a placeholder.
					return pieces, problems
				}
				i = end
				continue
			}
			if litStart < i {
				pieces = append(pieces, piece{lit: s[litStart:i]})
			}
			pieces = append(pieces, piece{ref: spec, isRef: true})
			i = end
			litStart = i
		default:
			i++
		}
	}
	if litStart < len(s) {
		pieces = append(pieces, piece{lit: s[litStart:]})
	}
	return pieces, problems
}

// scanPlaceholder reads the placeholder starting at s[i:] ("${"). It returns the index just after its "}", or,
// when malformed, a message and the index to resume at (≤ i when the placeholder is unterminated).
func scanPlaceholder(s string, i int) (spec refSpec, end int, msg string) {
	k := i + 2
	for ; k < len(s); k++ {
		c := s[k]
		if c == '}' {
			break
		}
		if c == '$' || c == '{' || c < 0x20 || c == 0x7f {
			// A '$' or '{' inside means a nested or broken placeholder; report up to the next '}' if any.
			close := strings.IndexByte(s[k:], '}')
			if close < 0 {
				return spec, i, "malformed placeholder " + quoteClip(s[i:]) + ": unterminated"
			}
			text := s[i : k+close+1]
			return spec, k + close + 1, "malformed placeholder " + quoteClip(text) + ": " + describeChar(c) + " not allowed in a placeholder"
		}
	}
	if k >= len(s) {
		return spec, i, "malformed placeholder " + quoteClip(s[i:]) + ": unterminated (no closing \"}\")"
	}
	text := s[i : k+1]
	spec, msg = parseRef(text, s[i+2:k])
	return spec, k + 1, msg
}

// parseRef reads a placeholder's content (between "${" and "}"), text being the whole placeholder.
func parseRef(text, content string) (refSpec, string) {
	bad := func(why string) (refSpec, string) {
		return refSpec{}, "malformed placeholder " + quoteClip(text) + ": " + why
	}
	if content == "" {
		return bad("empty")
	}
	end := strings.IndexAny(content, ".:")
	if end < 0 {
		end = len(content)
	}
	spec := refSpec{text: text, key: content[:end]}
	if !validKey(spec.key) {
		return bad("step key must match [A-Za-z0-9_-]{1,64}")
	}
	rest := content[end:]
	if rest == "" {
		return spec, ""
	}
	if rest[0] == ':' {
		switch sel := rest[1:]; {
		case spec.key == keyItem || spec.key == keyIndex:
			return bad("${" + spec.key + "} has no status or headers; ':' selects a step's")
		case sel == "status":
			spec.meta = metaStatus
		case strings.HasPrefix(sel, "headers."):
			name := sel[len("headers."):]
			if !isToken(name) {
				return bad("header name " + quoteClip(name) + " is not an HTTP token")
			}
			spec.meta, spec.header = metaHeader, textproto.CanonicalMIMEHeaderKey(name)
		default:
			return bad("unknown selector " + quoteClip(sel) + " after ':'; use ${" + spec.key + ":status} or ${" +
				spec.key + ":headers.Name}, and '.' to walk the body")
		}
		return spec, ""
	}
	path := rest[1:]
	switch {
	case spec.key == keyIndex:
		return bad("${index} is a number: it has no members")
	case path == "" || path[0] == '.' || path[len(path)-1] == '.' || strings.Contains(path, ".."):
		return bad("empty segment")
	}
	if segs := "." + path + "."; strings.Contains(segs, ".*.") {
		list := spec.key + segs[:strings.Index(segs, ".*.")]
		return bad(`a "*" segment is not a path; to call once per element of a list, give the step "for_each": ` +
			`"${` + list + `}" and use ${item…} in it`)
	}
	spec.path = path
	return spec, ""
}

func describeChar(c byte) string {
	switch c {
	case '$':
		return `"$"`
	case '{':
		return `"{"`
	}
	return "control character"
}

// validKey reports whether k matches [A-Za-z0-9_-]{1,64}.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// quoteClip quotes s for a message, shortened so that a hostile body cannot blow up the 400 answer.
func quoteClip(s string) string {
	const limit = 80
	if len(s) > limit {
		cut := limit
		for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		return quote(s[:cut] + "…")
	}
	return quote(s)
}

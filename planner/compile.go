package planner

import (
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// compileJSON compiles a payload. raw is the payload exactly as received, already validated by the decoder (syntax,
// UTF-8, duplicate names), so the scan here only has to tell strings from structure. baseDepth is the nesting depth
// at which the payload stands in the body; the payload is refused (depth > 0 returned) when the body would nest
// deeper than maxDepth.
//
// Only string values are templates: a "${" in an object member name is literal text, because names are not
// values and substituting one could forge or collide members.
func compileJSON(raw string, baseDepth, maxDepth int) (t JSONTemplate, problems []string, tooDeep int) {
	maybe := strings.IndexByte(raw, '$') >= 0 || strings.Contains(raw, `\u0024`)
	if !maybe {
		// Nesting is bounded by the count of openers; counting is much cheaper than scanning.
		if baseDepth+strings.Count(raw, "{")+strings.Count(raw, "[") > maxDepth {
			if d := baseDepth + nestDepth(raw); d > maxDepth {
				return t, nil, d
			}
		}
		return JSONTemplate{raw: raw}, nil, 0
	}

	var (
		segs        []jseg
		lit         []byte // pending literal, only materialised once something differs from raw
		last        int    // raw[last:] is not yet in lit
		depth, maxd int
	)
	for i := 0; i < len(raw); {
		switch raw[i] {
		case '"':
			end := stringEnd(raw, i)
			content := raw[i+1 : end-1]
			if !isName(raw, end) && (strings.IndexByte(content, '$') >= 0 || strings.Contains(content, `\u0024`)) {
				s := content
				if strings.IndexByte(content, '\\') >= 0 {
					b, _ := jsontext.AppendUnquote(nil, raw[i:end])
					s = string(b)
				}
				if hasTemplate(s) {
					// A malformed placeholder is reported, and the well-formed ones around it are still compiled
					// so that their references are checked too.
					pieces, perrs := splitTemplate(s)
					problems = append(problems, perrs...)
					{
						lit = append(lit, raw[last:i]...)
						last = end
						switch {
						case len(pieces) == 1 && pieces[0].isRef:
							segs = append(segs, jseg{lit: string(lit), ref: int32(len(t.refs))})
							t.refs = append(t.refs, ref{refSpec: pieces[0].ref})
							lit = lit[:0]
						case !anyRef(pieces):
							// Only $${ escapes: the string is a constant, precomputed into the literal.
							lit = append(lit, '"')
							for _, p := range pieces {
								lit = appendJSONText(lit, p.lit, false)
							}
							lit = append(lit, '"')
						default:
							segs = append(segs, jseg{lit: string(lit), ref: -1, text: textParts(pieces, &t.refs, true, false)})
							lit = lit[:0]
						}
					}
				}
			}
			i = end
		case '{', '[':
			depth++
			maxd = max(maxd, depth)
			i++
		case '}', ']':
			depth--
			i++
		default:
			i++
		}
	}
	if d := baseDepth + maxd; d > maxDepth {
		return JSONTemplate{}, problems, d
	}
	switch {
	case segs == nil && last == 0:
		t.raw = raw
	case segs == nil:
		t.raw = string(append(lit, raw[last:]...))
	default:
		t.segs = append(segs, jseg{lit: string(append(lit, raw[last:]...)), ref: -1})
	}
	return t, problems, 0
}

// nestDepth returns the deepest nesting of a valid JSON text.
func nestDepth(raw string) int {
	depth, maxd := 0, 0
	for i := 0; i < len(raw); {
		switch raw[i] {
		case '"':
			i = stringEnd(raw, i)
			continue
		case '{', '[':
			depth++
			maxd = max(maxd, depth)
		case '}', ']':
			depth--
		}
		i++
	}
	return maxd
}

// stringEnd returns the index just after the JSON string starting at raw[i] (a '"'); raw is valid JSON.
func stringEnd(raw string, i int) int {
	for j := i + 1; j < len(raw); {
		k := strings.IndexAny(raw[j:], `"\`)
		if k < 0 {
			return len(raw)
		}
		j += k
		if raw[j] == '\\' {
			j += 2
			continue
		}
		return j + 1
	}
	return len(raw)
}

// isName reports whether the string ending at raw[end] is an object member name: in valid JSON exactly the strings
// followed by ':'.
func isName(raw string, end int) bool {
	for ; end < len(raw); end++ {
		switch raw[end] {
		case ' ', '\t', '\r', '\n':
			continue
		case ':':
			return true
		}
		return false
	}
	return false
}

func anyRef(pieces []piece) bool {
	for _, p := range pieces {
		if p.isRef {
			return true
		}
	}
	return false
}

// textParts turns pieces into parts, appending their references to refs. Literals are JSON-escaped when jsonEsc
// (the parts then build the inside of a JSON string). When path is set, a reference after the first literal '?'
// is marked as standing in the query.
func textParts(pieces []piece, refs *[]ref, jsonEsc, path bool) []part {
	parts := make([]part, 0, len(pieces))
	var acc []byte
	inQuery := false
	for _, p := range pieces {
		if !p.isRef {
			if jsonEsc {
				acc = appendJSONText(acc, p.lit, false)
			} else {
				acc = append(acc, p.lit...)
			}
			if path && strings.IndexByte(p.lit, '?') >= 0 {
				inQuery = true
			}
			continue
		}
		parts = append(parts, part{lit: string(acc), ref: int32(len(*refs)), query: inQuery})
		*refs = append(*refs, ref{refSpec: p.ref})
		acc = acc[:0]
	}
	if len(acc) > 0 {
		parts = append(parts, part{lit: string(acc), ref: -1})
	}
	return parts
}

// literalText joins the literal pieces, with each reference replaced by stand (nothing, or a dummy segment for
// checking a templated path's literal parts at plan time).
func literalText(pieces []piece, stand string) string {
	var b strings.Builder
	for _, p := range pieces {
		if p.isRef {
			b.WriteString(stand)
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// compileHeader compiles a header value; problems are returned as (reason, detail) pairs.
func compileHeader(name, value string) (t StringTemplate, reasons []Reason, details []string) {
	if !hasTemplate(value) {
		if badHeaderByte(value) >= 0 {
			return t, []Reason{ReasonInvalidHeader}, []string{"header " + quote(name) + ": value contains a control character (CR, LF, NUL, …)"}
		}
		return StringTemplate{text: value}, nil, nil
	}
	pieces, perrs := splitTemplate(value)
	for _, e := range perrs {
		reasons = append(reasons, ReasonPlaceholder)
		details = append(details, "header "+quote(name)+": "+e)
	}
	for _, p := range pieces {
		if !p.isRef && badHeaderByte(p.lit) >= 0 {
			reasons = append(reasons, ReasonInvalidHeader)
			details = append(details, "header "+quote(name)+": value contains a control character (CR, LF, NUL, …)")
			break
		}
	}
	if reasons != nil {
		// Keep the well-formed references so that they are checked too; the batch is refused anyway.
		t.parts = textParts(pieces, &t.refs, false, false)
		return t, reasons, details
	}
	if !anyRef(pieces) {
		return StringTemplate{text: literalText(pieces, "")}, nil, nil
	}
	t.text = value
	t.parts = textParts(pieces, &t.refs, false, false)
	return t, nil, nil
}

// compilePath compiles a step's path as written. name is the method path for Step.Name (no leading "/", no query).
func compilePath(text string, list []string) (t PathTemplate, name string, reason Reason, detail string) {
	if !hasTemplate(text) {
		return compileStaticPath(text, text, list)
	}
	pieces, perrs := splitTemplate(text)
	if perrs != nil {
		// Keep the well-formed references so that they are checked too; the batch is refused anyway.
		t.parts = textParts(pieces, &t.refs, false, true)
		return t, "", ReasonPlaceholder, "path: " + strings.Join(perrs, "; ")
	}
	if !anyRef(pieces) {
		return compileStaticPath(text, literalText(pieces, ""), list)
	}
	// Check the literal parts now, each placeholder standing for a harmless segment; the resolved path is checked
	// again at run time. The check sees the leading "/" so that "//${A}" is refused as a host.
	if e := checkPath(literalText(pieces, "x"), false); e != nil {
		return t, "", e.Reason, e.Error()
	}
	if !pieces[0].isRef {
		pieces[0].lit = strings.TrimPrefix(pieces[0].lit, "/")
	}
	t.text = strings.TrimPrefix(text, "/")
	t.parts = textParts(pieces, &t.refs, false, true)
	t.blocked = list
	return t, templateName(t.text), "", ""
}

func compileStaticPath(text, path string, list []string) (t PathTemplate, name string, reason Reason, detail string) {
	if e := checkPath(path, false); e != nil {
		return t, "", e.Reason, e.Error()
	}
	path = strings.TrimPrefix(path, "/")
	pathPart, _, _ := strings.Cut(path, "?")
	if blocked(pathPart, list) {
		return t, "", ReasonBlocked, "method " + quote(pathPart) + " may not be called from a batch"
	}
	return PathTemplate{text: strings.TrimPrefix(text, "/"), resolved: path}, pathPart, "", ""
}

// templateName is the path as written up to the first '?' outside a placeholder.
func templateName(text string) string {
	for i := 0; i < len(text); i++ {
		switch {
		case strings.HasPrefix(text[i:], "$${"):
			i += 2
		case strings.HasPrefix(text[i:], "${"):
			if j := strings.IndexByte(text[i:], '}'); j >= 0 {
				i += j
			}
		case text[i] == '?':
			return text[:i]
		}
	}
	return text
}

package planner

import (
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/jsonscan"
)

// jsonScratch is working space for compileJSON, reused across the payloads of one Parse so that compiling a
// templated payload costs no allocation of its own in the common case: its holes, references and parts are windows
// of slabs shared by the payloads of the batch, and its literal text is sliced from the payload itself whenever it
// stands there unchanged.
type jsonScratch struct {
	pieces   []piece
	segs     []jseg
	refs     []ref
	arena    []byte    // every literal of the template, in order
	spans    []span    // each seg's literal
	start    int       // start in arena of the literal before the next hole
	rawStart int       // start in raw of the literal before the next hole
	fix      []partFix // where each embedded part's literal is
	lits     string    // the arena as a string, made at most once per template when some literal needs it

	// Storage handed out to templates. A template's segs, refs and parts are capped windows of these (nothing can
	// append across them), and its jsonHoles an element of holeSlab; a full slab is left to its templates and a new
	// one made. The first slabs are sized from body (the whole batch, when known): a template has at most one ref
	// per "${", segs and parts at most two, and a templated payload holds at least one "${".
	body     string
	est      int  // count of "${" in body
	counted  bool // est is set
	segSlab  []jseg
	refSlab  []ref
	partSlab []part
	holeSlab []jsonHoles
}

// reset empties sc for another batch, dropping every reference to this one's strings and Plan. An arena grown
// past 64 KiB by a huge payload is let go rather than kept in the pool.
func (sc *jsonScratch) reset() {
	if cap(sc.arena) > 64<<10 {
		sc.arena = nil
	}
	clear(sc.pieces[:cap(sc.pieces)])
	clear(sc.segs[:cap(sc.segs)])
	clear(sc.refs[:cap(sc.refs)])
	clear(sc.fix[:cap(sc.fix)])
	*sc = jsonScratch{
		pieces: sc.pieces[:0],
		segs:   sc.segs[:0],
		refs:   sc.refs[:0],
		arena:  sc.arena[:0],
		spans:  sc.spans[:0],
		fix:    sc.fix[:0],
	}
}

// span is where a literal is: arena[a:b], and raw[ra:rb] when that holds the same text (checked before use).
type span struct{ a, b, ra, rb int }

type partFix struct {
	p *part
	span
}

// endSeg closes the literal before a hole that starts at raw[rawEnd].
func (sc *jsonScratch) endSeg(hole jseg, rawEnd int) {
	sc.spans = append(sc.spans, span{sc.start, len(sc.arena), sc.rawStart, rawEnd})
	sc.segs = append(sc.segs, hole)
}

// lit returns the literal at s: a substring of raw when raw holds the same text there, else of sc.lits.
func (sc *jsonScratch) lit(raw string, s span) string {
	if 0 <= s.ra && s.ra <= s.rb && s.rb <= len(raw) && raw[s.ra:s.rb] == string(sc.arena[s.a:s.b]) {
		return raw[s.ra:s.rb]
	}
	if len(sc.lits) != len(sc.arena) {
		sc.lits = string(sc.arena)
	}
	return sc.lits[s.a:s.b]
}

// slabSize is the size of a new slab for n items, per (times) "${" in the body.
func (sc *jsonScratch) slabSize(n, per int) int {
	if !sc.counted {
		sc.est, sc.counted = strings.Count(sc.body, "${"), true
	}
	return max(n, per*sc.est, 8)
}

// takeHoles returns a new jsonHoles from a slab: nothing appends to a full slab, so the pointer stays valid.
func (sc *jsonScratch) takeHoles() *jsonHoles {
	if len(sc.holeSlab) == cap(sc.holeSlab) {
		sc.holeSlab = make([]jsonHoles, 0, sc.slabSize(1, 1))
	}
	sc.holeSlab = sc.holeSlab[:len(sc.holeSlab)+1]
	return &sc.holeSlab[len(sc.holeSlab)-1]
}

func (sc *jsonScratch) takeSegs(src []jseg) []jseg {
	return append(window(&sc.segSlab, len(src), sc.slabSize(len(src), 2)), src...)
}

func (sc *jsonScratch) takeRefs(src []ref) []ref {
	return append(window(&sc.refSlab, len(src), sc.slabSize(len(src), 1)), src...)
}

// takeParts returns an empty window of n parts, to be appended to (never beyond n).
func (sc *jsonScratch) takeParts(n int) []part {
	return window(&sc.partSlab, n, sc.slabSize(n, 2))
}

// window returns an empty window of n items of *slab, to be appended to (never beyond n). A slab without room for n
// is replaced by a new one of size items; the old one stays with the templates that hold windows of it.
func window[T any](slab *[]T, n, size int) []T {
	if cap(*slab)-len(*slab) < n {
		*slab = make([]T, 0, size)
	}
	l := len(*slab)
	*slab = (*slab)[:l+n]
	return (*slab)[l : l : l+n]
}

// compileJSON compiles a payload. raw is the payload exactly as received, already validated by the decoder (syntax,
// UTF-8, duplicate names), so the scan here only has to tell strings from structure. baseDepth is the nesting depth
// at which the payload stands in the body; the payload is refused (depth > 0 returned) when the body would nest
// deeper than maxDepth.
//
// Only string values are templates: a "${" in an object member name is literal text, because names are not
// values and substituting one could forge or collide members.
func compileJSON(raw string, baseDepth, maxDepth int, sc *jsonScratch) (t JSONTemplate, problems []string, tooDeep int) {
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

	sc.segs, sc.refs, sc.arena, sc.spans, sc.fix = sc.segs[:0], sc.refs[:0], sc.arena[:0], sc.spans[:0], sc.fix[:0]
	sc.start, sc.rawStart, sc.lits = 0, 0, ""
	var (
		last        int // raw[last:] is not yet in the arena
		depth, maxd int
		changed     bool // some string was rewritten: the arena differs from raw
	)
	for i := 0; i < len(raw); {
		switch raw[i] {
		case '"':
			end := stringEnd(raw, i)
			content := raw[i+1 : end-1]
			if !isName(raw, end) && (strings.IndexByte(content, '$') >= 0 || strings.Contains(content, `\u0024`)) {
				s, at := content, i+1 // at: where s stands in raw, -1 when it was unescaped
				if strings.IndexByte(content, '\\') >= 0 {
					b, _ := jsontext.AppendUnquote(nil, raw[i:end])
					s, at = string(b), -1
				}
				if hasTemplate(s) {
					// A malformed placeholder is reported, and the well-formed ones around it are still compiled
					// so that their references are checked too.
					var perrs []string
					sc.pieces, perrs = splitTemplate(sc.pieces[:0], s)
					problems = append(problems, perrs...)
					sc.arena = append(sc.arena, raw[last:i]...)
					last, changed = end, true
					sc.compileString(sc.pieces, s, i, end, at)
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
	case !changed:
		t.raw = raw
	case len(sc.segs) == 0:
		t.raw = string(append(sc.arena, raw[last:]...))
	default:
		sc.arena = append(sc.arena, raw[last:]...)
		sc.endSeg(jseg{ref: -1}, len(raw))
		h := sc.takeHoles()
		h.segs = sc.takeSegs(sc.segs)
		h.refs = sc.takeRefs(sc.refs)
		for k := range h.segs {
			h.segs[k].lit = sc.lit(raw, sc.spans[k])
		}
		t.holes = h
		for _, f := range sc.fix {
			f.p.lit = sc.lit(raw, f.span)
		}
	}
	return t, problems, 0
}

// compileString adds one templated string value, raw[i:end], whose text is s: a whole-value hole, a precomputed
// literal (only $${ escapes), or a hole that builds a JSON string from literal parts and interpolated values. at is
// where s stands in raw, -1 when the string as written differs from s (it has escapes).
func (sc *jsonScratch) compileString(pieces []piece, s string, i, end, at int) {
	switch {
	case len(pieces) == 1 && pieces[0].isRef:
		sc.endSeg(jseg{ref: int32(len(sc.refs))}, i)
		sc.refs = append(sc.refs, ref{refSpec: pieces[0].ref})
		sc.start, sc.rawStart = len(sc.arena), end
	case !anyRef(pieces):
		sc.arena = append(sc.arena, '"')
		for _, p := range pieces {
			sc.arena = jsonscan.AppendStringContent(sc.arena, p.lit)
		}
		sc.arena = append(sc.arena, '"')
	default:
		n := 0 // one part per reference, and one for trailing literal text
		for _, p := range pieces {
			if p.isRef {
				n++
			}
		}
		if !pieces[len(pieces)-1].isRef {
			n++
		}
		parts := sc.takeParts(n)    // never grows: pointers into it stay valid
		sc.endSeg(jseg{ref: -1}, i) // its text is set below, once parts is complete
		// Each part's literal, JSON-escaped, is the text as written when s is and the literal holds no $${ escape;
		// pos follows the pieces through s to say where (lit checks it before use).
		a, pos, from := len(sc.arena), 0, 0
		rawSpan := func() (int, int) {
			if at < 0 {
				return -1, -1
			}
			return at + from, at + pos
		}
		for _, p := range pieces {
			if !p.isRef {
				sc.arena = jsonscan.AppendStringContent(sc.arena, p.lit)
				if p.lit == "${" && strings.HasPrefix(s[pos:], "$${") {
					pos += 3
				} else {
					pos += len(p.lit)
				}
				continue
			}
			ra, rb := rawSpan()
			parts = append(parts, part{ref: int32(len(sc.refs))})
			sc.refs = append(sc.refs, ref{refSpec: p.ref})
			sc.fix = append(sc.fix, partFix{&parts[len(parts)-1], span{a, len(sc.arena), ra, rb}})
			pos += len(p.ref.text)
			a, from = len(sc.arena), pos
		}
		if len(sc.arena) > a {
			ra, rb := rawSpan()
			parts = append(parts, part{ref: -1})
			sc.fix = append(sc.fix, partFix{&parts[len(parts)-1], span{a, len(sc.arena), ra, rb}})
		}
		sc.segs[len(sc.segs)-1].text = parts
		sc.start, sc.rawStart = len(sc.arena), end
	}
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
				acc = jsonscan.AppendStringContent(acc, p.lit)
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
	pieces, perrs := splitTemplate(nil, value)
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
	pieces, perrs := splitTemplate(nil, text)
	if perrs != nil {
		// Keep the well-formed references so that they are checked too; the batch is refused anyway.
		t.holes = &pathHoles{}
		t.holes.parts = textParts(pieces, &t.holes.refs, false, true)
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
	t.holes = &pathHoles{blocked: list}
	t.holes.parts = textParts(pieces, &t.holes.refs, false, true)
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

package planner

import (
	"net/url"
	"slices"
	"strings"

	"github.com/batchd/batchd/internal/errcode"
)

// PathError is a refused method path. CheckPath returns it; Reason is ReasonInvalidPath or ReasonNestedBatch.
type PathError struct {
	Path   string
	Reason Reason
	Detail string
}

func (e *PathError) Error() string { return "path " + quoteClip(e.Path) + " refused: " + e.Detail }

// CheckPath reports whether p is a safe method path (README "Requests"), nil when it is; otherwise a *PathError.
//
// A safe path, joined under the upstream base URL's path, can only name a resource under that path: it has no
// scheme, host, user info, fragment, dot or empty segment, backslash or control character, and percent-decoding
// it once produces no '/', '\\' or control character. It does not name the batch endpoint itself. The query (after
// the first '?') is kept; its characters must be ones a request line can carry unescaped.
func CheckPath(p string) error {
	if e := checkPath(p, false); e != nil {
		return e
	}
	return nil
}

// checkPath is CheckPath; with substituted set it checks a path built by PathTemplate.Resolve, where a value's '/'
// or '\\' was escaped (%2F, %5C) to keep the value in one segment. Such an encoded separator is then accepted, but
// the parts it separates are checked as segments too (no "." or ".."; nested batch), for the sake of upstreams that
// decode %2F before routing. Literal parts of a template were checked strictly at plan time.
func checkPath(p string, substituted bool) *PathError {
	refuse := func(why string) *PathError { return &PathError{Path: p, Reason: ReasonInvalidPath, Detail: why} }
	if p == "" {
		return refuse("empty path")
	}
	pathPart, query, hasQuery := strings.Cut(p, "?")
	if hasQuery {
		if why := checkQuery(query); why != "" {
			return refuse(why)
		}
	}
	rest := strings.TrimPrefix(pathPart, "/")
	if rest == "" {
		return refuse("empty path")
	}
	if rest[0] == '/' {
		return refuse(`a path may not start with "//" (that names a host)`)
	}
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; {
		case c < 0x20 || c == 0x7f:
			return refuse("control character in path")
		case c == '\\':
			return refuse("backslash in path")
		case c == '#':
			return refuse(`fragment ("#") in path`)
		}
	}
	var prev, last string
	n := 0
	for seg := range strings.SplitSeq(rest, "/") {
		if seg == "" {
			return refuse("empty path segment")
		}
		dec := seg
		if strings.IndexByte(seg, '%') >= 0 {
			var err error
			if dec, err = url.PathUnescape(seg); err != nil {
				return refuse("invalid percent-escape in segment " + quoteClip(seg))
			}
			for i := 0; i < len(dec); i++ {
				switch c := dec[i]; {
				case (c == '/' || c == '\\') && !substituted:
					return refuse("percent-encoded " + quote(string(rune(c))) + " in segment " + quoteClip(seg))
				case c < 0x20 || c == 0x7f:
					return refuse("percent-encoded control character in segment " + quoteClip(seg))
				}
			}
		}
		if route := routeSegment(dec); route == "." || route == ".." {
			return refuse(`"." or ".." segment`)
		}
		if n == 0 {
			if strings.IndexByte(dec, ':') >= 0 {
				return refuse(`":" in the first segment (a scheme or absolute URL)`)
			}
			if strings.IndexByte(dec, '@') >= 0 {
				return refuse(`"@" in the first segment (user info)`)
			}
		}
		if !substituted || strings.IndexAny(dec, `/\`) < 0 {
			prev, last = last, routeSegment(dec)
			n++
			continue
		}
		for part := range strings.FieldsFuncSeq(dec, isSeparator) {
			part = routeSegment(part)
			if part == "." || part == ".." {
				return refuse(`a substituted value holds a "." or ".." part in segment ` + quoteClip(seg))
			}
			prev, last = last, part
			n++
		}
	}
	if strings.EqualFold(last, "batch") && (n == 1 || strings.EqualFold(prev, "v1")) {
		return &PathError{Path: p, Reason: ReasonNestedBatch, Detail: "a step may not call the batch endpoint"}
	}
	return nil
}

// routeSegment is a decoded segment as servers that take path parameters route it: without the ";…" that follows
// it (RFC 3986 §3.3; Tomcat and Spring drop it before matching, so "Item/Import;x" is Item/Import and "..;" is "..").
func routeSegment(seg string) string {
	if i := strings.IndexByte(seg, ';'); i >= 0 {
		return seg[:i]
	}
	return seg
}

func isSeparator(r rune) bool { return r == '/' || r == '\\' }

// checkQuery refuses what a request line cannot carry as is. Go's client re-escapes a path but sends the raw query
// verbatim, so a space or a quote there would corrupt the request sent upstream.
func checkQuery(q string) string {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "control character in query"
		case c == '#':
			return `fragment ("#") in query`
		case c == '\\':
			return "backslash in query"
		case c == ' ' || c >= 0x80 || strings.IndexByte(`"<>{}|^`+"`", c) >= 0:
			return "character " + quote(string(rune(c))) + " in query must be percent-encoded"
		case c == '%':
			if i+2 >= len(q) || !ishex(q[i+1]) || !ishex(q[i+2]) {
				return "invalid percent-escape in query"
			}
		}
	}
	return ""
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// blocked reports whether the method path (no leading "/", no query) is one of cfg.Blocked, compared
// case-insensitively on the once-decoded path so that encoding cannot dodge the list.
func blocked(pathPart string, list []string) bool {
	if len(list) == 0 {
		return false
	}
	dec := pathPart
	if strings.IndexByte(pathPart, '%') >= 0 {
		var err error
		if dec, err = url.PathUnescape(pathPart); err != nil {
			return false // refused by checkPath anyway
		}
	}
	// Some upstreams treat '\\' as '/'; a substituted value may carry one (escaped), so compare as if they did.
	if strings.IndexByte(dec, '\\') >= 0 {
		dec = strings.ReplaceAll(dec, `\`, "/")
	}
	// Path parameters (";…" after a segment) are dropped before routing by some servers: compare without them, and
	// without the empty segments that dropping can leave ("Item/;x/Import").
	if strings.IndexByte(dec, ';') >= 0 {
		segs := strings.Split(dec, "/")
		kept := segs[:0]
		for _, seg := range segs {
			if seg = routeSegment(seg); seg != "" {
				kept = append(kept, seg)
			}
		}
		dec = strings.Join(kept, "/")
	}
	// Some frameworks route "Import.json", "Import." and "Import " to Import (a format suffix, trailing dots and
	// spaces dropped): compare without them too.
	bare := withoutSuffix(dec)
	for _, b := range list {
		b = strings.Trim(strings.TrimSpace(b), "/")
		if b != "" && (strings.EqualFold(dec, b) || strings.EqualFold(bare, b)) {
			return true
		}
	}
	return false
}

// withoutSuffix is a method path with its last segment cut at its first '.', after trailing dots and spaces.
func withoutSuffix(p string) string {
	dir, last := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, last = p[:i+1], p[i+1:]
	}
	last = strings.TrimRight(last, ". ")
	if i := strings.IndexByte(last, '.'); i > 0 {
		last = last[:i]
	}
	return dir + last
}

// compilePath compiles a step's path as written. name is the method path for Step.Name (no leading "/", no query).
// A path that is exactly one placeholder (after an optional leading "/") is a URL reference, resolved against base
// (README "REST APIs").
func compilePath(text string, list []string, base *upstreamBase) (t PathTemplate, name string, reason Reason, detail string) {
	if !hasTemplate(text) {
		return compileStaticPath(text, text, list)
	}
	pieces, perrs := splitTemplate(nil, text)
	if perrs != nil {
		// Keep the well-formed references so that they are checked too; the batch is refused anyway.
		t.parts = textParts(pieces, &t.refs, false, true)
		return t, "", ReasonPlaceholder, "path: " + strings.Join(perrs, "; ")
	}
	if !anyRef(pieces) {
		return compileStaticPath(text, literalText(pieces, ""), list)
	}
	t.text = strings.TrimPrefix(text, "/")
	t.blocked = slices.Clone(list) // checked again at run time: a copy the caller cannot change
	if len(pieces) == 1 || len(pieces) == 2 && !pieces[0].isRef && pieces[0].lit == "/" {
		t.base = base
		t.parts = textParts(pieces[len(pieces)-1:], &t.refs, false, false)
		return t, templateName(t.text), "", ""
	}
	// Check the literal parts now, each placeholder standing for a harmless segment; the resolved path is checked
	// again at run time. The check sees the leading "/" so that "//${A}" is refused as a host.
	if e := checkPath(literalText(pieces, "x"), false); e != nil {
		return PathTemplate{}, "", e.Reason, e.Error()
	}
	if !pieces[0].isRef {
		pieces[0].lit = strings.TrimPrefix(pieces[0].lit, "/")
	}
	t.parts = textParts(pieces, &t.refs, false, true)
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

// PathTemplate is a compiled method path.
type PathTemplate struct {
	text     string // as written, leading "/" removed
	resolved string // static: the checked path, leading "/" removed, query kept
	// A templated path: its parts and references, and Config.Blocked, checked again on the resolved path.
	parts   []part
	refs    []ref
	blocked []string
	// base is set for a path that is exactly one placeholder: its value is a URL reference resolved against it.
	base *upstreamBase
}

// upstreamBase is the URL step paths are relative to (Config.Base), as URL references are resolved against it.
type upstreamBase struct {
	url  url.URL // scheme and host when known; Path and RawPath end in "/"
	path string  // url.EscapedPath()
}

// newBase returns the base of Config.Base: its scheme, host and path, the path ending in "/"; the path "/" alone
// when there is none.
func newBase(u *url.URL) *upstreamBase {
	b := &upstreamBase{url: url.URL{Path: "/"}}
	if u != nil {
		b.url = url.URL{Scheme: strings.ToLower(u.Scheme), Host: strings.ToLower(u.Host), Path: u.Path, RawPath: u.RawPath}
	}
	if !strings.HasSuffix(b.url.Path, "/") {
		b.url.Path += "/"
		if b.url.RawPath != "" {
			b.url.RawPath += "/"
		}
	}
	if !strings.HasPrefix(b.url.Path, "/") {
		b.url.Path = "/" + b.url.Path
	}
	b.path = b.url.EscapedPath()
	return b
}

// relative turns a URL reference (a Location header, a links.next) into a method path under the base: the
// reference is resolved as RFC 3986 says (an absolute path replaces the base's path), and must stay on the base's
// origin and under its path. It returns the path (no leading "/", query kept), or why the reference is refused.
func (b *upstreamBase) relative(ref string) (string, string) {
	u, err := url.Parse(ref)
	switch {
	case err != nil:
		return "", "not a URL reference"
	case u.User != nil:
		return "", "a URL reference may not hold user info"
	case u.Opaque != "":
		return "", "not a hierarchical URL"
	case (u.Scheme != "" || u.Host != "") && b.url.Host == "":
		return "", "an absolute URL cannot be checked against this server's upstream (none is configured): send a path"
	case (u.Scheme != "" || u.Host != "") && (!strings.EqualFold(u.Scheme, b.url.Scheme) || !strings.EqualFold(u.Host, b.url.Host)):
		return "", "it leaves the upstream's origin " + b.url.Scheme + "://" + b.url.Host
	}
	u.Fragment, u.RawFragment = "", ""
	abs := b.url.ResolveReference(u)
	p := abs.EscapedPath()
	if !strings.HasPrefix(p, b.path) || len(p) == len(b.path) {
		return "", "it is not under the upstream's base path " + quote(b.path)
	}
	rel := p[len(b.path):]
	if rel[0] == '/' {
		return "", "empty path segment after the base path"
	}
	if abs.RawQuery != "" {
		rel += "?" + abs.RawQuery
	}
	return rel, ""
}

// Static reports whether the path holds no placeholder; Resolve then returns it without looking at r.
func (t *PathTemplate) Static() bool { return t.parts == nil }

// String returns the path as written, without its leading "/".
func (t *PathTemplate) String() string { return t.text }

// Resolve returns the method path (no leading "/", query kept), each substituted value escaped as one path
// segment, and checks the result again (a refused path is a *ResolveError with errcode.ResolvedPathRefused).
// A value in the query is escaped with url.QueryEscape. A path over limit bytes (0: no limit) is a *TooLargeError.
func (t *PathTemplate) Resolve(r *Responses, limit int) (string, error) {
	if t.parts == nil {
		return t.resolved, nil
	}
	if t.base != nil {
		return t.resolveReference(r, limit)
	}
	b := make([]byte, 0, len(t.text)+16)
	var val []byte
	for _, p := range t.parts {
		b = append(b, p.lit...)
		if limit > 0 && len(b) > limit {
			return "", &TooLargeError{Part: "path", Size: int64(len(b)), Limit: int64(limit), AtLeast: true}
		}
		if p.ref < 0 {
			continue
		}
		room := -1 // appendText's limit: none
		if limit > 0 {
			room = limit - len(b)
		}
		var err error
		if val, err = appendText(val[:0], &t.refs[p.ref], r, room); err != nil {
			if tl, ok := err.(*TooLargeError); ok {
				tl.Part, tl.Size, tl.Limit = "path", tl.Size+int64(len(b)), int64(limit)
			}
			return "", err
		}
		if p.query {
			b = append(b, url.QueryEscape(string(val))...)
		} else {
			b = append(b, url.PathEscape(string(val))...)
		}
		if limit > 0 && len(b) > limit {
			return "", &TooLargeError{Part: "path", Size: int64(len(b)), Limit: int64(limit), AtLeast: true}
		}
	}
	return t.check(string(b), "")
}

// resolveReference resolves a path that is one placeholder: its value, a URL reference, becomes a method path
// under the base, checked like any resolved path.
func (t *PathTemplate) resolveReference(r *Responses, limit int) (string, error) {
	room := -1
	if limit > 0 {
		room = limit
	}
	v, err := appendText(nil, &t.refs[0], r, room)
	if err != nil {
		if tl, ok := err.(*TooLargeError); ok {
			tl.Part, tl.Limit = "path", int64(limit)
		}
		return "", err
	}
	p, why := t.base.relative(string(v))
	if why != "" {
		return "", &ResolveError{
			Placeholder: t.refs[0].text,
			Code:        errcode.ResolvedPathRefused,
			Detail:      "URL reference " + quoteClip(string(v)) + " (from " + t.refs[0].text + ") refused: " + why,
		}
	}
	if limit > 0 && len(p) > limit {
		return "", &TooLargeError{Part: "path", Size: int64(len(p)), Limit: int64(limit)}
	}
	return t.check(p, " as a URL reference")
}

// check checks a resolved path as CheckPath does (a value's encoded '/' allowed), and against the blocked methods.
func (t *PathTemplate) check(s, how string) (string, error) {
	var why string
	if e := checkPath(s, true); e != nil {
		why = e.Detail
	} else if pathPart, _, _ := strings.Cut(s, "?"); blocked(pathPart, t.blocked) {
		why = "the method is blocked"
	} else {
		return s, nil
	}
	return "", &ResolveError{
		Placeholder: t.refs[0].text,
		Code:        errcode.ResolvedPathRefused,
		Detail:      "resolved path " + quoteClip(s) + " (from " + quoteClip(t.text) + how + ") refused: " + why,
	}
}

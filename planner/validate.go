package planner

import (
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// Stage two of Parse: validate. Each step's members are checked and compiled: its headers, payload, method and
// path (and its rollback's), in that order, each problem naming what to fix. Keys and references are bind's.

// checkedCall is a step's (or rollback's) call once checked and compiled.
type checkedCall struct {
	method  string
	name    string // the method path for metrics and logs (Step.Name)
	path    PathTemplate
	headers []Header
	body    *JSONTemplate   // nil when there is no payload, or it is sent as text
	text    *StringTemplate // a string payload sent as is under a non-JSON Content-Type; nil otherwise
	// A step's REST helpers (README "REST APIs"); a rollback has none.
	okStatus []int
	when     *Condition
	forEach  *ref
	capture  []string // capture_headers as written, in the order given, each name once
}

// validate checks and compiles every step's call and rollback.
func validate(b *batchDraft, cfg Config, probs *problems) (calls []checkedCall, rollbacks []*checkedCall) {
	calls = make([]checkedCall, len(b.steps))
	rollbacks = make([]*checkedCall, len(b.steps))
	bodies := make([]JSONTemplate, len(b.steps)) // the steps' payloads, in one allocation
	base := newBase(cfg.Base)
	for i := range b.steps {
		s := &b.steps[i]
		v := callChecker{i: i, cfg: cfg, probs: probs, base: base}
		calls[i] = v.check(&s.call, &bodies[i])
		v.rest(s, &calls[i])
		if s.rollback != nil {
			v.what = "rollback"
			rb := v.check(s.rollback, new(JSONTemplate))
			rollbacks[i] = &rb
		}
	}
	return calls, rollbacks
}

// callChecker checks the call of step i: the step's own (what "") or its rollback's (what "rollback").
type callChecker struct {
	i     int
	what  string
	cfg   Config
	probs *problems
	base  *upstreamBase
}

// prefix starts a problem about the call: "" for a step's own, or "rollback" and sep.
func (v *callChecker) prefix(sep string) string {
	if v.what == "" {
		return ""
	}
	return v.what + sep
}

// field names a member in problems: "payload", or "rollback.payload".
func (v *callChecker) field(name string) string {
	if v.what == "" {
		return name
	}
	return v.what + "." + name
}

func (v *callChecker) problem(r Reason, detail string) { v.probs.add(v.i, phaseStep, r, detail) }

// check checks and compiles c, its payload into body.
func (v *callChecker) check(c *call, body *JSONTemplate) checkedCall {
	out := checkedCall{method: "POST"}
	out.headers = v.headers(c.headers)
	switch {
	case !c.hasPayload:
	case textPayload(out.headers, &c.payload):
		out.text = v.text(&c.payload, c.payloadField)
	case v.payload(&c.payload, c.payloadField, body):
		out.body = body
	}
	if c.methodGiven {
		v.method(&out.method, c.method)
	}
	switch {
	case c.pathGiven:
		t, name, reason, detail := compilePath(c.path, v.cfg.Blocked, v.base)
		if reason != "" {
			v.problem(reason, v.prefix(" ")+detail)
		}
		out.path, out.name = t, name
	case !c.pathBad:
		v.problem(ReasonInvalidPath, v.prefix(": ")+`missing "path"`)
	}
	return out
}

// headers checks and compiles a call's headers: names that are HTTP tokens, none that a call may not carry
// (RefusedHeader), none twice (names compared canonical), values without control characters.
func (v *callChecker) headers(hs []headerDraft) []Header {
	if len(hs) == 0 {
		return nil
	}
	what := v.prefix(" ")
	out := make([]Header, 0, len(hs))
	for _, h := range hs {
		if !isToken(h.name) {
			v.problem(ReasonInvalidHeader, what+"header name "+quoteClip(h.name)+" is not an HTTP token")
			continue
		}
		name := textproto.CanonicalMIMEHeaderKey(h.name)
		if RefusedHeader(name) {
			v.problem(ReasonInvalidHeader, what+"header "+quote(name)+" may not be set by a step")
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o.Name == name
		}
		if dup {
			v.problem(ReasonInvalidHeader, what+"header "+quote(name)+" given twice")
			continue
		}
		t, reasons, details := compileHeader(name, h.value)
		for k := range reasons {
			v.problem(reasons[k], what+details[k])
		}
		out = append(out, Header{Name: name, Value: t})
	}
	return out
}

// payload checks a payload's size and nesting and compiles its placeholders into t; false when it is refused.
func (v *callChecker) payload(p *payloadDraft, name string, t *JSONTemplate) bool {
	field := v.field(name)
	if len(p.raw) > v.cfg.MaxPayload {
		v.problem(ReasonTooLarge, quote(field)+" is "+strconv.Itoa(len(p.raw))+" bytes; at most "+
			strconv.Itoa(v.cfg.MaxPayload)+" allowed")
		return false
	}
	if p.depth > v.cfg.MaxDepth {
		v.problem(ReasonInvalidJSON, quote(field)+" nests "+strconv.Itoa(p.depth)+" levels deep in the body; at most "+
			strconv.Itoa(v.cfg.MaxDepth)+" allowed")
		return false
	}
	for _, e := range compileJSON(p, t) {
		v.problem(ReasonPlaceholder, field+": "+e)
	}
	return true
}

// textPayload reports whether a payload is sent as text: a JSON string under a Content-Type the step sets, as
// written, to a type that is not JSON (a form, plain text, XML).
func textPayload(headers []Header, p *payloadDraft) bool {
	if len(p.raw) == 0 || p.raw[0] != '"' {
		return false
	}
	for _, h := range headers {
		if h.Name == "Content-Type" && h.Value.Static() {
			return !JSONMediaType(h.Value.String())
		}
	}
	return false
}

// text compiles a string payload sent as is: its placeholders are interpolated as text.
func (v *callChecker) text(p *payloadDraft, name string) *StringTemplate {
	field := v.field(name)
	if len(p.raw) > v.cfg.MaxPayload {
		v.problem(ReasonTooLarge, quote(field)+" is "+strconv.Itoa(len(p.raw))+" bytes; at most "+
			strconv.Itoa(v.cfg.MaxPayload)+" allowed")
		return nil
	}
	s, _ := jsontext.AppendUnquote(nil, []byte(p.raw)) // the decoder checked it
	t, perrs := compileText(string(s))
	for _, e := range perrs {
		v.problem(ReasonPlaceholder, field+": "+e)
	}
	return &t
}

// rest checks and compiles a step's REST helpers: ok_status, capture_headers, for_each and when.
func (v *callChecker) rest(d *draft, c *checkedCall) {
	if len(d.okStatus) > 0 {
		c.okStatus = slices.Compact(slices.Sorted(slices.Values(d.okStatus)))
	}
	for _, name := range d.capture {
		switch {
		case !isToken(name):
			v.problem(ReasonInvalidHeader, `"capture_headers": `+quoteClip(name)+" is not an HTTP header name")
		case len(c.capture) >= maxCapture:
			v.problem(ReasonInvalidHeader, `"capture_headers": at most `+strconv.Itoa(maxCapture)+" headers")
			return
		default:
			switch textproto.CanonicalMIMEHeaderKey(name) {
			case "Set-Cookie", "Set-Cookie2":
				v.problem(ReasonInvalidHeader, `"capture_headers": `+name+" is never captured: a cookie must not reach the answer or another step")
				continue
			}
			if !slices.ContainsFunc(c.capture, func(n string) bool { return strings.EqualFold(n, name) }) {
				c.capture = append(c.capture, name)
			}
		}
	}
	if d.forEach != "" {
		pieces, perrs := splitTemplate(nil, d.forEach)
		switch {
		case len(perrs) > 0:
			v.problem(ReasonPlaceholder, `"for_each": `+strings.Join(perrs, "; "))
		case len(pieces) != 1 || !pieces[0].isRef:
			v.problem(ReasonInvalidForEach, `"for_each" must be exactly one placeholder naming a list, e.g. "${L.result}", not `+quoteClip(d.forEach))
		case pieces[0].ref.meta != metaBody:
			v.problem(ReasonInvalidForEach, `"for_each": `+pieces[0].ref.text+" is a status or a header, not a list")
		case pieces[0].ref.key == keyItem || pieces[0].ref.key == keyIndex || pieces[0].ref.key == keySelf:
			v.problem(ReasonInvalidForEach, `"for_each": `+pieces[0].ref.text+" must name a step's response")
		default:
			c.forEach = &ref{refSpec: pieces[0].ref}
		}
	}
	if d.when != "" {
		cond, why := parseCondition(d.when)
		if why != "" {
			v.problem(ReasonInvalidCondition, `"when": `+quoteClip(d.when)+": "+why)
		} else {
			c.when = cond
		}
	}
}

// maxCapture bounds capture_headers: each captured header is kept for the batch and may be written in its answer.
const maxCapture = 32

// method stores an HTTP method upper-cased in dst. CONNECT and TRACE are refused: CONNECT would turn the upstream
// call into a tunnel request that drops the path, and TRACE echoes the forwarded headers (Authorization) back.
func (v *callChecker) method(dst *string, m string) {
	what := v.prefix(" ")
	if !isToken(m) {
		v.problem(ReasonInvalidMethod, what+"method "+quoteClip(m)+" is not an HTTP token")
		return
	}
	switch u := strings.ToUpper(m); u {
	case "CONNECT", "TRACE":
		v.problem(ReasonInvalidMethod, what+"method "+u+" may not be used in a batch")
	default:
		*dst = u
	}
}

// RefusedHeader reports whether a call may not carry the header (canonical name, textproto.CanonicalMIMEHeaderKey):
// a step may not set it (the planner refuses it) and no invoker sends it, whoever set it. These are the hop-by-hop
// headers and those that frame the message (Host, Content-Length, Transfer-Encoding, …), which net/http derives
// itself; Accept-Encoding, which the HTTP client negotiates so that it can read and cap a body it understands; and
// the client-address headers (X-Forwarded-For, Forwarded, X-Real-Ip), with which a step could claim any address
// to an upstream that trusts them.
func RefusedHeader(name string) bool {
	switch name {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade",
		"Http2-Settings", "Accept-Encoding", "X-Forwarded-For", "Forwarded", "X-Real-Ip":
		return true
	}
	return strings.HasPrefix(name, "Proxy-")
}

// JSONMediaType reports whether a Content-Type names JSON: application/json or an application/…+json type (RFC
// 6839), case ignored, parameters aside. An absent one ("", or blanks) counts as JSON. It does not allocate.
func JSONMediaType(ct string) bool {
	if strings.TrimSpace(ct) == "" {
		return true
	}
	mt, _, _ := strings.Cut(ct, ";")
	typ, sub, ok := strings.Cut(strings.TrimSpace(mt), "/")
	if !ok || !strings.EqualFold(typ, "application") {
		return false
	}
	const suffix = "+json"
	return strings.EqualFold(sub, "json") ||
		len(sub) > len(suffix) && strings.EqualFold(sub[len(sub)-len(suffix):], suffix)
}

// isToken reports whether s is an RFC 7230 token (header names, methods).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return true
}

package planner

import (
	"bytes"
	"errors"
	"hash/maphash"
	"io"
	"net/textproto"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxSteps   = 50
	DefaultMaxDepth   = 64
	DefaultMaxPayload = 1 << 20
)

// Parse decodes and validates a batch request body. A refused batch returns an *Error listing every problem.
//
// Parse never keeps a reference to body: the Plan holds its own copy. A "payload" (or "body") of null is the same
// as none: the step is sent without a body.
func Parse(body []byte, cfg Config) (*Plan, error) {
	if cfg.MaxSteps <= 0 {
		cfg.MaxSteps = DefaultMaxSteps
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	p := parser{cfg: cfg, src: string(body)}
	w := parseWork.Get().(*parseBuffers)
	p.steps = w.steps[:0]
	defer func() { w.release(p.steps, cfg.MaxSteps) }()
	p.work, p.scratch = w, &w.sc
	p.scratch.body = p.src
	// A bytes.Buffer lets the decoder work on body in place, so decoder offsets index p.src as well.
	w.bb = *bytes.NewBuffer(body)
	w.dec.Reset(&w.bb)
	p.dec = &w.dec
	if err := p.decode(); err != nil {
		return nil, &Error{Problems: []Problem{{Reason: ReasonInvalidJSON, Detail: jsonDetail(err)}}}
	}
	return p.finish()
}

// parseBuffers are the working space of one Parse that no Plan keeps: the decoder, whose state stacks and
// duplicate-name sets would otherwise be grown afresh for every batch, compileJSON's scratch, the drafts (build
// copies what the Plan needs of them) and the dependency graph's key index and arrays.
type parseBuffers struct {
	bb    bytes.Buffer
	dec   jsontext.Decoder
	sc    jsonScratch
	steps []draft
	slots []int32      // bindKeys: the key index's table
	seed  maphash.Seed // the key index's hash seed, random per parseBuffers
	ints  []int        // invert's counts, then longestChain's arrays
}

var parseWork = sync.Pool{New: func() any { return &parseBuffers{seed: maphash.MakeSeed()} }}

// release returns w to the pool holding nothing of the batch: no reference to the body, to its strings or to the
// Plan's storage. steps are the drafts as grown by this Parse; they are kept for the next one unless a batch far
// over the step limit grew them.
func (w *parseBuffers) release(steps []draft, maxSteps int) {
	w.bb = bytes.Buffer{}
	w.dec.Reset(&w.bb) // drops the decoder's view of the body
	w.sc.reset()
	clear(steps) // the drafts hold the body's strings and templates; beyond len(steps) they are zero already
	w.steps = nil
	if cap(steps) <= 2*(maxSteps+1) {
		w.steps = steps[:0]
	}
	if cap(w.slots) > 4*(maxSteps+1) {
		w.slots = nil
	}
	if cap(w.ints) > 6*(maxSteps+1) {
		w.ints = nil
	}
	parseWork.Put(w)
}

// parser holds the state of one Parse.
type parser struct {
	cfg       Config
	src       string // the body; every string the Plan keeps is a substring of it unless it had to be unescaped
	dec       *jsontext.Decoder
	form      Form
	stop      bool
	atomic    bool
	timings   bool
	steps     []draft
	rbs       []draftRollback // every step's rollback, in order; draft.rb indexes it
	rollbacks []Rollback      // the Plan's, one per rbs
	// stepsField is the member that held the steps ("requests" or "batch"); "" when none. stepsBad records a
	// steps member of the wrong type, already reported.
	stepsField string
	stepsBad   bool
	probs      []problem
	headers    []draftHeader // every step's headers, in order
	depends    []string      // every step's depends_on keys, in order
	blocked    []string      // cfg.Blocked, copied once if a templated path needs it at run time
	// The last static path accepted, as written, and what it compiled to (see compilePath).
	lastPath     string
	lastTemplate PathTemplate
	lastName     string
	work         *parseBuffers
	scratch      *jsonScratch // &work.sc
}

// problem is a Problem before step labels are known. idx is the step index, -1 for the batch; phase orders a
// step's problems (its key first), keeping detection order within a phase.
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

func (p *parser) problem(idx, phase int, r Reason, detail string) {
	p.probs = append(p.probs, problem{idx: idx, phase: phase, Problem: Problem{Reason: r, Detail: detail}})
}

// draft is a step as decoded, before keys are checked and references bound. Drafts are pooled working space: build
// copies a step's templates into storage of the Plan's own.
type draft struct {
	key    string
	method string
	name   string
	path   PathTemplate
	body   JSONTemplate
	// The step's headers are parser.headers[hdr0:hdr1] and its depends_on keys parser.depends[dep0:dep1]: one
	// backing array for the batch instead of one per step.
	hdr0, hdr1 int32
	dep0, dep1 int32
	keyState   uint8
	hasBody    bool
	rb         int32 // the step's rollback is parser.rbs[rb-1]; 0 when it has none (fits the padding)
}

// draftRollback is a step's "rollback" as decoded. Its headers are parser.headers[hdr0:hdr1].
type draftRollback struct {
	method     string
	name       string
	path       PathTemplate
	body       JSONTemplate
	hdr0, hdr1 int32
	hasBody    bool
}

const (
	keyAbsent uint8 = iota
	keyGiven
	keyBad   // wrong JSON type or not an object: reported already, unusable
	keyBound // checked and unique: the step's label in problems (set by bindKeys)
)

type draftHeader struct {
	name  string
	value StringTemplate
}

// syntaxError is a problem that stops decoding, reported like malformed JSON.
type syntaxError string

func (e syntaxError) Error() string { return string(e) }

func jsonDetail(err error) string {
	var se syntaxError
	switch {
	case errors.As(err, &se):
		return string(se)
	case err == io.EOF:
		return "invalid JSON: empty body"
	}
	return "invalid JSON: " + strings.TrimPrefix(err.Error(), "jsontext: ")
}

func (p *parser) decode() error {
	switch k := p.dec.PeekKind(); k {
	case '{':
		if err := p.readBatchObject(); err != nil {
			return err
		}
	case '[':
		p.form = FormArray
		p.stepsField = "array"
		if err := p.readSteps(); err != nil {
			return err
		}
	case jsontext.KindInvalid:
		_, err := p.dec.ReadToken()
		return err
	default:
		return syntaxError("the batch must be a JSON object or array, not a " + kindName(k))
	}
	switch _, err := p.dec.ReadToken(); err {
	case io.EOF:
		return nil
	case nil:
		return syntaxError("invalid JSON: unexpected data after the batch")
	default:
		return err
	}
}

// open reads a '{' or '[' and enforces the nesting limit on the structure around payloads.
func (p *parser) open() error {
	if _, err := p.dec.ReadToken(); err != nil {
		return err
	}
	if d := p.dec.StackDepth(); d > p.cfg.MaxDepth {
		return syntaxError("invalid JSON: nesting deeper than " + strconv.Itoa(p.cfg.MaxDepth) + " levels")
	}
	return nil
}

// next reports whether another member or element follows, consuming the closing delimiter when not.
func (p *parser) next() (bool, error) {
	switch p.dec.PeekKind() {
	case '}', ']':
		_, err := p.dec.ReadToken()
		return false, err
	case jsontext.KindInvalid:
		_, err := p.dec.ReadToken()
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return false, err
	}
	return true, nil
}

// str returns the string value v just read, without allocating unless it holds an escape.
func (p *parser) str(v jsontext.Value) string {
	if bytes.IndexByte(v, '\\') < 0 {
		end := int(p.dec.InputOffset())
		return p.src[end-len(v)+1 : end-1]
	}
	b, _ := jsontext.AppendUnquote(nil, v) // the decoder validated it
	return string(b)
}

// raw returns the value v just read as it stands in the body.
func (p *parser) raw(v jsontext.Value) string {
	end := int(p.dec.InputOffset())
	return p.src[end-len(v) : end]
}

// readName reads an object member name.
func (p *parser) readName() (string, error) {
	v, err := p.dec.ReadValue()
	if err != nil {
		return "", err
	}
	return p.str(v), nil
}

// nextMember reads the next member name of the object being read; more is false once its closing brace is read.
func (p *parser) nextMember() (name string, more bool, err error) {
	if more, err = p.next(); err != nil || !more {
		return "", more, err
	}
	name, err = p.readName()
	return name, err == nil, err
}

// readBatchObject reads {"stop_on_error": …, "requests"|"batch": […]}. A batch-level field is one case here.
func (p *parser) readBatchObject() error {
	if err := p.open(); err != nil {
		return err
	}
	p.form = FormRequests
	for {
		name, more, err := p.nextMember()
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		switch name {
		case "stop_on_error":
			err = p.readBool(&p.stop, name)
		case "atomic":
			err = p.readBool(&p.atomic, name)
		case "timings":
			err = p.readBool(&p.timings, name)
		case "requests", "batch":
			if p.stepsField != "" {
				p.problem(-1, phaseStep, ReasonInvalidJSON, `both "requests" and "batch" given; send one`)
				err = p.dec.SkipValue()
				break
			}
			p.stepsField = name
			if name == "batch" {
				p.form = FormBatch
			}
			err = p.readSteps()
		default:
			p.problem(-1, phaseStep, ReasonInvalidJSON, "unknown field "+quoteClip(name))
			err = p.dec.SkipValue()
		}
		if err != nil {
			return err
		}
	}
}

func (p *parser) readBool(dst *bool, name string) error {
	v, err := p.dec.ReadValue()
	if err != nil {
		return err
	}
	switch v.Kind() {
	case 't':
		*dst = true
	case 'f':
		*dst = false
	default:
		p.problem(-1, phaseStep, ReasonInvalidJSON, quote(name)+" must be a boolean, not a "+kindName(v.Kind()))
	}
	return nil
}

func (p *parser) readSteps() error {
	if k := p.dec.PeekKind(); k != '[' {
		if k != jsontext.KindInvalid {
			p.stepsBad = true
			p.problem(-1, phaseStep, ReasonInvalidJSON, quote(p.stepsField)+" must be an array of steps, not a "+kindName(k))
		}
		return p.dec.SkipValue()
	}
	if err := p.open(); err != nil {
		return err
	}
	if cap(p.steps) == 0 {
		// The drafts are pooled, so this is paid once per pooled parseBuffers rather than per batch. Sized from the
		// body, this batch cannot outgrow them unless it is refused: a step takes at least 12 bytes ({"path":"a"}),
		// and a batch of more than MaxSteps is refused anyway. A larger later batch grows them by append, and
		// release keeps what it grew.
		p.steps = make([]draft, 0, min(len(p.src)/12+1, p.cfg.MaxSteps+1))
	}
	for i := 0; ; i++ {
		more, err := p.next()
		if err != nil || !more {
			return err
		}
		if err := p.readStep(i); err != nil {
			return err
		}
	}
}

func (p *parser) typeProblem(i int, field string, want string, got jsontext.Kind) {
	p.problem(i, phaseStep, ReasonInvalidJSON, quote(field)+" must be "+want+", not a "+kindName(got))
}

func (p *parser) readStep(i int) error {
	p.steps = append(p.steps, draft{method: "POST"})
	d := &p.steps[len(p.steps)-1]
	if k := p.dec.PeekKind(); k != '{' {
		d.keyState = keyBad
		if k != jsontext.KindInvalid {
			p.problem(i, phaseStep, ReasonInvalidJSON, "a step must be a JSON object, not a "+kindName(k))
		}
		return p.dec.SkipValue()
	}
	if err := p.open(); err != nil {
		return err
	}
	c := callReader{i: i, depth: p.dec.StackDepth()}
	for {
		name, more, err := p.nextMember()
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if handled, err := p.callField(&c, name, &d.body, &d.hasBody, &d.hdr0, &d.hdr1); handled || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		switch name {
		case "key":
			v, err := p.dec.ReadValue()
			if err != nil {
				return err
			}
			if v.Kind() != '"' {
				p.typeProblem(i, name, "a string", v.Kind())
				d.keyState = keyBad
				continue
			}
			d.key, d.keyState = p.str(v), keyGiven
		case "rollback":
			if err := p.readRollback(i, d); err != nil {
				return err
			}
		case "depends_on":
			d.dep0 = int32(len(p.depends))
			err := p.readDepends(i)
			d.dep1 = int32(len(p.depends))
			if err != nil {
				return err
			}
		default:
			p.problem(i, phaseStep, ReasonInvalidJSON, "unknown step field "+quoteClip(name))
			if err := p.dec.SkipValue(); err != nil {
				return err
			}
		}
	}
	// Method and path are checked once every member is read: their problems then follow the members' own.
	p.finishCall(&c, &d.method, &d.path, &d.name)
	return nil
}

// compilePath compiles the path of step i (or of its rollback, with what "rollback "), reporting a problem.
func (p *parser) compilePath(i int, text, what string) (PathTemplate, string) {
	// Batches often call one method many times: a static path that was accepted just before is accepted again.
	// A templated path is never reused, as its references are bound per step.
	if text == p.lastPath && text != "" {
		return p.lastTemplate, p.lastName
	}
	t, name, reason, detail := compilePath(text, p.cfg.Blocked)
	if reason != "" {
		p.problem(i, phaseStep, reason, what+detail)
		return t, "" // its references are still checked
	}
	if t.holes == nil {
		p.lastPath, p.lastTemplate, p.lastName = text, t, name
	} else if t.holes.blocked != nil {
		// A templated path checks the list again at run time: keep a copy the caller cannot change.
		if p.blocked == nil {
			p.blocked = append([]string(nil), p.cfg.Blocked...)
		}
		t.holes.blocked = p.blocked
	}
	return t, name
}

// readRollback reads a step's "rollback": {"method"?, "path", "payload" (or "body")?, "headers"?}, compiled like a
// step. Its references are bound by bindRefs, which knows the step's dependencies.
func (p *parser) readRollback(i int, d *draft) error {
	if k := p.dec.PeekKind(); k != '{' {
		if k != jsontext.KindInvalid && k != 'n' { // null: no rollback, as a null payload is no payload
			p.typeProblem(i, "rollback", "an object", k)
		}
		return p.dec.SkipValue()
	}
	if err := p.open(); err != nil {
		return err
	}
	c := callReader{i: i, what: "rollback", depth: p.dec.StackDepth()}
	p.rbs = append(p.rbs, draftRollback{method: "POST"})
	d.rb = int32(len(p.rbs))
	rb := &p.rbs[len(p.rbs)-1] // nothing below adds a rollback: the pointer stays valid
	for {
		name, more, err := p.nextMember()
		if err != nil {
			return err
		}
		if !more {
			break
		}
		handled, err := p.callField(&c, name, &rb.body, &rb.hasBody, &rb.hdr0, &rb.hdr1)
		if err != nil {
			return err
		}
		if !handled {
			p.problem(i, phaseStep, ReasonInvalidJSON, "unknown rollback field "+quoteClip(name))
			if err := p.dec.SkipValue(); err != nil {
				return err
			}
		}
	}
	p.finishCall(&c, &rb.method, &rb.path, &rb.name)
	return nil
}

// callReader collects, for step i, the members that a step and its rollback share: path, method, payload (or
// body) and headers. what is "" for the step and "rollback" for its rollback; it prefixes field names and problems.
type callReader struct {
	i            int
	what         string
	depth        int
	pathText     string
	method       string
	payloadField string
	pathGiven    bool
	pathBad      bool
	methodGiven  bool
}

// field is a member's name as problems name it: "path", or "rollback.path".
func (c *callReader) field(name string) string {
	if c.what == "" {
		return name
	}
	return c.what + "." + name
}

// prefix starts a problem's text: "", or "rollback: ".
func (c *callReader) prefix(sep string) string {
	if c.what == "" {
		return ""
	}
	return c.what + sep
}

// callField reads member name when it is one of the shared ones, into c and the given body and header window;
// handled is false, with nothing read, for any other member.
func (p *parser) callField(c *callReader, name string, body *JSONTemplate, hasBody *bool, hdr0, hdr1 *int32) (handled bool, err error) {
	switch name {
	case "path", "method":
		v, err := p.dec.ReadValue()
		if err != nil {
			return true, err
		}
		if v.Kind() != '"' {
			p.typeProblem(c.i, c.field(name), "a string", v.Kind())
			c.pathBad = c.pathBad || name == "path"
			return true, nil
		}
		if name == "path" {
			c.pathText, c.pathGiven = p.str(v), true
		} else {
			c.method, c.methodGiven = p.str(v), true
		}
	case "payload", "body":
		if c.payloadField != "" {
			p.problem(c.i, phaseStep, ReasonInvalidJSON, c.prefix(": ")+`both "payload" and "body" given; they are synonyms, send one`)
			return true, p.dec.SkipValue()
		}
		c.payloadField = name
		v, err := p.dec.ReadValue()
		if err != nil {
			return true, err
		}
		if v.Kind() != 'n' {
			*body, *hasBody = p.readPayload(c.i, p.raw(v), c.depth, c.field(name))
		}
	case "headers":
		*hdr0 = int32(len(p.headers))
		err := p.readHeaders(c.i, c.field(name))
		*hdr1 = int32(len(p.headers))
		return true, err
	default:
		return false, nil
	}
	return true, nil
}

// finishCall checks method and path once every member is read, so that their problems follow the members' own.
func (p *parser) finishCall(c *callReader, method *string, path *PathTemplate, name *string) {
	if c.methodGiven {
		p.setMethod(c.i, method, c.method, c.prefix(" "))
	}
	switch {
	case c.pathGiven:
		*path, *name = p.compilePath(c.i, c.pathText, c.prefix(" "))
	case !c.pathBad:
		p.problem(c.i, phaseStep, ReasonInvalidPath, c.prefix(": ")+`missing "path"`)
	}
}

// readPayload compiles a payload; ok is false when it was refused (too large or too deep) and must be left out.
func (p *parser) readPayload(i int, raw string, depth int, field string) (t JSONTemplate, ok bool) {
	if len(raw) > p.cfg.MaxPayload {
		p.problem(i, phaseStep, ReasonTooLarge, quote(field)+" is "+strconv.Itoa(len(raw))+" bytes; at most "+
			strconv.Itoa(p.cfg.MaxPayload)+" allowed")
		return t, false
	}
	t, perrs, tooDeep := compileJSON(raw, depth, p.cfg.MaxDepth, p.scratch)
	if tooDeep > 0 {
		p.problem(i, phaseStep, ReasonInvalidJSON, quote(field)+" nests "+strconv.Itoa(tooDeep)+
			" levels deep in the body; at most "+strconv.Itoa(p.cfg.MaxDepth)+" allowed")
		return t, false
	}
	for _, e := range perrs {
		p.problem(i, phaseStep, ReasonPlaceholder, field+": "+e)
	}
	return t, true
}

// setMethod stores an HTTP method upper-cased in dst. CONNECT and TRACE are refused: CONNECT would turn the
// upstream call into a tunnel request that drops the path, and TRACE echoes the forwarded headers (Authorization)
// back. what prefixes a problem ("rollback " for a rollback's method).
func (p *parser) setMethod(i int, dst *string, m, what string) {
	if !isToken(m) {
		p.problem(i, phaseStep, ReasonInvalidMethod, what+"method "+quoteClip(m)+" is not an HTTP token")
		return
	}
	switch u := strings.ToUpper(m); u {
	case "CONNECT", "TRACE":
		p.problem(i, phaseStep, ReasonInvalidMethod, what+"method "+u+" may not be used in a batch")
	case "POST":
		*dst = "POST"
	case "GET":
		*dst = "GET"
	case "PUT":
		*dst = "PUT"
	case "PATCH":
		*dst = "PATCH"
	case "DELETE":
		*dst = "DELETE"
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

// readHeaders reads a step's "headers" (field "headers") or its rollback's ("rollback.headers").
func (p *parser) readHeaders(i int, field string) error {
	if k := p.dec.PeekKind(); k != '{' {
		if k != jsontext.KindInvalid {
			p.typeProblem(i, field, "an object of strings", k)
		}
		return p.dec.SkipValue()
	}
	what := "" // prefixes problems with the field when it is not the step's own
	if field != "headers" {
		what = "rollback "
	}
	if err := p.open(); err != nil {
		return err
	}
	if p.headers == nil {
		// A step that sets headers usually sets one or two: size for one per step (a step rarely takes under 64
		// bytes), grow from there.
		p.headers = make([]draftHeader, 0, min(len(p.src)/64+1, p.cfg.MaxSteps+1)+1)
	}
	mine := len(p.headers)
	for {
		name, more, err := p.nextMember()
		if err != nil || !more {
			return err
		}
		v, err := p.dec.ReadValue()
		if err != nil {
			return err
		}
		if v.Kind() != '"' {
			p.typeProblem(i, field+"."+name, "a string", v.Kind())
			continue
		}
		value := p.str(v)
		if !isToken(name) {
			p.problem(i, phaseStep, ReasonInvalidHeader, what+"header name "+quoteClip(name)+" is not an HTTP token")
			continue
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if RefusedHeader(name) {
			p.problem(i, phaseStep, ReasonInvalidHeader, what+"header "+quote(name)+" may not be set by a step")
			continue
		}
		dup := false
		for _, h := range p.headers[mine:] {
			dup = dup || h.name == name
		}
		if dup {
			p.problem(i, phaseStep, ReasonInvalidHeader, what+"header "+quote(name)+" given twice")
			continue
		}
		t, reasons, details := compileHeader(name, value)
		for j := range reasons {
			p.problem(i, phaseStep, reasons[j], what+details[j])
		}
		p.headers = append(p.headers, draftHeader{name: name, value: t})
	}
}

func (p *parser) readDepends(i int) error {
	if k := p.dec.PeekKind(); k != '[' {
		if k != jsontext.KindInvalid {
			p.typeProblem(i, "depends_on", "an array of step keys", k)
		}
		return p.dec.SkipValue()
	}
	if err := p.open(); err != nil {
		return err
	}
	for {
		more, err := p.next()
		if err != nil || !more {
			return err
		}
		v, err := p.dec.ReadValue()
		if err != nil {
			return err
		}
		if v.Kind() != '"' {
			p.typeProblem(i, "depends_on", "an array of step keys", v.Kind())
			continue
		}
		p.depends = append(p.depends, p.str(v))
	}
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

// rollbackOf returns the draft of d's rollback, nil when it has none.
func (p *parser) rollbackOf(d *draft) *draftRollback {
	if d.rb == 0 {
		return nil
	}
	return &p.rbs[d.rb-1]
}

package planner

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/jsonscan"
)

// Stage one of Parse: decode. The body is read once, strictly (jsontext: duplicate members anywhere, invalid UTF-8
// and malformed JSON stop it), into drafts: each step's members as written. A member of the wrong type or an
// unknown member is a problem and decoding goes on; malformed JSON ends it with one problem naming where. Checking
// what the members say is validate's.

// batchDraft is a batch as decoded.
type batchDraft struct {
	form                         Form
	stop, atomic, timing, dryRun bool
	// stepsField is the member that held the steps ("requests", "batch", or "array" for the bare form); "" when
	// none. stepsBad records a steps member of the wrong type, already reported.
	stepsField string
	stepsBad   bool
	steps      []draft
}

// draft is a step as decoded.
type draft struct {
	key      string
	keyState keyState
	call
	depends  []string
	rollback *call // nil when the step has none
	// The REST helpers (README "REST APIs"), as written; "" or nil when absent.
	okStatus []int
	when     string
	forEach  string
	capture  []string
}

// keyState is what is known of a draft's key.
type keyState uint8

const (
	keyAbsent keyState = iota
	keyGiven
	keyBad   // a step that is not an object, or a key of the wrong type: reported already, unusable
	keyBound // checked and unique (bind): the step's label in problems
)

// call is what a step and its rollback share: method, path, payload and headers, as written.
type call struct {
	method       string
	methodGiven  bool
	path         string
	pathGiven    bool
	pathBad      bool // present but of the wrong type: reported already
	payload      payloadDraft
	hasPayload   bool   // a payload other than null was given
	payloadField string // "payload" or "body", as given; "" when neither
	headers      []headerDraft
}

// payloadDraft is a payload as written, with the string values that may hold placeholders.
type payloadDraft struct {
	raw     string
	strings []stringDraft
	depth   int // its deepest nesting, counting the containers around it in the body
}

// stringDraft is a string value of a payload that holds "${" once unescaped: where it stands in the payload
// (quotes included) and its text.
type stringDraft struct {
	start, end int
	text       string
}

type headerDraft struct {
	name, value string
}

// syntaxError is a problem that stops decoding, reported like malformed JSON.
type syntaxError string

func (e syntaxError) Error() string { return string(e) }

// decoder holds the state of decoding one body.
type decoder struct {
	dec      *jsontext.Decoder
	src      string // the body; strings kept are substrings of it unless they had to be unescaped
	maxDepth int
	probs    *problems
	b        batchDraft
}

// decodeBody reads body into a batchDraft. A returned error is malformed JSON (or a body that is not a batch at all):
// the batch is refused with that one problem.
func decodeBody(body []byte, maxDepth int, probs *problems) (batchDraft, error) {
	d := decoder{dec: jsontext.NewDecoder(bytes.NewReader(body)), src: string(body), maxDepth: maxDepth, probs: probs}
	switch k := d.dec.PeekKind(); k {
	case '{':
		if err := d.batchObject(); err != nil {
			return d.b, err
		}
	case '[':
		d.b.form, d.b.stepsField = FormArray, "array"
		if err := d.steps(); err != nil {
			return d.b, err
		}
	case jsontext.KindInvalid:
		_, err := d.dec.ReadToken()
		return d.b, err
	default:
		return d.b, syntaxError("the batch must be a JSON object or array, not a " + kindName(k))
	}
	switch _, err := d.dec.ReadToken(); err {
	case io.EOF:
		return d.b, nil
	case nil:
		return d.b, syntaxError("invalid JSON: unexpected data after the batch")
	default:
		return d.b, err
	}
}

// jsonDetail is the problem a decoding error makes.
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

func (d *decoder) problem(i int, r Reason, detail string) { d.probs.add(i, phaseStep, r, detail) }

func (d *decoder) typeProblem(i int, field, want string, got jsontext.Kind) {
	d.problem(i, ReasonInvalidJSON, quote(field)+" must be "+want+", not a "+kindName(got))
}

// open reads a '{' or '[' of the batch's structure, which may nest no deeper than maxDepth.
func (d *decoder) open() error {
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	if d.dec.StackDepth() > d.maxDepth {
		return syntaxError("invalid JSON: nesting deeper than " + strconv.Itoa(d.maxDepth) + " levels")
	}
	return nil
}

// more reports whether another member or element follows, consuming the closing delimiter when not.
func (d *decoder) more() (bool, error) {
	switch d.dec.PeekKind() {
	case '}', ']':
		_, err := d.dec.ReadToken()
		return false, err
	case jsontext.KindInvalid:
		_, err := d.dec.ReadToken()
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return false, err
	}
	return true, nil
}

// members calls member with each member name of the object about to be read (its opening brace read here), which
// reads the value.
func (d *decoder) members(member func(name string) error) error {
	if err := d.open(); err != nil {
		return err
	}
	for {
		more, err := d.more()
		if err != nil || !more {
			return err
		}
		v, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		if err := member(d.str(v)); err != nil {
			return err
		}
	}
}

// elements calls elem with the index of each element of the array about to be read (its opening bracket read
// here), which reads the element.
func (d *decoder) elements(elem func(i int) error) error {
	if err := d.open(); err != nil {
		return err
	}
	for i := 0; ; i++ {
		more, err := d.more()
		if err != nil || !more {
			return err
		}
		if err := elem(i); err != nil {
			return err
		}
	}
}

// str returns the string value v just read, without copying unless it holds an escape.
func (d *decoder) str(v jsontext.Value) string {
	if bytes.IndexByte(v, '\\') < 0 {
		end := int(d.dec.InputOffset())
		return d.src[end-len(v)+1 : end-1]
	}
	b, _ := jsontext.AppendUnquote(nil, v) // the decoder validated it
	return string(b)
}

// readString reads a string member into dst; a value of another type is a problem (bad, when given, is set).
func (d *decoder) readString(i int, field string, dst *string, bad *bool) (ok bool, err error) {
	v, err := d.dec.ReadValue()
	if err != nil {
		return false, err
	}
	if v.Kind() != '"' {
		d.typeProblem(i, field, "a string", v.Kind())
		if bad != nil {
			*bad = true
		}
		return false, nil
	}
	*dst = d.str(v)
	return true, nil
}

// batchObject reads {"stop_on_error": …, "atomic": …, "timings": …, "dry_run": …, "requests"|"batch": […]}.
func (d *decoder) batchObject() error {
	d.b.form = FormRequests
	return d.members(func(name string) error {
		switch name {
		case "stop_on_error":
			return d.readBool(&d.b.stop, name)
		case "atomic":
			return d.readBool(&d.b.atomic, name)
		case "timings":
			return d.readBool(&d.b.timing, name)
		case "dry_run":
			return d.readBool(&d.b.dryRun, name)
		case "requests", "batch":
			if d.b.stepsField != "" {
				d.problem(-1, ReasonInvalidJSON, `both "requests" and "batch" given; send one`)
				return d.dec.SkipValue()
			}
			d.b.stepsField = name
			if name == "batch" {
				d.b.form = FormBatch
			}
			return d.steps()
		}
		d.problem(-1, ReasonInvalidJSON, "unknown field "+quoteClip(name))
		return d.dec.SkipValue()
	})
}

func (d *decoder) readBool(dst *bool, name string) error {
	v, err := d.dec.ReadValue()
	if err != nil {
		return err
	}
	switch v.Kind() {
	case 't':
		*dst = true
	case 'f':
		*dst = false
	default:
		d.problem(-1, ReasonInvalidJSON, quote(name)+" must be a boolean, not a "+kindName(v.Kind()))
	}
	return nil
}

// steps reads the array of steps.
func (d *decoder) steps() error {
	if k := d.dec.PeekKind(); k != '[' {
		if k != jsontext.KindInvalid {
			d.b.stepsBad = true
			d.problem(-1, ReasonInvalidJSON, quote(d.b.stepsField)+" must be an array of steps, not a "+kindName(k))
		}
		return d.dec.SkipValue()
	}
	// Room for as many steps as the body can hold, up to a batch of the default size: a step takes at least 12
	// bytes ({"path":"a"}).
	d.b.steps = make([]draft, 0, min(len(d.src)/12+1, DefaultMaxSteps))
	return d.elements(d.step)
}

// step reads step i.
func (d *decoder) step(i int) error {
	d.b.steps = append(d.b.steps, draft{})
	s := &d.b.steps[len(d.b.steps)-1]
	if k := d.dec.PeekKind(); k != '{' {
		s.keyState = keyBad
		if k != jsontext.KindInvalid {
			d.problem(i, ReasonInvalidJSON, "a step must be a JSON object, not a "+kindName(k))
		}
		return d.dec.SkipValue()
	}
	return d.members(func(name string) error {
		if handled, err := d.callMember(i, "", &s.call, name); handled || err != nil {
			return err
		}
		switch name {
		case "key":
			ok, err := d.readString(i, name, &s.key, nil)
			switch {
			case ok:
				s.keyState = keyGiven
			case err == nil:
				s.keyState = keyBad
			}
			return err
		case "rollback":
			return d.rollback(i, s)
		case "depends_on":
			return d.depends(i, s)
		case "ok_status":
			return d.statuses(i, s)
		case "when":
			ok, err := d.readString(i, name, &s.when, nil)
			if ok && s.when == "" {
				d.problem(i, ReasonInvalidCondition, `"when" is empty: give a condition, e.g. "${A:status} == 404", or leave "when" out`)
			}
			return err
		case "for_each":
			ok, err := d.readString(i, name, &s.forEach, nil)
			if ok && s.forEach == "" {
				d.problem(i, ReasonInvalidForEach, `"for_each" is empty: give the placeholder of a list, e.g. "${L.result}", or leave "for_each" out`)
			}
			return err
		case "capture_headers":
			return d.strings(i, name, "an array of header names", &s.capture)
		}
		d.problem(i, ReasonInvalidJSON, "unknown step field "+quoteClip(name))
		return d.dec.SkipValue()
	})
}

// rollback reads step i's "rollback": {"method"?, "path", "payload" (or "body")?, "headers"?}.
func (d *decoder) rollback(i int, s *draft) error {
	if k := d.dec.PeekKind(); k != '{' {
		if k != jsontext.KindInvalid && k != 'n' { // null: no rollback, as a null payload is no payload
			d.typeProblem(i, "rollback", "an object", k)
		}
		return d.dec.SkipValue()
	}
	s.rollback = &call{}
	return d.members(func(name string) error {
		if handled, err := d.callMember(i, "rollback", s.rollback, name); handled || err != nil {
			return err
		}
		d.problem(i, ReasonInvalidJSON, "unknown rollback field "+quoteClip(name))
		return d.dec.SkipValue()
	})
}

// callMember reads member name of a step (what "") or of its rollback (what "rollback") into c when it is one
// they share; handled is false, with nothing read, for any other member.
func (d *decoder) callMember(i int, what string, c *call, name string) (handled bool, err error) {
	field := name
	if what != "" {
		field = what + "." + name
	}
	switch name {
	case "path":
		_, err = d.readString(i, field, &c.path, &c.pathBad)
		c.pathGiven = !c.pathBad
	case "method":
		c.methodGiven, err = d.readString(i, field, &c.method, nil)
	case "payload", "body":
		if c.payloadField != "" {
			prefix := ""
			if what != "" {
				prefix = what + ": "
			}
			d.problem(i, ReasonInvalidJSON, prefix+`both "payload" and "body" given; they are synonyms, send one`)
			return true, d.dec.SkipValue()
		}
		c.payloadField = name
		c.hasPayload, err = d.payload(&c.payload)
	case "headers":
		c.headers, err = d.headers(i, field)
	default:
		return false, nil
	}
	return true, err
}

// depends reads step i's "depends_on": an array of keys.
func (d *decoder) depends(i int, s *draft) error {
	return d.strings(i, "depends_on", "an array of step keys", &s.depends)
}

// strings reads an array of strings into dst; want names it in a problem.
func (d *decoder) strings(i int, field, want string, dst *[]string) error {
	if k := d.dec.PeekKind(); k != '[' {
		if k != jsontext.KindInvalid {
			d.typeProblem(i, field, want, k)
		}
		return d.dec.SkipValue()
	}
	return d.elements(func(int) error {
		var v string
		ok, err := d.readString(i, field, &v, nil)
		if ok {
			*dst = append(*dst, v)
		}
		return err
	})
}

// statuses reads step i's "ok_status": an array of HTTP statuses (integers from 100 to 599).
func (d *decoder) statuses(i int, s *draft) error {
	const want = "an array of HTTP statuses"
	if k := d.dec.PeekKind(); k != '[' {
		if k != jsontext.KindInvalid {
			d.typeProblem(i, "ok_status", want, k)
		}
		return d.dec.SkipValue()
	}
	return d.elements(func(int) error {
		v, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		n, perr := strconv.Atoi(string(v))
		switch {
		case v.Kind() != '0':
			d.typeProblem(i, "ok_status", want, v.Kind())
		case perr != nil || n < 100 || n > 599:
			d.problem(i, ReasonInvalidJSON, `"ok_status": `+quoteClip(string(v))+" is not an HTTP status (100 to 599)")
		default:
			s.okStatus = append(s.okStatus, n)
		}
		return nil
	})
}

// headers reads a step's (or rollback's) "headers": an object of strings.
func (d *decoder) headers(i int, field string) ([]headerDraft, error) {
	if k := d.dec.PeekKind(); k != '{' {
		if k != jsontext.KindInvalid {
			d.typeProblem(i, field, "an object of strings", k)
		}
		return nil, d.dec.SkipValue()
	}
	var hs []headerDraft
	err := d.members(func(name string) error {
		var value string
		ok, err := d.readString(i, field+"."+name, &value, nil)
		if ok {
			hs = append(hs, headerDraft{name, value})
		}
		return err
	})
	return hs, err
}

// payload reads a payload into p: the decoder checks it as it checks the whole body, and the string values that may
// hold placeholders (member names never do) are noted. A null payload is none: ok is false.
func (d *decoder) payload(p *payloadDraft) (ok bool, err error) {
	base := d.dec.StackDepth()
	v, err := d.dec.ReadValue()
	if err != nil || v.Kind() == 'n' {
		return false, err
	}
	end := int(d.dec.InputOffset())
	*p = payloadDraft{raw: d.src[end-len(v) : end], depth: base}
	if !bytes.ContainsAny(v, "[{$") && !bytes.Contains(v, []byte(`\u0024`)) {
		return true, nil // a scalar, or a string without '$': nothing nests, nothing to compile
	}
	p.depth += jsonscan.Strings(v, func(start, end int, name bool) {
		if !name {
			d.payloadString(p, v[start:end], start, end)
		}
	})
	return true, nil
}

// payloadString notes the string value v, at payload[start:end], when it holds "${" once unescaped.
func (d *decoder) payloadString(p *payloadDraft, v []byte, start, end int) {
	if bytes.IndexByte(v, '$') < 0 && !bytes.Contains(v, []byte(`\u0024`)) {
		return // no '$', even escaped: nothing to compile
	}
	text := string(v[1 : len(v)-1])
	if bytes.IndexByte(v, '\\') >= 0 {
		b, _ := jsontext.AppendUnquote(nil, v) // the decoder checked it
		text = string(b)
	}
	if hasTemplate(text) {
		p.strings = append(p.strings, stringDraft{start: start, end: end, text: text})
	}
}

package planner

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/jsonscan"
)

// Responses are what a plan's templates read while the plan runs: the steps' responses (their bodies, statuses and
// captured headers) and, in a fan-out call, the element it is for. Each body is indexed the first time a placeholder
// reads it and the index is kept for the rest of the batch, so a response is scanned at most once however many
// placeholders read it (README "Limits and guarantees"). Safe for concurrent use; a nil *Responses has no response for
// any step.
type Responses struct {
	body   func(step int) []byte
	meta   func(step int) (status int, header http.Header)
	charge func(n int64) error
	docs   []indexed // by step, one allocation for the batch
	scope  *scope    // a fan-out call's element, or the call a rollback undoes; nil elsewhere
}

// indexed is one response as the templates read it, set up by the first placeholder that reads it.
type indexed struct {
	once sync.Once
	doc  jsonscan.Doc
	ok   bool // there is a response
}

// scope is what a placeholder reads besides the steps' responses: a fan-out call's element (${item…}, ${index}),
// and for the rollback of one fan-out call, that call's reply, which stands for the step it belongs to.
type scope struct {
	item   []byte
	itemIx indexed
	index  int
	self   int // the step whose reply is reply; -1 for none
	reply  Reply
	replyX indexed
}

// Reply is what one call of a step returned, as placeholders read it.
type Reply struct {
	Status int
	Body   []byte
	Header http.Header // the captured headers
}

// NewResponses returns the Responses of a plan of n steps. body gives a finished, successful step's response body
// (a template only asks for the steps it depends on, once they have ended); charge, optional, is told the bytes
// an index is about to take, and an error from it fails the placeholder that needed them.
func NewResponses(n int, body func(step int) []byte, charge func(n int64) error) *Responses {
	return &Responses{body: body, charge: charge, docs: make([]indexed, n)}
}

// WithMeta sets where ${key:status} and ${key:headers.Name} read a step's status and captured headers, and returns
// r. Without it a step has neither.
func (r *Responses) WithMeta(meta func(step int) (status int, header http.Header)) *Responses {
	r.meta = meta
	return r
}

// ForItem returns the Responses of one call of a fan-out step: the same responses, with ${item…} reading item (a
// JSON value) and ${index} being index.
func (r *Responses) ForItem(item []byte, index int) *Responses {
	c := *r
	c.scope = &scope{item: item, index: index, self: -1}
	return &c
}

// ForCall returns the Responses of the rollback of one call of fan-out step self: the call's reply stands for the
// step's (${self…}, or its key), and ${item…} and ${index} are the call's.
func (r *Responses) ForCall(self int, reply Reply, item []byte, index int) *Responses {
	c := *r
	c.scope = &scope{item: item, index: index, self: self, reply: reply}
	return &c
}

// doc returns step's indexed response, nil when it has none.
func (r *Responses) doc(step int) *jsonscan.Doc {
	if r == nil {
		return nil
	}
	if sc := r.scope; sc != nil && step == sc.self {
		return r.index(&sc.replyX, sc.reply.Body)
	}
	if step < 0 || step >= len(r.docs) {
		return nil
	}
	x := &r.docs[step]
	x.once.Do(func() { r.setUp(x, r.body(step)) })
	if !x.ok {
		return nil
	}
	return &x.doc
}

// index returns b indexed in x, set up on first use.
func (r *Responses) index(x *indexed, b []byte) *jsonscan.Doc {
	x.once.Do(func() { r.setUp(x, b) })
	if !x.ok {
		return nil
	}
	return &x.doc
}

// setUp indexes b in x. A body that is not valid UTF-8 is indexed repaired (invalid bytes as U+FFFD), so that
// every value read from it can be copied into a call as it stands.
func (r *Responses) setUp(x *indexed, b []byte) {
	if len(b) == 0 {
		return
	}
	if !utf8.Valid(b) {
		b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	}
	x.doc.Reset(b, r.charge)
	x.ok = true
}

// reply returns step's status and captured headers.
func (r *Responses) reply(step int) (int, http.Header) {
	if sc := r.scope; sc != nil && step == sc.self {
		return sc.reply.Status, sc.reply.Header
	}
	if r.meta == nil {
		return 0, nil
	}
	return r.meta(step)
}

// value returns the raw JSON value rf names, or a *ResolveError saying why there is none. An index that could not
// be charged returns the charge's error as it is.
func (r *Responses) value(rf *ref) ([]byte, error) {
	switch {
	case rf.step == refIndex:
		if r == nil || r.scope == nil {
			return nil, unresolvable(rf, "${index} is only defined in a for_each step")
		}
		return strconv.AppendInt(nil, int64(r.scope.index), 10), nil
	case rf.meta == metaStatus:
		status, _ := r.reply(rf.step)
		if status == 0 {
			return nil, unresolvable(rf, "step "+quote(rf.key)+" has no status")
		}
		return strconv.AppendInt(nil, int64(status), 10), nil
	case rf.meta == metaHeader:
		_, h := r.reply(rf.step)
		v, ok := h[rf.header]
		if !ok || len(v) == 0 {
			return nil, unresolvable(rf, "the response of step "+quote(rf.key)+" has no header "+quote(rf.header))
		}
		return jsonscan.AppendString(nil, v[0]), nil
	}
	var d *jsonscan.Doc
	if rf.step == refItem {
		if r == nil || r.scope == nil {
			return nil, unresolvable(rf, "${item} is only defined in a for_each step")
		}
		d = r.index(&r.scope.itemIx, r.scope.item)
	} else {
		d = r.doc(rf.step)
	}
	if d == nil {
		return nil, unresolvable(rf, "step "+quote(rf.key)+" has no response")
	}
	v, err := d.Lookup(rf.path)
	if err == nil {
		return v, nil
	}
	var le *jsonscan.LookupError
	if !errors.As(err, &le) {
		return nil, err
	}
	switch le.Reason {
	case jsonscan.ReasonEmpty:
		return nil, unresolvable(rf, "step "+quote(rf.key)+" has no response")
	case jsonscan.ReasonNoMember:
		return nil, unresolvable(rf, "no member "+quote(le.Seg)+at(rf, le.Walked))
	case jsonscan.ReasonNotIndex:
		return nil, unresolvable(rf, quote(le.Seg)+" is not an array index"+at(rf, le.Walked))
	case jsonscan.ReasonOutOfRange:
		return nil, unresolvable(rf, "index "+le.Seg+" out of range (length "+strconv.Itoa(le.Length)+")"+at(rf, le.Walked))
	case jsonscan.ReasonNotContainer:
		return nil, unresolvable(rf, "cannot take "+quote(le.Seg)+" of a "+kindName(jsontext.Kind(le.Kind))+at(rf, le.Walked))
	case jsonscan.ReasonCharge:
		return nil, le.Err
	}
	return nil, unresolvable(rf, "the response of step "+quote(rf.key)+" is not valid JSON")
}

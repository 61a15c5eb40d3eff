package planner

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/jsonscan"
)

// Responses are the response bodies that a plan's templates read while the plan runs. Each body is indexed the
// first time a placeholder reads it and the index is kept for the rest of the batch, so a response is scanned at
// most once however many placeholders read it (CONTRACT.md §10). Safe for concurrent use; a nil *Responses has
// no response for any step.
type Responses struct {
	body   func(step int) []byte
	charge func(n int64) error
	docs   []indexed // by step, one allocation for the batch
}

// indexed is one step's response as the templates read it, set up by the first placeholder that reads it.
type indexed struct {
	once sync.Once
	doc  jsonscan.Doc
	ok   bool // the step has a response
}

// NewResponses returns the Responses of a plan of n steps. body gives a finished, successful step's response body
// (a template only asks for the steps it depends on, once they have ended); charge, optional, is told the bytes
// an index is about to take, and an error from it fails the placeholder that needed them.
func NewResponses(n int, body func(step int) []byte, charge func(n int64) error) *Responses {
	return &Responses{body: body, charge: charge, docs: make([]indexed, n)}
}

// doc returns step's indexed response, nil when it has none. A body that is not valid UTF-8 is indexed repaired
// (invalid bytes as U+FFFD), so that every value read from it can be copied into a call as it stands.
func (r *Responses) doc(step int) *jsonscan.Doc {
	if r == nil || step < 0 || step >= len(r.docs) {
		return nil
	}
	x := &r.docs[step]
	x.once.Do(func() {
		b := r.body(step)
		if len(b) == 0 {
			return
		}
		if !utf8.Valid(b) {
			b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
		}
		x.doc.Reset(b, r.charge)
		x.ok = true
	})
	if !x.ok {
		return nil
	}
	return &x.doc
}

// value returns the raw JSON value rf names, or a *ResolveError saying why there is none. An index that could not
// be charged returns the charge's error as it is.
func (r *Responses) value(rf *ref) ([]byte, error) {
	d := r.doc(rf.step)
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

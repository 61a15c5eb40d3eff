package planner

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/jsonscan"
)

// Condition is a step's "when" (README "REST APIs"): "${A:status} == 404" (a placeholder, an operator among ==, !=,
// <, <=, >, >=, and a JSON literal), or "exists ${A.result.0}" / "not exists ${A.result.0}". A step whose
// condition is false is not run.
type Condition struct {
	text string
	op   string // "exists", "not exists", or a comparison operator
	ref  ref
	lit  []byte // the literal of a comparison, compact
}

// String returns the condition as written.
func (c *Condition) String() string { return c.text }

// comparisons are the operators of a comparison, longest first so that "<=" is not read as "<".
var comparisons = []string{"==", "!=", "<=", ">=", "<", ">"}

// parseCondition reads a "when"; a malformed one returns why, naming what to fix.
func parseCondition(text string) (*Condition, string) {
	c := &Condition{text: text}
	s := strings.TrimSpace(text)
	switch {
	case strings.HasPrefix(s, "not exists "):
		c.op, s = "not exists", strings.TrimSpace(s[len("not exists "):])
	case strings.HasPrefix(s, "exists "):
		c.op, s = "exists", strings.TrimSpace(s[len("exists "):])
	}
	if !strings.HasPrefix(s, "${") {
		return nil, `must start with a placeholder, "exists ${…}" or "not exists ${…}"`
	}
	spec, end, msg := scanPlaceholder(s, 0)
	if msg != "" {
		return nil, msg
	}
	c.ref = ref{refSpec: spec}
	rest := strings.TrimSpace(s[end:])
	if c.op != "" {
		if rest != "" {
			return nil, "unexpected " + quoteClip(rest) + " after " + c.op + " " + spec.text
		}
		return c, ""
	}
	for _, op := range comparisons {
		if strings.HasPrefix(rest, op) {
			c.op, rest = op, strings.TrimSpace(rest[len(op):])
			break
		}
	}
	if c.op == "" {
		if rest == "" {
			return nil, "an operator and a value must follow " + spec.text + " (==, !=, <, <=, >, >=)"
		}
		return nil, "unknown operator in " + quoteClip(rest) + "; use ==, !=, <, <=, >, >="
	}
	lit := jsontext.Value(rest)
	if rest == "" || !lit.IsValid() {
		return nil, "the right side " + quoteClip(rest) + ` must be a JSON literal: a number, "a string", true, false or null`
	}
	if k := lit.Kind(); k == '{' || k == '[' {
		return nil, "the right side must be a number, a string, true, false or null, not an " + kindName(k)
	}
	c.lit = []byte(rest)
	return c, ""
}

// Eval evaluates the condition against the responses. A comparison whose placeholder cannot be resolved, or whose
// sides cannot be ordered, is a *ResolveError; "exists" is false for a value that is not there.
func (c *Condition) Eval(r *Responses) (bool, error) {
	v, err := r.value(&c.ref)
	var re *ResolveError
	switch {
	case c.op == "exists" || c.op == "not exists":
		if err != nil && !errors.As(err, &re) {
			return false, err // a budget's refusal
		}
		return (err == nil) == (c.op == "exists"), nil
	case err != nil:
		return false, err
	}
	ok, why := compare(v, c.lit, c.op)
	if why != "" {
		return false, &ResolveError{Placeholder: c.ref.text, Code: errcode.Unresolvable,
			Detail: `"when": ` + quoteClip(c.text) + " cannot be evaluated: " + why}
	}
	return ok, nil
}

// compare applies op to two JSON values: numbers by value, strings by their text, anything else equal only to the
// same JSON. Ordering needs two numbers or two strings.
func compare(a, b []byte, op string) (bool, string) {
	ka, kb := jsontext.Value(a).Kind(), jsontext.Value(b).Kind()
	var order int
	switch {
	case ka == '0' && kb == '0':
		x, errX := strconv.ParseFloat(string(a), 64)
		y, errY := strconv.ParseFloat(string(b), 64)
		if errX != nil || errY != nil {
			return false, "a number out of range"
		}
		order = cmpFloat(x, y)
	case ka == '"' && kb == '"':
		x, _ := jsontext.AppendUnquote(nil, a)
		y, _ := jsontext.AppendUnquote(nil, b)
		order = bytes.Compare(x, y)
	case op == "==" || op == "!=":
		var ca, cb []byte
		jsonscan.Compact(a, func(p []byte) { ca = append(ca, p...) })
		jsonscan.Compact(b, func(p []byte) { cb = append(cb, p...) })
		return bytes.Equal(ca, cb) == (op == "=="), ""
	default:
		return false, "cannot order a " + kindName(ka) + " and a " + kindName(kb)
	}
	switch op {
	case "==":
		return order == 0, ""
	case "!=":
		return order != 0, ""
	case "<":
		return order < 0, ""
	case "<=":
		return order <= 0, ""
	case ">":
		return order > 0, ""
	}
	return order >= 0, ""
}

func cmpFloat(x, y float64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

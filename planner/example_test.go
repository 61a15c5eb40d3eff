package planner_test

import (
	"errors"
	"fmt"

	"github.com/batchd/batchd/planner"
)

// answers is what the runner would hand the templates: each finished step's raw response body, by index.
type answers map[int]string

func (a answers) all() *planner.Responses {
	return planner.NewResponses(len(a)+1, func(i int) []byte { return []byte(a[i]) }, nil)
}

// A string that is exactly one placeholder takes the referenced value with its JSON type; a placeholder inside a
// longer string is interpolated as text. Steps may name steps later in the array.
func Example_placeholderTyping() {
	plan, err := planner.Parse([]byte(`{"requests": [
		{"key": "Get", "path": "Producer/Get",
			"payload": {"ids": ["${Add.result.new_id}"], "by": "${Add.result.owner}", "note": "#${Add.result.new_id} ${Add.result.name}, ${Add.result.active}"}},
		{"key": "Add", "path": "Producer/Add", "payload": {"name": "Coca-Cola"}}
	]}`), planner.Config{})
	if err != nil {
		panic(err)
	}
	get := plan.Steps[0]
	fmt.Println("Get waits for", get.Deps, "depth", plan.Depth())

	add := answers{1: `{"ok": true, "result": {"new_id": 4, "name": "Coca-Cola", "active": true, "owner": {"id": 9}}}`}
	body, err := get.Body.Append(nil, add.all())
	fmt.Println(string(body), err)
	// Output:
	// Get waits for [1] depth 2
	// {"ids": [4], "by": {"id": 9}, "note": "#4 Coca-Cola, true"} <nil>
}

// An object or array cannot be embedded in a longer string, and a missing field fails the step: both are
// *planner.ResolveError values naming the placeholder, so the runner can answer 424 without sending the step.
func Example_resolveErrors() {
	plan, err := planner.Parse([]byte(`[
		{"key": "A", "path": "a"},
		{"path": "b", "payload": {"x": "owner ${A.result.owner}"}},
		{"path": "c", "payload": {"x": "${A.result.list.3}"}}
	]`), planner.Config{})
	if err != nil {
		panic(err)
	}
	a := answers{0: `{"result": {"owner": {"id": 9}, "list": [1, 2]}}`}
	for _, s := range plan.Steps[1:] {
		_, err := s.Body.Append(nil, a.all())
		var re *planner.ResolveError
		if errors.As(err, &re) {
			fmt.Println(re.Code, re.Placeholder, "—", re.Detail)
		}
	}
	// Output:
	// 4242 ${A.result.owner} — placeholder ${A.result.owner} is an object; only a string, number, boolean or null can be embedded in a longer string
	// 4241 ${A.result.list.3} — placeholder ${A.result.list.3}: index 3 out of range (length 2) at "A.result.list"
}

// $${ is a literal ${, and a substituted value is never scanned again: a response cannot inject a reference.
func Example_escapeAndInjection() {
	plan, err := planner.Parse([]byte(`[
		{"key": "A", "path": "a"},
		{"key": "B", "path": "b", "payload": {"template": "$${A.x} stays text", "echo": "${A.text}"}}
	]`), planner.Config{})
	if err != nil {
		panic(err)
	}
	body, _ := plan.Steps[1].Body.Append(nil, answers{0: `{"x": 1, "text": "${B.secret}"}`}.all())
	fmt.Println(string(body))
	// Output:
	// {"template": "${A.x} stays text", "echo": "${B.secret}"}
}

// A value substituted into a path is escaped as one segment (in the query, as a query value), and the resolved
// path is checked again: a value of ".." is refused at run time.
func Example_pathSubstitution() {
	plan, err := planner.Parse([]byte(`[
		{"key": "A", "path": "a"},
		{"path": "/users/${A.id}/orders?tag=${A.tag}", "method": "get"}
	]`), planner.Config{})
	if err != nil {
		panic(err)
	}
	path := plan.Steps[1].Path
	fmt.Println(plan.Steps[1].Method, plan.Steps[1].Name)
	for _, resp := range []string{`{"id": "a/b", "tag": "x&y z"}`, `{"id": "..", "tag": ""}`} {
		p, err := path.Resolve(answers{0: resp}.all(), 0)
		fmt.Printf("%q %v\n", p, err)
	}
	// Output:
	// GET users/${A.id}/orders
	// "users/a%2Fb/orders?tag=x%26y+z" <nil>
	// "" resolved path "users/../orders?tag=" (from "users/${A.id}/orders?tag=${A.tag}") refused: "." or ".." segment
}

// A refused batch reports every problem at once, each naming its step by key, or by "#index" when it has none.
func ExampleParse_refused() {
	_, err := planner.Parse([]byte(`{"requests": [
		{"path": "Producer/Add"},
		{"key": "B", "path": "v1/batch", "payload": {"id": "${Nope.id}"}},
		{"key": "C", "path": "c", "depends_on": ["D"]},
		{"key": "D", "path": "d", "payload": "${C}"}
	]}`), planner.Config{})
	var e *planner.Error
	if errors.As(err, &e) {
		for _, p := range e.Problems {
			fmt.Printf("%s %s: %s\n", p.Key, p.Reason, p.Detail)
		}
	}
	// Output:
	// #0 invalid_key: missing "key"
	// B nested_batch: path "v1/batch" refused: a step may not call the batch endpoint
	// B unknown_ref: placeholder ${Nope.id} names no step of this batch
	// D cycle: dependency cycle: D → C → D (each step waits for the next)
}

package planner

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/jsonscan"
)

// seedBodies are batch bodies from the tests, accepted and refused, for the fuzzers' corpora.
var seedBodies = []string{
	`{"stop_on_error":false,"requests":[{"key":"ProducerAdd","path":"Producer/Add","payload":{"name":"Coca-Cola"}},` +
		`{"key":"ProducerGet","path":"Producer/Get","payload":{"ids":["${ProducerAdd.result.new_id}"]}}]}`,
	`{"batch":[{"path":"a"},{"key":"K","path":"b","payload":"${0}"}],"stop_on_error":true}`,
	`[{"method":"POST","path":"/users","body":{"name":"x"}},{"method":"get","path":"/users/${0.id}?q=${0.name}"}]`,
	`[{"path":"a","headers":{"authorization":"Bearer x","x-request-id":"r-${b.id}"}},{"key":"b","path":"b","depends_on":["0"]}]`,
	`[{"key":"A","path":"a","payload":{"x":"copy of ${B.name} $${x}","${A}":["${B.list.0}"]}},{"key":"B","path":"b"}]`,
	`[{"key":"A","path":"a","depends_on":["B"]},{"key":"B","path":"b","depends_on":["A"]}]`,
	`[{"key":"A","path":"a","payload":"${C.x}"},{"key":"B","path":"b","payload":"${A.x}"},{"key":"C","path":"c","payload":"${B.x}"}]`,
	`{"stop_on_error":true,"stop_on_error":false,"requests":[]}`,
	`[{"key":"1","path":"a"},{"path":"b"}]`,
	`[{"key":"A","path":"v1/batch"},{"key":"B","path":"Item/Import"},{"key":"C","path":"%2e%2e/x"}]`,
	`[{"key":"A","path":"a","headers":{"Host":"x","X":"a\r\nb"},"method":"connect"}]`,
	`[{"key":"A","path":"a","payload":{"a":"\u0024{B.x}","b":"${B..x}","c":"${"}},{"key":"B","path":"b"}]`,
	`{"requests":[{"path":"a"}],"batch":[],"x":1}`,
	`[[[[[[[[[[]]]]]]]]]]`,
	`[{"key":"A","path":"a","payload":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}]`,
	`{"atomic":true,"timings":true,"requests":[{"key":"A","path":"Producer/Add","payload":{"name":"x"},` +
		`"rollback":{"path":"Producer/Delete","payload":{"ids":["${self.result.new_id}"]}}},` +
		`{"key":"B","path":"p/${A.result.new_id}","rollback":{"method":"delete","path":"p/${A.id}/${self.id}",` +
		`"headers":{"X-Undo":"${B.x}"},"body":"${self}"}}]}`,
	`{"atomic":true,"requests":[{"key":"A","path":"a","payload":"${self.x}","rollback":{"path":"x","payload":"${B.x}"}},` +
		`{"key":"B","path":"b","rollback":{"path":"//h","method":"TRACE","x":1,"headers":{"Host":"h"}}},{"key":"C","path":"c","rollback":[]}]}`,
	`{"dry_run":true,"requests":[{"key":"L","path":"users","method":"GET","capture_headers":["Link","ETag"]},` +
		`{"key":"F","path":"users/${item.id}","for_each":"${L.result}","ok_status":[404],"payload":{"i":"${index}","n":"${item.name}"},` +
		`"rollback":{"method":"DELETE","path":"${self:headers.Location}"}},` +
		`{"key":"N","path":"${L.links.next}","when":"${L:status} == 200","depends_on":["F"]},` +
		`{"key":"U","path":"upsert","when":"not exists ${L.result.0}","headers":{"Content-Type":"application/x-www-form-urlencoded","If-Match":"${L:headers.ETag}"},"payload":"a=${L.x}&b=$${c}"}]}`,
	`[{"key":"A","path":"a","for_each":"${A.x} x","when":"${A:status} ~ 1","ok_status":[99,"x"],"capture_headers":["Set-Cookie",1]},` +
		`{"key":"item","path":"${item}","payload":"${index.x}${B.*.id}${B:nope}"}]`,
}

func FuzzParse(f *testing.F) {
	for _, s := range seedBodies {
		f.Add([]byte(s))
	}
	f.Add(benchBody("diamond", 20))
	f.Add(benchBody("chain", 5))
	f.Fuzz(func(t *testing.T, body []byte) {
		cfg := Config{Blocked: []string{"Item/Import"}}
		plan, err := Parse(body, cfg)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 || plan != nil {
				t.Fatalf("refusal is %T %v with plan %v", err, err, plan)
			}
			for _, p := range e.Problems {
				if !slices.Contains(Reasons(), p.Reason) || p.Detail == "" {
					t.Fatalf("problem %+v: unlisted reason or no detail", p)
				}
				if p.Key != "" && !validKey(p.Key) && !strings.HasPrefix(p.Key, "#") {
					t.Fatalf("problem names %q", p.Key)
				}
			}
			return
		}
		checkPlan(t, plan)
	})
}

// checkPlan verifies the invariants every accepted plan must hold, independently of how Parse computed them.
func checkPlan(t *testing.T, plan *Plan) {
	n := len(plan.Steps)
	if n == 0 || n > DefaultMaxSteps {
		t.Fatalf("%d steps", n)
	}
	keys := map[string]bool{}
	for i, s := range plan.Steps {
		if s.Index != i {
			t.Fatalf("step %d has index %d", i, s.Index)
		}
		if !validKey(s.Key) || s.Key == "self" || keys[s.Key] {
			t.Fatalf("step %d: bad or duplicate key %q", i, s.Key)
		}
		keys[s.Key] = true
		if !isToken(s.Method) || s.Method != strings.ToUpper(s.Method) {
			t.Fatalf("step %d: method %q", i, s.Method)
		}
		if s.Path == nil {
			t.Fatalf("step %d: no path", i)
		}
		if s.Path.Static() {
			p, err := s.Path.Resolve(nil, 0)
			if err != nil || CheckPath(p) != nil || strings.HasPrefix(p, "/") {
				t.Fatalf("step %d: static path %q: %v", i, p, err)
			}
		}
		for _, list := range [][]int{s.Deps, s.Dependents} {
			for k, j := range list {
				if j < 0 || j >= n || j == i || (k > 0 && list[k-1] >= j) {
					t.Fatalf("step %d: deps %v dependents %v", i, s.Deps, s.Dependents)
				}
			}
		}
		for _, j := range s.Deps {
			if !slices.Contains(plan.Steps[j].Dependents, i) {
				t.Fatalf("step %d waits for %d, which does not list it as dependent", i, j)
			}
		}
		for _, j := range s.Dependents {
			if !slices.Contains(plan.Steps[j].Deps, i) {
				t.Fatalf("step %d lists dependent %d, which does not wait for it", i, j)
			}
		}
		// Every reference is to a dependency.
		var refs []ref
		refs = append(refs, s.Path.refs...)
		for _, h := range s.Headers {
			refs = append(refs, h.Value.refs...)
		}
		if s.Body != nil {
			refs = append(refs, s.Body.refs...)
		}
		if s.Text != nil {
			refs = append(refs, s.Text.refs...)
		}
		if s.ForEach != nil {
			refs = append(refs, s.ForEach.ref)
		}
		if s.When != nil {
			refs = append(refs, s.When.ref)
		}
		for _, r := range refs {
			if (r.step == refItem || r.step == refIndex) && s.ForEach != nil {
				continue // a fan-out call's element
			}
			if !slices.Contains(s.Deps, r.step) || !slices.Contains(s.Reads, r.step) {
				t.Fatalf("step %d: %s refers to step %d, not in %v", i, r.text, r.step, s.Deps)
			}
		}
		// A rollback refers only to its step and the step's dependencies, and is compiled like a step.
		if rb := s.Rollback; rb != nil {
			if rb.Path == nil || !isToken(rb.Method) || rb.Method != strings.ToUpper(rb.Method) {
				t.Fatalf("step %d: rollback %+v", i, rb)
			}
			rbRefs := slices.Clone(rb.Path.refs)
			for _, h := range rb.Headers {
				rbRefs = append(rbRefs, h.Value.refs...)
			}
			if rb.Body != nil {
				rbRefs = append(rbRefs, rb.Body.refs...)
			}
			for _, r := range rbRefs {
				if (r.step == refItem || r.step == refIndex) && s.ForEach != nil {
					continue
				}
				if r.step != i && !slices.Contains(s.Deps, r.step) {
					t.Fatalf("step %d: rollback %s refers to step %d, not itself or in %v", i, r.text, r.step, s.Deps)
				}
			}
			if p, err := rb.Path.Resolve(fuzzResponses{}.all(), 0); err == nil {
				if e := checkPath(p, true); e != nil {
					t.Fatalf("step %d: resolved rollback path %q: %v", i, p, e)
				}
			}
		}
		if plan.Atomic && !plan.StopOnError {
			t.Fatal("an atomic plan must stop on error")
		}
		// Whatever the responses, a path that resolves is safe and a header value cannot split headers.
		if p, err := s.Path.Resolve(fuzzResponses{}.all(), 0); err == nil {
			if e := checkPath(p, true); e != nil {
				t.Fatalf("step %d: resolved path %q: %v", i, p, e)
			}
			checkJoin(t, fuzzBase(), p)
		} else {
			checkResolveError(t, err)
		}
		for _, h := range s.Headers {
			if v, err := h.Value.Resolve(fuzzResponses{}.all(), 0); err == nil && badHeaderByte(v) >= 0 {
				t.Fatalf("step %d: header %s: %q", i, h.Name, v)
			}
		}
		// Whatever the responses, a payload that resolves is valid JSON.
		if s.Body != nil {
			out, err := s.Body.Append(nil, fuzzResponses{}.all())
			if err == nil && !json.Valid(out) {
				t.Fatalf("step %d: invalid payload %s", i, out)
			}
			if s.Body.Static() && err != nil {
				t.Fatalf("step %d: static payload failed: %v", i, err)
			}
		}
	}
	// Acyclic and Depth, by a depth-first topological sort of our own.
	const (
		unseen = iota
		active
		done
	)
	state := make([]int, n)
	longest := make([]int, n)
	var visit func(i int) int
	visit = func(i int) int {
		switch state[i] {
		case active:
			t.Fatalf("cycle through step %d", i)
		case done:
			return longest[i]
		}
		state[i] = active
		l := 1
		for _, j := range plan.Steps[i].Deps {
			l = max(l, visit(j)+1)
		}
		state[i], longest[i] = done, l
		return l
	}
	depth := 0
	for i := range plan.Steps {
		depth = max(depth, visit(i))
	}
	if plan.Depth() != depth || depth < 1 {
		t.Fatalf("Depth %d, want %d", plan.Depth(), depth)
	}
}

// fuzzBase is the upstream base URL that resolved paths are joined under.
func fuzzBase() *url.URL {
	u, _ := url.Parse("http://upstream.test/api/")
	return u
}

// fuzzResponses answers every step with a response that has a bit of everything.
type fuzzResponses struct{}

func (fuzzResponses) all() *Responses {
	return bodiesOf(func(int) []byte { return fuzzBody })
}

var fuzzBody = []byte(`{"id":1,"name":"n\"\u00e9","x":{"y":[true,null,"${A.x}"]},"list":[{"id":2}],"result":{"new_id":3,"name":"z"}}`)

func FuzzResolve(f *testing.F) {
	seeds := []struct{ payload, response string }{
		{`{"ids":["${A.result.new_id}"]}`, `{"result":{"new_id":4}}`},
		{`{"n":"copy of ${A.result.name} $${x}"}`, `{"result":{"name":"a\"b\\c\u0000"}}`},
		{`["${A}", "${A.0}", "x${A.1}"]`, `[1, "s", {"o":1}]`},
		{`{"a":"${A.x.y}","b":"${A.x}"}`, `{"x":{"y":null}}`},
		{`"${A.s}"`, "{\"s\":\"\xff\xfe\"}"},
		{`{"a":"${A.x}"}`, `{"x":1,"x":2}`},
		{`{"a":"<${A.x}>"}`, `{"x":[1,2]}`},
		{`{"a":"${A.ü.0}"}`, `{"ü":["${B.x}"]}`},
		{`{"a":"${A.x}"}`, `{"x":`},
		{`{"a":"\u0024{A.x}\n"}`, ` {"x" : "v" } `},
	}
	for _, s := range seeds {
		f.Add(s.payload, []byte(s.response))
	}
	base := fuzzBase()
	f.Fuzz(func(t *testing.T, payload string, response []byte) {
		r := responses{0: string(response)}
		body := `[{"key":"A","path":"a"},{"key":"B","path":"b","payload":` + payload + `}]`
		if plan, err := Parse([]byte(body), Config{}); err == nil && plan.Steps[1].Body != nil {
			out, err := plan.Steps[1].Body.Append(nil, r.all())
			checkResolveError(t, err)
			if err == nil && !json.Valid(out) {
				t.Fatalf("payload %s with response %q gave invalid JSON %s", payload, response, out)
			}
			// Differential check against a naive resolver on decoded values, for responses without duplicate
			// names or invalid UTF-8 (where the tolerant walk may legitimately differ from encoding/json).
			// The payload text could also have closed the step and added others: compare only a lone value.
			if len(plan.Steps) == 2 && json.Valid([]byte(payload)) && jsontext.Value(response).IsValid() {
				want, ok := referenceResolve(decode(t, []byte(payload)), decode(t, response))
				switch {
				case ok != (err == nil):
					t.Fatalf("payload %s, response %s: reference ok=%v, Append error %v", payload, response, ok, err)
				case ok && !reflect.DeepEqual(want, decode(t, out)):
					t.Fatalf("payload %s, response %s: got %s, want %#v", payload, response, out, want)
				}
			}
		}

		// The same text as a header value and inside a path.
		var text string
		if json.Unmarshal([]byte(payload), &text) != nil {
			text = payload
		}
		q, _ := json.Marshal(text)
		pq, _ := json.Marshal("x/" + text)
		body = `[{"key":"A","path":"a"},{"key":"B","path":` + string(pq) + `,"headers":{"X-T":` + string(q) + `}}]`
		plan, err := Parse([]byte(body), Config{Blocked: []string{"Item/Import"}})
		if err != nil {
			return
		}
		step := plan.Steps[1]
		if v, err := step.Headers[0].Value.Resolve(r.all(), 0); err == nil {
			if badHeaderByte(v) >= 0 {
				t.Fatalf("header value %q", v)
			}
		} else {
			checkResolveError(t, err)
		}
		p, err := step.Path.Resolve(r.all(), 0)
		if err != nil {
			checkResolveError(t, err)
			return
		}
		if e := checkPath(p, true); e != nil {
			t.Fatalf("resolved path %q: %v", p, e)
		}
		if pathPart, _, _ := strings.Cut(p, "?"); blocked(pathPart, []string{"Item/Import"}) {
			t.Fatalf("resolved path %q is blocked", p)
		}
		checkJoin(t, base, p)
	})
}

func decode(t *testing.T, b []byte) any {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// referenceResolve resolves a payload the slow, obvious way: on decoded values, every string value (not member
// names) parsed for placeholders, all of which name the one response given.
func referenceResolve(payload, response any) (any, bool) {
	switch v := payload.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			r, ok := referenceResolve(x, response)
			if !ok {
				return nil, false
			}
			out[k] = r
		}
		return out, true
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			r, ok := referenceResolve(x, response)
			if !ok {
				return nil, false
			}
			out[i] = r
		}
		return out, true
	case string:
		pieces, problems := splitTemplate(nil, v)
		if problems != nil {
			panic("accepted payload with malformed placeholder")
		}
		if len(pieces) == 1 && pieces[0].isRef {
			return referenceLookup(response, pieces[0].ref.path)
		}
		var b strings.Builder
		for _, p := range pieces {
			if !p.isRef {
				b.WriteString(p.lit)
				continue
			}
			x, ok := referenceLookup(response, p.ref.path)
			if !ok {
				return nil, false
			}
			switch x := x.(type) {
			case string:
				b.WriteString(x)
			case json.Number:
				b.WriteString(x.String())
			case bool:
				b.WriteString(strconv.FormatBool(x))
			case nil:
				b.WriteString("null")
			default:
				return nil, false
			}
		}
		return b.String(), true
	}
	return payload, true
}

func referenceLookup(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for _, seg := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[seg]; !ok {
				return nil, false
			}
		case []any:
			i, ok := jsonscan.ArrayIndex(seg)
			if !ok || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func checkResolveError(t *testing.T, err error) {
	if err == nil {
		return
	}
	var re *ResolveError
	if !errors.As(err, &re) || re.Placeholder == "" || re.Detail == "" {
		t.Fatalf("resolve error %T %v", err, err)
	}
	switch re.Code {
	case errcode.Unresolvable, errcode.NotEmbeddable, errcode.ResolvedPathRefused:
	default:
		t.Fatalf("resolve error code %d", re.Code)
	}
}

func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{
		"Producer/Add", "/Producer/Add", "users/42", "users?active=1", "a/%41", "a/%252e%252e", "a b/c", "Grüße/ü",
		"https://evil.test/x", "//evil.test/x", "@evil", "a/../b", "a/%2e%2e/b", "a%2Fb", "a%5Cb", `a\b`, "a/%00",
		"a#f", "a?x=#", "batch", "v1/batch", "%62atch", "a/%zz", "a//b", "a/", "a?x=%zz", "a;b/c", "?x", "/",
		"a/b:c", "a/%3a", "http:", "a/.%2E", "a/%u002e",
	} {
		f.Add(s)
	}
	base := fuzzBase()
	f.Fuzz(func(t *testing.T, p string) {
		err := CheckPath(p)
		if err != nil {
			var pe *PathError
			if !errors.As(err, &pe) || pe.Detail == "" || (pe.Reason != ReasonInvalidPath && pe.Reason != ReasonNestedBatch) {
				t.Fatalf("CheckPath(%q) = %T %v", p, err, err)
			}
			return
		}
		checkJoin(t, base, strings.TrimPrefix(p, "/"))
	})
}

// checkJoin verifies that an accepted method path, joined under base by the two usual ways, stays on base's host
// and under base's path, names no dot segment, and is not the batch endpoint.
func checkJoin(t *testing.T, base *url.URL, p string) {
	joined, err := url.Parse(base.String() + p)
	if err != nil {
		t.Fatalf("accepted path %q does not join: %v", p, err)
	}
	ref, err := url.Parse(p)
	if err != nil {
		t.Fatalf("accepted path %q does not parse: %v", p, err)
	}
	resolved := base.ResolveReference(ref)
	for _, u := range []*url.URL{joined, resolved} {
		if u.Scheme != "http" || u.Host != "upstream.test" || u.User != nil || u.Opaque != "" || u.Fragment != "" {
			t.Fatalf("path %q escapes: %#v", p, u)
		}
		if !strings.HasPrefix(u.EscapedPath(), "/api/") || !strings.HasPrefix(u.RequestURI(), "/api/") ||
			!strings.HasPrefix(u.Path, "/api/") || path.Clean(u.Path) != u.Path && !strings.Contains(p, "%2F") {
			t.Fatalf("path %q leaves /api/: path %q escaped %q", p, u.Path, u.EscapedPath())
		}
		if strings.EqualFold(strings.TrimSuffix(u.Path, "/"), "/api/v1/batch") || strings.EqualFold(u.Path, "/api/batch") {
			t.Fatalf("path %q reaches the batch endpoint", p)
		}
	}
	// ResolveReference re-escapes the path its own way (%2A becomes *), so the two are compared decoded; an encoded
	// "/" is one segment's data in the one and a separator in the other's decoded form, so it is left out.
	if !strings.Contains(strings.ToUpper(p), "%2F") && joined.Path != resolved.Path {
		t.Fatalf("path %q joins as %q but resolves as %q", p, joined, resolved)
	}
}

// FuzzCondition: whatever a "when" says and whatever the response it reads, parsing refuses it with a listed reason
// or evaluates it without panicking, and an evaluation error is a *ResolveError.
func FuzzCondition(f *testing.F) {
	for _, s := range []struct{ when, response string }{
		{"${A:status} == 404", `{}`}, {"exists ${A.result.0}", `{"result":[1]}`}, {"not exists ${A.x.y}", `{"x":1}`},
		{`${A.s} < "b"`, `{"s":"a"}`}, {"${A.n} >= 1e3", `{"n":1000}`}, {"${A.o} == null", `{"o":{}}`},
		{"${A:headers.ETag} != \"x\"", `{}`}, {"${A.n} < 1", `{"n":"x"}`}, {"${A.n} == 1e999", `{"n":1}`},
		{"exists", `{}`}, {"${A} === 1", `{}`}, {"${A:status}==", `{}`},
	} {
		f.Add(s.when, []byte(s.response))
	}
	f.Fuzz(func(t *testing.T, when string, response []byte) {
		q, _ := json.Marshal(when)
		plan, err := Parse([]byte(`[{"key":"A","path":"a"},{"key":"B","path":"b","when":`+string(q)+`}]`), Config{})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("refusal is %T", err)
			}
			for _, p := range e.Problems {
				if !slices.Contains(Reasons(), p.Reason) || p.Detail == "" {
					t.Fatalf("problem %+v", p)
				}
			}
			return
		}
		r := replies{0: {Status: 200, Body: response, Header: http.Header{"Etag": {"x"}}}}.all()
		if _, err := plan.Steps[1].When.Eval(r); err != nil {
			checkResolveError(t, err)
		}
	})
}

// FuzzURLReference: whatever URL reference a response holds for a path that is one placeholder, the path it
// resolves to stays on the upstream's host, under its base path, is no dot segment, batch endpoint or blocked
// method; a refusal is a *ResolveError.
func FuzzURLReference(f *testing.F) {
	for _, s := range []string{
		"customers?page=2", "/api/customers/7", "http://upstream.test/api/x", "HTTP://UPSTREAM.TEST/api/x#f",
		"http://evil.test/api/x", "//evil.test/api/x", "../x", "/api/../../x", "/api/%2e%2e/x", "/api/a%2Fb",
		"/api/Item/Import", "/api/Item/Import.json", "/api/batch", "/api/v1/batch", "?x=1", "", "/api/", "http:",
		"http://u@upstream.test/api/x", "/api/a?b=%zz", "/api/ü?x=ü", "\\evil.test\\api",
	} {
		f.Add(s)
	}
	base := fuzzBase()
	f.Fuzz(func(t *testing.T, ref string) {
		plan, err := Parse([]byte(`[{"key":"A","path":"a"},{"key":"B","path":"${A.next}"}]`),
			Config{Base: base, Blocked: []string{"Item/Import"}})
		if err != nil {
			t.Fatal(err)
		}
		q, _ := json.Marshal(ref)
		r := responses{0: `{"next":` + string(q) + `}`}.all()
		p, err := plan.Steps[1].Path.Resolve(r, 0)
		if err != nil {
			checkResolveError(t, err)
			return
		}
		if e := checkPath(p, true); e != nil {
			t.Fatalf("reference %q gave path %q: %v", ref, p, e)
		}
		if pathPart, _, _ := strings.Cut(p, "?"); blocked(pathPart, []string{"Item/Import"}) {
			t.Fatalf("reference %q gave blocked %q", ref, p)
		}
		checkJoin(t, base, p)
	})
}

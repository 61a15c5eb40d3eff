package planner

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/errcode"
)

// srcResponse is the response of step "A" (index 0) in the payload tests.
const srcResponse = `{
	"ok": true,
	"result": {"new_id": 4, "name": "Coca-Cola", "price": -1.5e2, "active": true, "deleted": false, "note": null,
		"tags": ["a", "b"], "owner": {"id": 9, "name": "Ann"}, "empty": "",
		"quote": "say \"hi\"\\now", "uni": "Grüße \u2603 😀", "esc": "tab\there\u0001",
		"inject": "${B.x}", "dollar": "$${x}",
		"list": [{"id": 10}, {"id": 11, "deep": [[7]]}]},
	"next_offset": 0
}`

// resolvePayload parses a two-step batch where step B's payload is payload and step A answered srcResponse,
// and returns B's resolved payload.
func resolvePayload(t *testing.T, payload string) (string, error) {
	t.Helper()
	p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"b","payload":`+payload+`}]`, Config{})
	out, err := p.Steps[1].Body.Append([]byte("prefix:"), responses{0: srcResponse}.all())
	if err != nil {
		assert.Equal(t, "prefix:", string(out), "on error dst keeps its original content")
		return "", err
	}
	require.True(t, strings.HasPrefix(string(out), "prefix:"))
	s := strings.TrimPrefix(string(out), "prefix:")
	require.True(t, json.Valid([]byte(s)), "not valid JSON: %s", s)
	return s, nil
}

func TestPayloadWholeStringKeepsType(t *testing.T) {
	cases := []struct{ name, payload, want string }{
		{"number", `{"ids":["${A.result.new_id}"]}`, `{"ids":[4]}`},
		{"float", `{"p":"${A.result.price}"}`, `{"p":-1.5e2}`},
		{"string", `{"n":"${A.result.name}"}`, `{"n":"Coca-Cola"}`},
		{"true", `{"b":"${A.result.active}"}`, `{"b":true}`},
		{"false", `{"b":"${A.result.deleted}"}`, `{"b":false}`},
		{"null", `{"b":"${A.result.note}"}`, `{"b":null}`},
		{"object", `{"o":"${A.result.owner}"}`, `{"o":{"id": 9, "name": "Ann"}}`},
		{"array", `{"t":"${A.result.tags}"}`, `{"t":["a", "b"]}`},
		{"array index", `{"id":"${A.result.list.1.id}"}`, `{"id":11}`},
		{"nested arrays", `{"id":"${A.result.list.1.deep.0.0}"}`, `{"id":7}`},
		{"whole response", `{"all":"${A}"}`, `{"all":` + srcResponse + `}`},
		{"payload is the placeholder", `"${A.result.new_id}"`, `4`},
		{"escaped string kept escaped", `["${A.result.quote}"]`, `["say \"hi\"\\now"]`},
		{"unicode string", `["${A.result.uni}"]`, `["Grüße \u2603 😀"]`},
		{"placeholder written with escapes", `["\u0024{A.result.new_id}"]`, `[4]`},
		{"member name is literal", `{"${A.result.name}":"${A.result.new_id}"}`, `{"${A.result.name}":4}`},
		{"several holes", `{"a":"${A.result.new_id}", "b": [1, "${A.result.name}", {"c": "x ${A.result.new_id}"}], "d": "plain"}`,
			`{"a":4, "b": [1, "Coca-Cola", {"c": "x 4"}], "d": "plain"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := resolvePayload(t, c.payload)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestPayloadEmbeddedInterpolation(t *testing.T) {
	cases := []struct{ name, payload, want string }{
		{"string", `{"n":"copy of ${A.result.name}"}`, `{"n":"copy of Coca-Cola"}`},
		{"number", `{"n":"id=${A.result.new_id}!"}`, `{"n":"id=4!"}`},
		{"float as written", `{"n":"p=${A.result.price}"}`, `{"n":"p=-1.5e2"}`},
		{"true", `{"n":"${A.result.active}?"}`, `{"n":"true?"}`},
		{"false", `{"n":"-${A.result.deleted}"}`, `{"n":"-false"}`},
		{"null", `{"n":"x${A.result.note}"}`, `{"n":"xnull"}`},
		{"empty string", `{"n":"[${A.result.empty}]"}`, `{"n":"[]"}`},
		{"two placeholders", `{"n":"${A.result.name}#${A.result.new_id}"}`, `{"n":"Coca-Cola#4"}`},
		{"escapes in value stay valid", `{"n":"q: ${A.result.quote}"}`, `{"n":"q: say \"hi\"\\now"}`},
		{"control chars in value", `{"n":"e: ${A.result.esc}"}`, `{"n":"e: tab\there\u0001"}`},
		{"unicode value", `{"n":"u: ${A.result.uni}"}`, `{"n":"u: Grüße \u2603 😀"}`},
		{"literal escapes around", `{"n":"\"${A.result.name}\"\n\u00e9"}`, `{"n":"\"Coca-Cola\"\né"}`},
		{"escape $${", `{"n":"$${A.result.name} is ${A.result.name}"}`, `{"n":"${A.result.name} is Coca-Cola"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := resolvePayload(t, c.payload)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
			var want, have any
			require.NoError(t, json.Unmarshal([]byte(c.want), &want))
			require.NoError(t, json.Unmarshal([]byte(got), &have))
			assert.Equal(t, want, have)
		})
	}
}

func TestPayloadEscapes(t *testing.T) {
	cases := []struct{ name, payload, want string }{
		{"only an escape is static", `{"n":"$${A.x}"}`, `{"n":"${A.x}"}`},
		{"dollar alone", `{"n":"$5 and $$ and ${"}`, ``},
		{"leftmost $${ wins", `{"n":"$$${A.x}"}`, `{"n":"$${A.x}"}`},
		{"escape next to placeholder", `{"n":"$${${A.result.new_id}"}`, `{"n":"${4"}`},
		{"no placeholder at all", `{"n":"$ {A.x} {A} $"}`, `{"n":"$ {A.x} {A} $"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.want == "" {
				_, err := Parse([]byte(`[{"key":"A","path":"a"},{"key":"B","path":"b","payload":`+c.payload+`}]`), Config{})
				require.Error(t, err, "a lone ${ is unterminated")
				return
			}
			got, err := resolvePayload(t, c.payload)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
	p := mustParse(t, `[{"path":"b","payload":{"n":"$${A.x}", "m": 1}}]`, Config{})
	assert.True(t, p.Steps[0].Body.Static(), "escapes alone need no responses")
	assert.Nil(t, p.Steps[0].Deps)
	got, err := p.Steps[0].Body.Append(nil, nil)
	require.NoError(t, err)
	assert.Equal(t, `{"n":"${A.x}", "m": 1}`, string(got))
}

func TestPayloadNoInjection(t *testing.T) {
	// A's value is the text "${B.x}": it comes through literally, whole or embedded, and B is never asked for.
	for _, payload := range []string{`{"v":"${A.result.inject}"}`, `{"v":"<${A.result.inject}>"}`, `{"v":"${A.result.dollar}"}`} {
		p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"b"},{"key":"C","path":"c","payload":`+payload+`}]`, Config{})
		assert.Equal(t, []int{0}, p.Steps[2].Deps)
		out, err := p.Steps[2].Body.Append(nil, responses{0: srcResponse, 1: `{"x":"INJECTED"}`}.all())
		require.NoError(t, err)
		assert.NotContains(t, string(out), "INJECTED")
		assert.True(t, strings.Contains(string(out), "${B.x}") || strings.Contains(string(out), "$${x}"), string(out))
	}
}

func TestPayloadResolveErrors(t *testing.T) {
	cases := []struct {
		name, payload, placeholder string
		code                       errcode.Code
		detail                     string
	}{
		{"missing member", `{"x":"${A.result.nope}"}`, "${A.result.nope}", errcode.Unresolvable, `no member "nope" at "A.result"`},
		{"missing top member", `{"x":"${A.nope.id}"}`, "${A.nope.id}", errcode.Unresolvable, `no member "nope" at the top`},
		{"index out of range", `{"x":"${A.result.list.5.id}"}`, "${A.result.list.5.id}", errcode.Unresolvable, "index 5 out of range (length 2)"},
		{"not an index", `{"x":"${A.result.list.first}"}`, "${A.result.list.first}", errcode.Unresolvable, `"first" is not an array index`},
		{"leading zero index", `{"x":"${A.result.list.01}"}`, "${A.result.list.01}", errcode.Unresolvable, "not an array index"},
		{"negative index", `{"x":"${A.result.list.-1}"}`, "${A.result.list.-1}", errcode.Unresolvable, "not an array index"},
		{"into a scalar", `{"x":"${A.result.new_id.x}"}`, "${A.result.new_id.x}", errcode.Unresolvable, `cannot take "x" of a number`},
		{"into a string", `{"x":"${A.result.name.0}"}`, "${A.result.name.0}", errcode.Unresolvable, "of a string"},
		{"embedded object", `{"x":"owner: ${A.result.owner}"}`, "${A.result.owner}", errcode.NotEmbeddable, "is an object"},
		{"embedded array", `{"x":"tags: ${A.result.tags}"}`, "${A.result.tags}", errcode.NotEmbeddable, "is an array"},
		{"embedded whole response", `{"x":"all: ${A}"}`, "${A}", errcode.NotEmbeddable, "is an object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := resolvePayload(t, c.payload)
			var re *ResolveError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, c.code, re.Code)
			assert.Equal(t, c.placeholder, re.Placeholder)
			assert.Contains(t, re.Detail, c.placeholder)
			assert.Contains(t, re.Detail, c.detail)
			assert.Equal(t, re.Detail, err.Error())
		})
	}
	t.Run("no response", func(t *testing.T) {
		p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"b","payload":"${A.x}"}]`, Config{})
		for _, r := range []*Responses{nil, responses{}.all()} {
			_, err := p.Steps[1].Body.Append(nil, r)
			var re *ResolveError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, errcode.Unresolvable, re.Code)
		}
	})
	t.Run("broken response", func(t *testing.T) {
		p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"b","payload":"${A.x}"}]`, Config{})
		for _, body := range []string{`{"x":`, `{"y":1,`, `[`, `{"x"}`} {
			_, err := p.Steps[1].Body.Append(nil, responses{0: body}.all())
			var re *ResolveError
			require.ErrorAs(t, err, &re, body)
			assert.Equal(t, errcode.Unresolvable, re.Code)
		}
	})
}

func TestPayloadTolerantResponses(t *testing.T) {
	p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"b","payload":["${A.x}","${A.s}","v=${A.s}","${A.k\u00e9}"]}]`, Config{})
	// Duplicate names: the first wins. Invalid UTF-8 is repaired so the payload stays valid JSON.
	out, err := p.Steps[1].Body.Append(nil, responses{0: "{\"x\":1,\"x\":2,\"s\":\"a\xffb\",\"k\\u00e9\":3}"}.all())
	require.NoError(t, err)
	assert.Equal(t, "[1,\"a\uFFFDb\",\"v=a\uFFFDb\",3]", string(out))
}

func TestHeaderInterpolation(t *testing.T) {
	p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"b","headers":{
		"Authorization":"Bearer ${A.result.token}", "X-Id":"${A.result.id}", "X-Obj":"${A.result}",
		"X-Lit":"$${A}", "X-Bad":"${A.result.crlf}"}}]`, Config{})
	h := p.Steps[1].Headers
	r := responses{0: `{"result":{"token":"t\u00e9k","id":12,"crlf":"a\r\nHost: evil"}}`}
	v, err := h[0].Value.Resolve(r.all(), 0)
	require.NoError(t, err)
	assert.Equal(t, "Bearer ték", v)
	assert.Equal(t, "Bearer ${A.result.token}", h[0].Value.String())
	v, err = h[1].Value.Resolve(r.all(), 0)
	require.NoError(t, err)
	assert.Equal(t, "12", v)
	_, err = h[2].Value.Resolve(r.all(), 0)
	var re *ResolveError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, errcode.NotEmbeddable, re.Code)
	assert.True(t, h[3].Value.Static())
	v, err = h[3].Value.Resolve(nil, 0)
	require.NoError(t, err)
	assert.Equal(t, "${A}", v)
	_, err = h[4].Value.Resolve(r.all(), 0)
	require.ErrorAs(t, err, &re)
	assert.Equal(t, errcode.Unresolvable, re.Code)
	assert.Equal(t, "${A.result.crlf}", re.Placeholder)
	assert.Contains(t, re.Detail, "control character")
	assert.Equal(t, []int{0}, p.Steps[1].Deps)
}

func TestPathSubstitution(t *testing.T) {
	cases := []struct {
		name, path, value string // value is the JSON of A.v
		want              string
		code              errcode.Code // 0: resolves
	}{
		{"number", "users/${A.v}", `42`, "users/42", 0},
		{"string", "/users/${A.v}/orders", `"u1"`, "users/u1/orders", 0},
		{"slash is escaped in one segment", "users/${A.v}", `"a/b"`, "users/a%2Fb", 0},
		{"space and percent", "users/${A.v}", `"a b%"`, "users/a%20b%25", 0},
		{"question mark in path value", "users/${A.v}", `"x?admin=1"`, "users/x%3Fadmin=1", 0},
		{"hash in path value", "users/${A.v}", `"x#y"`, "users/x%23y", 0},
		{"inside a segment", "users/id-${A.v}", `7`, "users/id-7", 0},
		{"first segment", "${A.v}/Get", `"Producer"`, "Producer/Get", 0},
		{"query value", "users?name=${A.v}&x=1", `"a b&c=d"`, "users?name=a+b%26c%3Dd&x=1", 0},
		{"dot-dot refused", "users/${A.v}", `".."`, "", errcode.ResolvedPathRefused},
		{"dot refused", "users/${A.v}", `"."`, "", errcode.ResolvedPathRefused},
		{"empty refused", "users/${A.v}", `""`, "", errcode.ResolvedPathRefused},
		{"traversal in value refused", "users/${A.v}", `"../admin"`, "", errcode.ResolvedPathRefused},
		{"backslash traversal refused", "users/${A.v}", `"..\\admin"`, "", errcode.ResolvedPathRefused},
		{"scheme refused", "${A.v}/x", `"https:"`, "", errcode.ResolvedPathRefused},
		{"user info refused", "${A.v}", `"@evil"`, "", errcode.ResolvedPathRefused},
		{"control char refused", "users/${A.v}", `"a\nb"`, "", errcode.ResolvedPathRefused},
		{"nested batch refused", "v1/${A.v}", `"BATCH"`, "", errcode.ResolvedPathRefused},
		{"nested batch through slash refused", "api/${A.v}", `"v1/batch"`, "", errcode.ResolvedPathRefused},
		{"blocked refused", "Item/${A.v}", `"import"`, "", errcode.ResolvedPathRefused},
		{"blocked through slash refused", "${A.v}", `"Item/Import"`, "", errcode.ResolvedPathRefused},
		{"object not embeddable", "users/${A.v}", `{"a":1}`, "", errcode.NotEmbeddable},
		{"missing", "users/${A.w}", `1`, "", errcode.Unresolvable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":`+quote(c.path)+`}]`,
				Config{Blocked: []string{"Item/Import"}})
			assert.False(t, p.Steps[1].Path.Static())
			assert.Equal(t, []int{0}, p.Steps[1].Deps)
			got, err := p.Steps[1].Path.Resolve(responses{0: `{"v":` + c.value + `}`}.all(), 0)
			if c.code == 0 {
				require.NoError(t, err)
				assert.Equal(t, c.want, got)
				return
			}
			var re *ResolveError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, c.code, re.Code)
			assert.NotEmpty(t, re.Placeholder)
		})
	}
	t.Run("blocked list is copied", func(t *testing.T) {
		list := []string{"Item/Import"}
		p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"${A.v}"}]`, Config{Blocked: list})
		list[0] = "other"
		_, err := p.Steps[1].Path.Resolve(responses{0: `{"v":"Item/Import"}`}.all(), 0)
		require.Error(t, err)
	})
	t.Run("static path with escape", func(t *testing.T) {
		p := mustParse(t, `[{"key":"A","path":"/a$${b}"}]`, Config{})
		assert.True(t, p.Steps[0].Path.Static())
		got, err := p.Steps[0].Path.Resolve(nil, 0)
		require.NoError(t, err)
		assert.Equal(t, "a${b}", got)
	})
}

func TestSplitTemplate(t *testing.T) {
	cases := []struct {
		in       string
		refs     []string // texts of the references found
		literal  string   // the literal text with references removed
		problems int
	}{
		{"plain", nil, "plain", 0},
		{"${A}", []string{"${A}"}, "", 0},
		{"a${A.b.c}d", []string{"${A.b.c}"}, "ad", 0},
		{"${A.ü ber.0}", []string{"${A.ü ber.0}"}, "", 0},
		{"${A.x-y_z}", []string{"${A.x-y_z}"}, "", 0},
		{"$${A}", nil, "${A}", 0},
		{"$$${A}", nil, "$${A}", 0},
		{"$", nil, "$", 0},
		{"$$", nil, "$$", 0},
		{"a$b", nil, "a$b", 0},
		{"{A}", nil, "{A}", 0},
		{"${", nil, "", 1},
		{"x ${A.b", nil, "", 1},
		{"${}", nil, "", 1},
		{"${.a}", nil, "", 1},
		{"${A.}", nil, "", 1},
		{"${A..b}", nil, "", 1},
		{"${A b}", nil, "", 1},
		{"${A.b{c}", nil, "", 1},
		{"${A.b\nc}", nil, "", 1},
		{"${A}${}${B}", []string{"${A}", "${B}"}, "", 1},
		{"${" + strings.Repeat("k", 65) + "}", nil, "", 1},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			pieces, problems := splitTemplate(nil, c.in)
			assert.Len(t, problems, c.problems, "%q", problems)
			var refs []string
			for _, p := range pieces {
				if p.isRef {
					refs = append(refs, p.ref.text)
				}
			}
			assert.Equal(t, c.refs, refs)
			if c.problems == 0 { // the literal text of a refused string does not matter
				assert.Equal(t, c.literal, literalText(pieces, ""))
			}
		})
	}
}

// TestConcurrentResolve resolves one plan from many goroutines; run with -race.
func TestConcurrentResolve(t *testing.T) {
	p := mustParse(t, string(benchBody("diamond", 50)), Config{})
	r := responses{}
	for i := range p.Steps {
		r[i] = `{"result":{"new_id":` + string(rune('0'+i%10)) + `,"name":"n"}}`
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for _, s := range p.Steps {
				b, err := s.Body.Append(nil, r.all())
				if err != nil || !json.Valid(b) {
					t.Error(err, string(b))
				}
				if _, err := s.Path.Resolve(r.all(), 0); err != nil {
					t.Error(err)
				}
				for _, h := range s.Headers {
					if _, err := h.Value.Resolve(r.all(), 0); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestResolveErrorIsTyped(t *testing.T) {
	p := mustParse(t, `[{"key":"A","path":"a"},{"key":"B","path":"b","payload":"${A.x}"}]`, Config{})
	_, err := p.Steps[1].Body.Append(nil, responses{0: `{}`}.all())
	var re *ResolveError
	assert.True(t, errors.As(err, &re))
}

// TestAllocations pins the allocation budget of the hot paths, so that a regression shows up as a failure.
func TestAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	cases := []struct {
		name string
		max  float64
		f    func()
	}{
		{"compile static path", 0, func() { compilePath("/Producer/Add?x=1", nil, nil) }},
		{"compile static header", 0, func() { compileHeader("X-Trace", "t1") }},
		{"check path", 0, func() { _ = CheckPath("Producer/Add?x=1") }},
		{"check encoded path", 1, func() { _ = CheckPath("Producer/%41dd?x=1") }},
	}
	p := mustParse(t, string(benchBody("diamond", 50)), Config{})
	many := mustParse(t, `[{"path":"a"},{"path":"b","payload":["${0.result.new_id}","${0.result.name}","x${0.result.name}",
		"${0.result}","${0.result.new_id}-${0.result.new_id}"]}]`, Config{})
	// One Responses, as the runner keeps one per batch: each response is indexed by its first lookup.
	r := byteResponses{0: []byte(`{"result":{"new_id":4,"name":"Coca-Cola"}}`), 1: []byte(`{"result":{"new_id":5}}`)}.all()
	buf := make([]byte, 0, 512)
	cases = append(cases,
		struct {
			name string
			max  float64
			f    func()
		}{"append static", 0, func() { buf, _ = p.Steps[0].Body.Append(buf[:0], r) }},
		struct {
			name string
			max  float64
			f    func()
		}{"append templated", 0, func() { buf, _ = p.Steps[10].Body.Append(buf[:0], r) }}, // the index is built once
		struct {
			name string
			max  float64
			f    func()
		}{"append with many placeholders", 0, func() { buf, _ = many.Steps[1].Body.Append(buf[:0], r) }},
		struct {
			name string
			max  float64
			f    func()
		}{"resolve static path and header", 0, func() {
			_, _ = p.Steps[0].Path.Resolve(r, 0)
			_, _ = p.Steps[0].Headers[0].Value.Resolve(r, 0)
		}},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.LessOrEqual(t, testing.AllocsPerRun(50, c.f), c.max)
		})
	}
	got, err := p.Steps[10].Body.Append(nil, r)
	require.NoError(t, err)
	assert.Equal(t, `{"name":"copy of Coca-Cola","ids":[5],"tags":["a","b"]}`, string(got))
}

// byteResponses serves responses without converting them on each call, for allocation counts.
type byteResponses map[int][]byte

func (r byteResponses) all() *Responses { return bodiesOf(func(i int) []byte { return r[i] }) }

// TestParseOwnsItsStrings checks that a Plan neither aliases the body (the caller may reuse it) nor shares storage
// with another Plan or with Parse's pooled working space (drafts, key map, scratch): plans parsed concurrently from
// buffers that are then overwritten resolve as they did, right away and once every other Parse has run.
func TestParseOwnsItsStrings(t *testing.T) {
	r := byteResponses{0: []byte(`{"result":{"new_id":4,"name":"Co\"ke"}}`)}
	for k := range 20 {
		r[k] = r[0]
	}
	bodies := []string{
		string(benchBody("diamond", 20)),
		string(benchBody("chain", 20)),
		`[{"key":"A","path":"a"},{"key":"B","path":"b/${A.result.new_id}","headers":{"X":"v${A.result.new_id}"},` +
			`"payload":{"a":"$${x} ${A.result.name}\n","b":["${A.result.new_id}","x\u0024{A.result.name}"],"${A}":"$${y}"}}]`,
	}
	want := make([][]string, len(bodies))
	resolve := func(p *Plan) []string {
		var out []string
		for _, s := range p.Steps {
			path, err := s.Path.Resolve(r.all(), 0)
			require.NoError(t, err)
			out = append(out, s.Key, s.Method, s.Name, path, fmt.Sprint(s.Deps, s.Dependents))
			for _, h := range s.Headers {
				v, err := h.Value.Resolve(r.all(), 0)
				require.NoError(t, err)
				out = append(out, h.Name, v)
			}
			if s.Body != nil {
				b, err := s.Body.Append(nil, r.all())
				require.NoError(t, err)
				out = append(out, string(b), s.Body.String())
			}
		}
		return out
	}
	for i, b := range bodies {
		want[i] = resolve(mustParse(t, b, Config{}))
	}
	var wg sync.WaitGroup
	plans := make([][]*Plan, 4)
	for g := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 20 {
				i := (g + n) % len(bodies)
				buf := []byte(bodies[i])
				p, err := Parse(buf, Config{})
				if !assert.NoError(t, err) {
					return
				}
				for j := range buf {
					buf[j] = 'x'
				}
				assert.Equal(t, want[i], resolve(p))
				plans[g] = append(plans[g], p)
			}
		}()
	}
	wg.Wait()
	for g := range plans {
		for n, p := range plans[g] {
			assert.Equal(t, want[(g+n)%len(bodies)], resolve(p), "plan %d of goroutine %d, after the others", n, g)
		}
	}
}

// TestCallCaps: a resolved call over a cap is a *TooLargeError naming the part, its size and the cap, found
// before the part is built; the body's exact size is reserved first, and a refused reservation is returned as is.
func TestCallCaps(t *testing.T) {
	blob := strings.Repeat("x", 5000)
	r := responses{0: `{"s":"` + blob + `","n":12345}`}.all()
	p := mustParse(t, `[{"key":"A","path":"a"},
		{"key":"B","path":"items/${A.s}","headers":{"X-Big":"v=${A.s}","X-Small":"${A.n}"},"payload":["${A.s}","${A.s}"]}]`, Config{})
	b := p.Steps[1]

	body, err := b.Body.Resolve(r, 10007, nil) // ["x…","x…"]: 2 + 2 × 5002 + 1 bytes
	require.NoError(t, err, "exactly at the cap")
	assert.Equal(t, 10007, len(body))
	_, err = b.Body.Resolve(r, 10006, nil)
	var tl *TooLargeError
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, TooLargeError{Part: "body", Size: 10007, Limit: 10006}, *tl)
	assert.Equal(t, "body is 10007 bytes once its placeholders are resolved; at most 10006 allowed", err.Error())

	var reserved []int64
	_, err = b.Body.Resolve(r, 0, func(n int64) error { reserved = append(reserved, n); return nil })
	require.NoError(t, err)
	assert.Equal(t, []int64{10007}, reserved, "the exact size, once")
	full := errors.New("budget full")
	_, err = b.Body.Resolve(r, 0, func(int64) error { return full })
	assert.ErrorIs(t, err, full)

	_, err = b.Path.Resolve(r, 4096)
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, "path", tl.Part)
	assert.Equal(t, int64(4096), tl.Limit)
	assert.Greater(t, tl.Size, int64(4096))
	got, err := b.Path.Resolve(r, 8192)
	require.NoError(t, err)
	assert.Equal(t, "items/"+blob, got)

	_, err = b.Headers[0].Resolve(r, 4096)
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, `header "X-Big"`, tl.Part)
	v, err := b.Headers[1].Resolve(r, 5)
	require.NoError(t, err)
	assert.Equal(t, "12345", v)
	_, err = b.Headers[1].Resolve(r, 4)
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, TooLargeError{Part: `header "X-Small"`, Size: 5, Limit: 4}, *tl)
}

package planner

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// responses serves canned response bodies by step index.
type responses map[int]string

// all returns the Responses of these bodies, by step index.
func (r responses) all() *Responses { return bodiesOf(func(i int) []byte { return []byte(r[i]) }) }

// bodiesOf returns Responses over fixed bodies by step index, for tests of templates.
func bodiesOf(body func(int) []byte) *Responses { return NewResponses(1024, body, nil) }

func mustParse(t testing.TB, body string, cfg Config) *Plan {
	t.Helper()
	p, err := Parse([]byte(body), cfg)
	require.NoError(t, err)
	return p
}

func refusal(t testing.TB, body string, cfg Config) []Problem {
	t.Helper()
	p, err := Parse([]byte(body), cfg)
	require.Error(t, err)
	require.Nil(t, p)
	var e *Error
	require.True(t, errors.As(err, &e), "error is %T", err)
	require.NotEmpty(t, e.Problems)
	return e.Problems
}

func TestParseForms(t *testing.T) {
	t.Run("requests", func(t *testing.T) {
		p := mustParse(t, `{"stop_on_error": true, "requests": [
			{"key": "ProducerAdd", "path": "Producer/Add", "payload": {"name": "Coca-Cola"}},
			{"key": "ProducerGet", "path": "/Producer/Get?x=1", "method": "get", "body": {"ids": ["${ProducerAdd.result.new_id}"]}}
		]}`, Config{})
		assert.Equal(t, FormRequests, p.Form)
		assert.True(t, p.StopOnError)
		require.Len(t, p.Steps, 2)
		a, g := p.Steps[0], p.Steps[1]
		assert.Equal(t, 0, a.Index)
		assert.Equal(t, "ProducerAdd", a.Key)
		assert.Equal(t, "POST", a.Method, "default method")
		assert.Equal(t, "Producer/Add", a.Name)
		assert.True(t, a.Path.Static())
		assert.Equal(t, `{"name": "Coca-Cola"}`, a.Body.String())
		assert.True(t, a.Body.Static())
		assert.Equal(t, 1, g.Index)
		assert.Equal(t, "GET", g.Method, "upper-cased")
		assert.Equal(t, "Producer/Get", g.Name, "no leading slash, no query")
		path, err := g.Path.Resolve(nil, 0)
		require.NoError(t, err)
		assert.Equal(t, "Producer/Get?x=1", path)
		require.NotNil(t, g.Body, `"body" is a synonym of "payload"`)
		assert.False(t, g.Body.Static())
		assert.Equal(t, []int{0}, g.Deps)
		assert.Equal(t, []int{1}, a.Dependents)
		assert.Equal(t, 2, p.Depth())
	})
	t.Run("batch", func(t *testing.T) {
		p := mustParse(t, `{"batch": [{"path": "a"}, {"key": "K", "path": "b", "payload": "${0}"}]}`, Config{})
		assert.Equal(t, FormBatch, p.Form)
		assert.False(t, p.StopOnError)
		assert.Equal(t, "0", p.Steps[0].Key, "key defaults to the index")
		assert.Equal(t, "K", p.Steps[1].Key)
		assert.Equal(t, []int{0}, p.Steps[1].Deps)
	})
	t.Run("batch with stop_on_error", func(t *testing.T) {
		p := mustParse(t, `{"batch": [{"path": "a"}], "stop_on_error": true}`, Config{})
		assert.Equal(t, FormBatch, p.Form)
		assert.True(t, p.StopOnError)
	})
	t.Run("array", func(t *testing.T) {
		p := mustParse(t, `[{"method":"POST","path":"/users","body":{"name":"x"}},
			{"method":"get","path":"/users/${0.id}"}, {"key":"last","path":"users"}]`, Config{})
		assert.Equal(t, FormArray, p.Form)
		require.Len(t, p.Steps, 3)
		assert.Equal(t, []string{"0", "1", "last"}, []string{p.Steps[0].Key, p.Steps[1].Key, p.Steps[2].Key})
		assert.Equal(t, "GET", p.Steps[1].Method)
		assert.Nil(t, p.Steps[1].Body)
		assert.Equal(t, "users/${0.id}", p.Steps[1].Name)
		path, err := p.Steps[1].Path.Resolve(responses{0: `{"id": 42}`}.all(), 0)
		require.NoError(t, err)
		assert.Equal(t, "users/42", path)
	})
	t.Run("null payload is no payload", func(t *testing.T) {
		p := mustParse(t, `[{"path":"a","payload":null},{"path":"b"}]`, Config{})
		assert.Nil(t, p.Steps[0].Body)
		assert.Nil(t, p.Steps[1].Body)
	})
	t.Run("scalar payloads", func(t *testing.T) {
		p := mustParse(t, `[{"path":"a","payload":42},{"path":"b","payload":"s"},{"path":"c","payload":[1,{"a":[]}]}]`, Config{})
		for i, want := range []string{`42`, `"s"`, `[1,{"a":[]}]`} {
			got, err := p.Steps[i].Body.Append(nil, nil)
			require.NoError(t, err)
			assert.Equal(t, want, string(got))
		}
	})
	t.Run("escaped member names and values", func(t *testing.T) {
		p := mustParse(t, `{"re\u0071uests":[{"k\u0065y":"\u0041","path":"Producer\/Add"}]}`, Config{})
		assert.Equal(t, "A", p.Steps[0].Key)
		assert.Equal(t, "Producer/Add", p.Steps[0].Name)
	})
	t.Run("headers", func(t *testing.T) {
		p := mustParse(t, `[{"path":"a","headers":{"authorization":"Bearer x","x-request-id":"r-${b.id}","X-Empty":""}},
			{"key":"b","path":"b"}]`, Config{})
		h := p.Steps[0].Headers
		require.Len(t, h, 3)
		assert.Equal(t, "Authorization", h[0].Name, "canonical")
		assert.Equal(t, "X-Request-Id", h[1].Name)
		assert.Equal(t, "X-Empty", h[2].Name)
		assert.True(t, h[0].Value.Static())
		v, err := h[0].Value.Resolve(nil, 0)
		require.NoError(t, err)
		assert.Equal(t, "Bearer x", v)
		v, err = h[1].Value.Resolve(responses{1: `{"id": 7}`}.all(), 0)
		require.NoError(t, err)
		assert.Equal(t, "r-7", v)
		assert.Equal(t, []int{1}, p.Steps[0].Deps)
		assert.Empty(t, p.Steps[1].Headers)
	})
	t.Run("depends_on", func(t *testing.T) {
		p := mustParse(t, `[{"key":"a","path":"a"},{"key":"b","path":"b","depends_on":["a","a"]},
			{"key":"c","path":"c","depends_on":["b"],"payload":{"x":"${a.id}"}}]`, Config{})
		assert.Equal(t, []int{0}, p.Steps[1].Deps, "unique")
		assert.Equal(t, []int{0, 1}, p.Steps[2].Deps, "placeholders and depends_on together, ascending")
		assert.Equal(t, []int{1, 2}, p.Steps[0].Dependents)
		assert.Equal(t, 3, p.Depth())
	})
	t.Run("reference to a later step", func(t *testing.T) {
		p := mustParse(t, `[{"key":"a","path":"a","payload":"${b.x}"},{"key":"b","path":"b"}]`, Config{})
		assert.Equal(t, []int{1}, p.Steps[0].Deps)
		assert.Equal(t, []int{0}, p.Steps[1].Dependents)
	})
	t.Run("independent depth", func(t *testing.T) {
		p := mustParse(t, `[{"path":"a"},{"path":"b"}]`, Config{})
		assert.Equal(t, 1, p.Depth())
		assert.Nil(t, p.Steps[0].Deps)
		assert.Nil(t, p.Steps[0].Dependents)
	})
	t.Run("body is not retained", func(t *testing.T) {
		body := []byte(`[{"key":"A","path":"Producer/Add","payload":{"n":"${B.x}"}},{"key":"B","path":"b","payload":{"a":1}}]`)
		p, err := Parse(body, Config{})
		require.NoError(t, err)
		for i := range body {
			body[i] = 'X'
		}
		assert.Equal(t, "A", p.Steps[0].Key)
		assert.Equal(t, "Producer/Add", p.Steps[0].Name)
		got, err := p.Steps[1].Body.Append(nil, nil)
		require.NoError(t, err)
		assert.Equal(t, `{"a":1}`, string(got))
	})
}

func TestParseRejects(t *testing.T) {
	deep := strings.Repeat("[", 61) + strings.Repeat("]", 61) // 3 levels around the payload + 61 = 64: allowed
	deeper := strings.Repeat("[", 62) + strings.Repeat("]", 62)
	many := `[` + strings.TrimSuffix(strings.Repeat(`{"path":"a"},`, 3), ",") + `]`
	cases := []struct {
		name   string
		body   string
		cfg    Config
		key    string
		reason Reason
		detail string // a substring of the first problem's detail
	}{
		// Malformed JSON: one batch-level problem, nothing else.
		{"malformed", `{"requests": [`, Config{}, "", ReasonInvalidJSON, "unexpected EOF"},
		{"empty body", ``, Config{}, "", ReasonInvalidJSON, "empty"},
		{"not a batch", `42`, Config{}, "", ReasonInvalidJSON, "object or array"},
		{"trailing data", `[{"path":"a"}] []`, Config{}, "", ReasonInvalidJSON, "after the batch"},
		{"trailing garbage", `[{"path":"a"}] x`, Config{}, "", ReasonInvalidJSON, "invalid character"},
		{"duplicate top-level member", `{"stop_on_error":true,"stop_on_error":false,"requests":[{"key":"A","path":"a"}]}`, Config{}, "", ReasonInvalidJSON, "duplicate"},
		{"duplicate step member", `[{"path":"a","path":"b"}]`, Config{}, "", ReasonInvalidJSON, "duplicate"},
		{"duplicate in payload", `[{"path":"a","payload":{"x":1,"y":{"z":1,"z":2}}}]`, Config{}, "", ReasonInvalidJSON, "duplicate"},
		{"duplicate via escape", `[{"path":"a","payload":{"ab":1,"a\u0062":2}}]`, Config{}, "", ReasonInvalidJSON, "duplicate"},
		{"duplicate header member", `[{"path":"a","headers":{"X":"1","X":"2"}}]`, Config{}, "", ReasonInvalidJSON, "duplicate"},
		{"invalid UTF-8", "[{\"path\":\"a\xff\"}]", Config{}, "", ReasonInvalidJSON, "UTF-8"},
		{"too deep structure", `{"requests":[{"key":"A","path":"a","headers":{}}]}`, Config{MaxDepth: 3}, "", ReasonInvalidJSON, "nesting deeper than 3"},
		{"too deep payload", `{"requests":[{"key":"A","path":"a","payload":` + deeper + `}]}`, Config{}, "A", ReasonInvalidJSON, "65 levels"},
		{"too deep templated payload", `{"requests":[{"key":"A","path":"a","payload":[` + deep + `,"${B}"]},{"key":"B","path":"b"}]}`, Config{}, "A", ReasonInvalidJSON, "levels"},

		{"unknown top-level field", `{"requests":[{"key":"A","path":"a"}],"stop_on_eror":true}`, Config{}, "", ReasonInvalidJSON, `unknown field "stop_on_eror"`},
		{"requests and batch", `{"requests":[{"key":"A","path":"a"}],"batch":[{"path":"b"}]}`, Config{}, "", ReasonInvalidJSON, "both"},
		{"requests not an array", `{"requests":{"key":"A"}}`, Config{}, "", ReasonInvalidJSON, "must be an array"},
		{"stop_on_error not a boolean", `{"stop_on_error":"yes","requests":[{"key":"A","path":"a"}]}`, Config{}, "", ReasonInvalidJSON, "boolean"},
		{"no requests member", `{"stop_on_error":true}`, Config{}, "", ReasonNoSteps, "requests"},
		{"empty requests", `{"requests":[]}`, Config{}, "", ReasonNoSteps, "empty"},
		{"empty batch", `{"batch":[]}`, Config{}, "", ReasonNoSteps, "empty"},
		{"empty array", `[]`, Config{}, "", ReasonNoSteps, "empty"},
		{"too many steps", many, Config{MaxSteps: 2}, "", ReasonTooManySteps, "3 steps; at most 2"},

		{"step not an object", `[{"path":"a"}, "b"]`, Config{}, "#1", ReasonInvalidJSON, "JSON object"},
		{"unknown step field", `{"requests":[{"key":"A","path":"a","retries":3}]}`, Config{}, "A", ReasonInvalidJSON, `unknown step field "retries"`},
		{"key not a string", `[{"key":1,"path":"a"}]`, Config{}, "#0", ReasonInvalidJSON, `"key" must be a string`},
		{"path not a string", `[{"key":"A","path":["a"]}]`, Config{}, "A", ReasonInvalidJSON, `"path" must be a string, not a array`},
		{"method not a string", `[{"key":"A","path":"a","method":true}]`, Config{}, "A", ReasonInvalidJSON, `"method"`},
		{"headers not an object", `[{"key":"A","path":"a","headers":["x"]}]`, Config{}, "A", ReasonInvalidJSON, `"headers"`},
		{"header value not a string", `[{"key":"A","path":"a","headers":{"X-N":1}}]`, Config{}, "A", ReasonInvalidJSON, `"headers.X-N"`},
		{"depends_on not an array", `[{"key":"A","path":"a","depends_on":"B"},{"key":"B","path":"b"}]`, Config{}, "A", ReasonInvalidJSON, `"depends_on"`},
		{"depends_on entry not a string", `[{"key":"A","path":"a","depends_on":[1]}]`, Config{}, "A", ReasonInvalidJSON, `"depends_on"`},
		{"payload and body", `[{"key":"A","path":"a","payload":{},"body":{}}]`, Config{}, "A", ReasonInvalidJSON, "synonyms"},

		{"missing key", `{"requests":[{"path":"a"}]}`, Config{}, "#0", ReasonInvalidKey, "missing"},
		{"empty key", `[{"key":"","path":"a"}]`, Config{}, "#0", ReasonInvalidKey, "must match"},
		{"key with a space", `[{"key":"a b","path":"a"}]`, Config{}, "#0", ReasonInvalidKey, "must match"},
		{"key with a dot", `[{"key":"a.b","path":"a"}]`, Config{}, "#0", ReasonInvalidKey, "must match"},
		{"key too long", `[{"key":"` + strings.Repeat("k", 65) + `","path":"a"}]`, Config{}, "#0", ReasonInvalidKey, "must match"},
		{"reserved key", `[{"key":"self","path":"a"}]`, Config{}, "#0", ReasonInvalidKey, "reserved"},
		{"duplicate key", `{"requests":[{"key":"A","path":"a"},{"key":"A","path":"b"}]}`, Config{}, "#1", ReasonInvalidKey, `duplicate key "A" (step #0`},
		{"explicit key equals a default", `[{"key":"1","path":"a"},{"path":"b"}]`, Config{}, "#1", ReasonInvalidKey, `duplicate key "1"`},

		{"missing path", `[{"key":"A"}]`, Config{}, "A", ReasonInvalidPath, "missing"},
		{"refused path", `[{"key":"A","path":"a/../b"}]`, Config{}, "A", ReasonInvalidPath, `".."`},
		{"absolute URL", `[{"key":"A","path":"https://evil.test/x"}]`, Config{}, "A", ReasonInvalidPath, "scheme"},
		{"refused templated path", `[{"key":"A","path":"//${B.host}/x"},{"key":"B","path":"b"}]`, Config{}, "A", ReasonInvalidPath, "host"},
		{"blocked", `[{"key":"A","path":"Item/Import"}]`, Config{Blocked: []string{"Item/Import"}}, "A", ReasonBlocked, "Item/Import"},
		{"blocked any case with query", `[{"key":"A","path":"/item/IMPORT?x=1"}]`, Config{Blocked: []string{"Item/Import"}}, "A", ReasonBlocked, ""},
		{"blocked encoded", `[{"key":"A","path":"It%65m/Import"}]`, Config{Blocked: []string{"/Item/Import"}}, "A", ReasonBlocked, ""},
		{"nested batch", `[{"key":"A","path":"v1/batch"}]`, Config{}, "A", ReasonNestedBatch, "batch endpoint"},
		{"nested batch encoded", `[{"key":"A","path":"/%62atch"}]`, Config{}, "A", ReasonNestedBatch, ""},
		{"nested batch deep", `[{"key":"A","path":"api/V1/Batch?x"}]`, Config{}, "A", ReasonNestedBatch, ""},

		{"header name not a token", `[{"key":"A","path":"a","headers":{"X Y":"1"}}]`, Config{}, "A", ReasonInvalidHeader, "token"},
		{"header Host", `[{"key":"A","path":"a","headers":{"host":"evil"}}]`, Config{}, "A", ReasonInvalidHeader, `"Host"`},
		{"header TE", `[{"key":"A","path":"a","headers":{"TE":"trailers"}}]`, Config{}, "A", ReasonInvalidHeader, `"Te"`},
		{"header Content-Length", `[{"key":"A","path":"a","headers":{"content-length":"1"}}]`, Config{}, "A", ReasonInvalidHeader, ""},
		{"header Transfer-Encoding", `[{"key":"A","path":"a","headers":{"Transfer-Encoding":"chunked"}}]`, Config{}, "A", ReasonInvalidHeader, ""},
		{"header Connection", `[{"key":"A","path":"a","headers":{"Connection":"close"}}]`, Config{}, "A", ReasonInvalidHeader, ""},
		{"header Upgrade", `[{"key":"A","path":"a","headers":{"upgrade":"h2c"}}]`, Config{}, "A", ReasonInvalidHeader, ""},
		{"header Proxy-Authorization", `[{"key":"A","path":"a","headers":{"Proxy-Authorization":"x"}}]`, Config{}, "A", ReasonInvalidHeader, ""},
		{"header X-Forwarded-For", `[{"key":"A","path":"a","headers":{"x-forwarded-for":"10.0.0.1"}}]`, Config{}, "A", ReasonInvalidHeader, "X-Forwarded-For"},
		{"header Forwarded", `[{"key":"A","path":"a","headers":{"Forwarded":"for=10.0.0.1"}}]`, Config{}, "A", ReasonInvalidHeader, "Forwarded"},
		{"header X-Real-IP", `[{"key":"A","path":"a","headers":{"X-Real-IP":"10.0.0.1"}}]`, Config{}, "A", ReasonInvalidHeader, "X-Real-Ip"},
		{"header Accept-Encoding", `[{"key":"A","path":"a","headers":{"Accept-Encoding":"gzip"}}]`, Config{}, "A", ReasonInvalidHeader, ""},
		{"rollback header X-Forwarded-For", `{"atomic":true,"requests":[{"key":"A","path":"a","rollback":{"path":"b","headers":{"X-Forwarded-For":"1.2.3.4"}}}]}`, Config{}, "A", ReasonInvalidHeader, ""},
		{"header value CRLF", `[{"key":"A","path":"a","headers":{"X-A":"1\r\nHost: evil"}}]`, Config{}, "A", ReasonInvalidHeader, "control character"},
		{"header value NUL", `[{"key":"A","path":"a","headers":{"X-A":"1\u0000"}}]`, Config{}, "A", ReasonInvalidHeader, "control character"},
		{"header value CR in templated value", `[{"key":"A","path":"a","headers":{"X-A":"${B}\r"}},{"key":"B","path":"b"}]`, Config{}, "A", ReasonInvalidHeader, "control character"},
		{"header twice", `[{"key":"A","path":"a","headers":{"x-a":"1","X-A":"2"}}]`, Config{}, "A", ReasonInvalidHeader, "twice"},

		{"method not a token", `[{"key":"A","path":"a","method":"GE T"}]`, Config{}, "A", ReasonInvalidMethod, "token"},
		{"method CONNECT", `[{"key":"A","path":"a","method":"connect"}]`, Config{}, "A", ReasonInvalidMethod, "CONNECT"},
		{"method empty", `[{"key":"A","path":"a","method":""}]`, Config{}, "A", ReasonInvalidMethod, "token"},

		{"unterminated placeholder", `[{"key":"A","path":"a","payload":{"x":"${B.id"}},{"key":"B","path":"b"}]`, Config{}, "A", ReasonPlaceholder, "unterminated"},
		{"empty placeholder", `[{"key":"A","path":"a","payload":"${}"}]`, Config{}, "A", ReasonPlaceholder, `"${}"`},
		{"empty segment", `[{"key":"A","path":"a","payload":["${B..x}"]},{"key":"B","path":"b"}]`, Config{}, "A", ReasonPlaceholder, "empty segment"},
		{"trailing dot", `[{"key":"A","path":"a","payload":"x ${B.}"},{"key":"B","path":"b"}]`, Config{}, "A", ReasonPlaceholder, "empty segment"},
		{"bad key in placeholder", `[{"key":"A","path":"a","payload":"${B C.x}"}]`, Config{}, "A", ReasonPlaceholder, "step key"},
		{"nested placeholder", `[{"key":"A","path":"a","payload":"${B.${C}}"}]`, Config{}, "A", ReasonPlaceholder, `"$"`},
		{"placeholder in path", `[{"key":"A","path":"users/${B.id"}]`, Config{}, "A", ReasonPlaceholder, "unterminated"},
		{"placeholder in header", `[{"key":"A","path":"a","headers":{"X":"${"}}]`, Config{}, "A", ReasonPlaceholder, "unterminated"},
		{"escaped placeholder text", `[{"key":"A","path":"a","payload":"\u0024{B"}]`, Config{}, "A", ReasonPlaceholder, "unterminated"},

		{"unknown ref in payload", `[{"key":"A","path":"a","payload":{"x":["${Nope.id}"]}}]`, Config{}, "A", ReasonUnknownRef, "${Nope.id}"},
		{"unknown ref in path", `[{"key":"A","path":"u/${Nope.id}"}]`, Config{}, "A", ReasonUnknownRef, "${Nope.id}"},
		{"unknown ref in header", `[{"key":"A","path":"a","headers":{"X":"${Nope}"}}]`, Config{}, "A", ReasonUnknownRef, "${Nope}"},
		{"unknown depends_on", `[{"key":"A","path":"a","depends_on":["Nope"]}]`, Config{}, "A", ReasonUnknownRef, `depends_on "Nope"`},
		{"self placeholder is unknown", `[{"key":"A","path":"a","payload":"${self.x}"}]`, Config{}, "A", ReasonUnknownRef, "${self.x}"},
		{"self ref in payload", `[{"key":"A","path":"a","payload":{"x":"${A.id}"}}]`, Config{}, "A", ReasonSelfRef, "${A.id}"},
		{"self ref in depends_on", `[{"key":"A","path":"a","depends_on":["A"]}]`, Config{}, "A", ReasonSelfRef, "itself"},
		{"cycle of two", `[{"key":"A","path":"a","payload":"${B}"},{"key":"B","path":"b","depends_on":["A"]}]`, Config{}, "B", ReasonCycle, "B → A → B"},
		{"cycle of three", `[{"key":"A","path":"a","payload":"${C.x}"},{"key":"B","path":"b","payload":"${A.x}"},{"key":"C","path":"c","payload":"${B.x}"}]`, Config{}, "C", ReasonCycle, "C → B → A → C"},
		{"cycle through keyless steps", `[{"path":"a","payload":"${1}"},{"path":"b","payload":"${0}"}]`, Config{}, "1", ReasonCycle, "1 → 0 → 1"},

		{"payload too large", `[{"key":"A","path":"a","payload":{"name":"0123456789"}}]`, Config{MaxPayload: 10}, "A", ReasonTooLarge, "at most 10"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			probs := refusal(t, c.body, c.cfg)
			first := probs[0]
			assert.Equal(t, c.reason, first.Reason, "problems: %+v", probs)
			assert.Equal(t, c.key, first.Key, "problems: %+v", probs)
			assert.Contains(t, first.Detail, c.detail)
			if c.reason == ReasonInvalidJSON && c.key == "" && !strings.Contains(c.name, "field") &&
				!strings.Contains(c.name, "requests") && !strings.Contains(c.name, "stop_on_error") {
				assert.Len(t, probs, 1, "decoding stops at malformed JSON: %+v", probs)
			}
		})
	}
}

func TestParseDepthLimit(t *testing.T) {
	at := func(n int) string { // a payload that makes the body exactly n levels deep
		return `{"requests":[{"key":"A","path":"a","payload":` + strings.Repeat("[", n-3) + strings.Repeat("]", n-3) + `}]}`
	}
	mustParse(t, at(64), Config{})
	probs := refusal(t, at(65), Config{})
	assert.Equal(t, ReasonInvalidJSON, probs[0].Reason)
	mustParse(t, at(10), Config{MaxDepth: 10})
	refusal(t, at(11), Config{MaxDepth: 10})
	// Far past the decoder's own limit: still one clean problem.
	probs = refusal(t, `[{"path":"a","payload":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`}]`, Config{})
	assert.Len(t, probs, 1)
}

func TestParseReportsEveryProblem(t *testing.T) {
	body := `{"stop_on_error": 1, "x": 2, "requests": [
		{"path": "a"},
		{"key": "B", "path": "Item/Import", "headers": {"Host": "h"}, "payload": "${Nope.x}"},
		{"key": "C", "path": "c", "payload": "${D.x} ${C.y}"},
		{"key": "D", "path": "v1/batch", "payload": {"a": "${C.x}", "b": "${E.}"}},
		{"key": "B", "path": "../x"}
	]}`
	probs := refusal(t, body, Config{Blocked: []string{"Item/Import"}})
	type kr struct {
		Key    string
		Reason Reason
	}
	var got []kr
	for _, p := range probs {
		got = append(got, kr{p.Key, p.Reason})
	}
	assert.Equal(t, []kr{
		{"", ReasonInvalidJSON}, // stop_on_error type
		{"", ReasonInvalidJSON}, // unknown field x
		{"#0", ReasonInvalidKey},
		{"B", ReasonInvalidHeader},
		{"B", ReasonBlocked},
		{"B", ReasonUnknownRef},
		{"C", ReasonSelfRef},
		{"D", ReasonPlaceholder},
		{"D", ReasonNestedBatch},
		{"D", ReasonCycle},
		{"#4", ReasonInvalidKey},
		{"#4", ReasonInvalidPath},
	}, got, "%+v", probs)
	var e *Error
	_, err := Parse([]byte(body), Config{Blocked: []string{"Item/Import"}})
	require.ErrorAs(t, err, &e)
	assert.Contains(t, err.Error(), "(and more)")
}

// TestParseRepeatedPaths covers compilePath's reuse of the previous static path: a repeated path compiles as the
// first did, a repeated templated path binds its own references, and a refused path is refused every time.
func TestParseRepeatedPaths(t *testing.T) {
	p := mustParse(t, `[{"key":"A","path":"Producer/Add"},{"key":"B","path":"Producer/Add"},
		{"key":"C","path":"/Producer/Add?x=1","rollback":{"path":"/Producer/Add?x=1"}},
		{"key":"D","path":"x/${A.id}"},{"key":"E","path":"x/${A.id}"},{"key":"F","path":"x/${B.id}"},
		{"key":"G","path":"g","rollback":{"path":"undo/${self.id}"}},{"key":"H","path":"g","rollback":{"path":"undo/${self.id}"}}]`,
		Config{})
	r := responses{0: `{"id":1}`, 1: `{"id":2}`, 6: `{"id":6}`, 7: `{"id":7}`}
	for i, want := range []struct{ path, name string }{{"Producer/Add", "Producer/Add"}, {"Producer/Add", "Producer/Add"},
		{"Producer/Add?x=1", "Producer/Add"}, {"x/1", "x/${A.id}"}, {"x/1", "x/${A.id}"}, {"x/2", "x/${B.id}"}} {
		got, err := p.Steps[i].Path.Resolve(r.all(), 0)
		require.NoError(t, err)
		assert.Equal(t, want.path, got, "step %d", i)
		assert.Equal(t, want.name, p.Steps[i].Name, "step %d", i)
	}
	rb, err := p.Steps[2].Rollback.Path.Resolve(nil, 0)
	require.NoError(t, err)
	assert.Equal(t, "Producer/Add?x=1", rb)
	for _, i := range []int{6, 7} {
		rb, err := p.Steps[i].Rollback.Path.Resolve(r.all(), 0)
		require.NoError(t, err)
		assert.Equal(t, "undo/"+strconv.Itoa(i), rb, "each rollback's ${self} is its own step")
	}
	assert.Equal(t, [][]int{nil, nil, nil, {0}, {0}, {1}}, [][]int{p.Steps[0].Deps, p.Steps[1].Deps, p.Steps[2].Deps,
		p.Steps[3].Deps, p.Steps[4].Deps, p.Steps[5].Deps})

	probs := refusal(t, `[{"path":"Item/Import"},{"path":"Item/Import"},{"path":"a//b"},{"path":"a//b"}]`,
		Config{Blocked: []string{"Item/Import"}})
	var reasons []Reason
	for _, pr := range probs {
		reasons = append(reasons, pr.Reason)
	}
	assert.Equal(t, []Reason{ReasonBlocked, ReasonBlocked, ReasonInvalidPath, ReasonInvalidPath}, reasons)
}

// TestParseUnusableKeys checks that a step whose key is refused (malformed, reserved or a duplicate) cannot be
// named: references to it name no step, while a duplicated key still names its first step.
func TestParseUnusableKeys(t *testing.T) {
	probs := refusal(t, `[{"key":"self","path":"a"},{"key":"A","path":"a"},{"key":"A","path":"b"},{"key":"x.y","path":"c"},
		{"key":"B","path":"d","depends_on":["self","x.y","A"],"payload":"${self.x}"}]`, Config{})
	assert.Equal(t, []Problem{
		{Key: "#0", Reason: ReasonInvalidKey, Detail: `key "self" is reserved: ${self} means something else in a placeholder`},
		{Key: "#2", Reason: ReasonInvalidKey, Detail: `duplicate key "A" (step #1 has it too)`},
		{Key: "#3", Reason: ReasonInvalidKey, Detail: `key "x.y" must match [A-Za-z0-9_-]{1,64}`},
		{Key: "B", Reason: ReasonUnknownRef, Detail: `placeholder ${self.x}: ${self…} may only be used in a "rollback"`},
		{Key: "B", Reason: ReasonUnknownRef, Detail: `depends_on "x.y" names no step of this batch`},
	}, probs)
}

func TestParseCycleReports(t *testing.T) {
	// Two independent cycles and a step that only waits for one: each cycle is reported once, the waiter not at all.
	body := `[{"key":"A","path":"a","depends_on":["B"]},{"key":"B","path":"b","depends_on":["A"]},
		{"key":"C","path":"c","depends_on":["D"]},{"key":"D","path":"d","depends_on":["C"]},
		{"key":"W","path":"w","depends_on":["A","C"]}]`
	probs := refusal(t, body, Config{})
	require.Len(t, probs, 2, "%+v", probs)
	assert.Equal(t, Problem{Key: "B", Reason: ReasonCycle, Detail: "dependency cycle: B → A → B (each step waits for the next)"}, probs[0])
	assert.Equal(t, Problem{Key: "D", Reason: ReasonCycle, Detail: "dependency cycle: D → C → D (each step waits for the next)"}, probs[1])
}

func TestParseLargeBatchWithinLimit(t *testing.T) {
	p := mustParse(t, string(benchBody("chain", 200)), Config{MaxSteps: 200})
	assert.Equal(t, 200, p.Depth())
	for i, s := range p.Steps {
		assert.Equal(t, "Step"+strconv.Itoa(i), s.Key)
		if i > 0 {
			assert.Equal(t, []int{i - 1}, s.Deps)
		}
	}
	p = mustParse(t, string(benchBody("diamond", 50)), Config{})
	assert.Equal(t, 5, p.Depth())
	assert.Equal(t, []int{0, 1}, p.Steps[10].Deps)
	assert.Equal(t, []int{0, 9}, p.Steps[19].Deps)
}

func TestErrorText(t *testing.T) {
	assert.Equal(t, "planner: batch refused", (&Error{}).Error())
	assert.Equal(t, "planner: step A: x", (&Error{Problems: []Problem{{Key: "A", Detail: "x"}}}).Error())
	assert.Equal(t, "planner: x (and more)", (&Error{Problems: []Problem{{Detail: "x"}, {Detail: "y"}}}).Error())
}

func TestParseCycleReportsALongRing(t *testing.T) {
	// A ring of 266 steps plus a small cycle: each reported once, at the step whose dependency closes it.
	n := 266
	var b strings.Builder
	b.WriteString(`[`)
	for i := 0; i < n; i++ {
		b.WriteString(`{"key":"S` + strconv.Itoa(i) + `","path":"a","depends_on":["S` + strconv.Itoa((i+n-1)%n) + `"]},`)
	}
	b.WriteString(`{"key":"X","path":"x","payload":"${Y}"},{"key":"Y","path":"y","payload":"${X}"}]`)
	probs := refusal(t, b.String(), Config{MaxSteps: n + 2})
	require.Len(t, probs, 2, "%+v", probs)
	last := "S" + strconv.Itoa(n-1) // its edge is the one that closes the ring
	assert.Equal(t, last, probs[0].Key)
	assert.Equal(t, ReasonCycle, probs[0].Reason)
	assert.True(t, strings.HasPrefix(probs[0].Detail, "dependency cycle: "+last+" → S"+strconv.Itoa(n-2)+" → "), probs[0].Detail)
	assert.True(t, strings.HasSuffix(probs[0].Detail, " → S1 → S0 → "+last+" (each step waits for the next)"), probs[0].Detail)
	assert.Equal(t, Problem{Key: "Y", Reason: ReasonCycle, Detail: "dependency cycle: Y → X → Y (each step waits for the next)"}, probs[1])
}

func TestReasons(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		assert.False(t, seen[r], "listed twice: %s", r)
		seen[r] = true
	}
	for _, r := range []Reason{ReasonInvalidJSON, ReasonNoSteps, ReasonTooManySteps, ReasonInvalidKey,
		ReasonInvalidPath, ReasonBlocked, ReasonNestedBatch, ReasonInvalidHeader, ReasonPlaceholder, ReasonUnknownRef,
		ReasonSelfRef, ReasonCycle, ReasonTooLarge, ReasonInvalidMethod, ReasonMissingRollback} {
		assert.True(t, seen[r], "not listed: %s", r)
	}
}

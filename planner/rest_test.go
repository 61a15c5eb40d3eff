package planner

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/errcode"
)

// replies serves canned replies (status, body, headers) by step index, for templates that read metadata.
type replies map[int]Reply

func (r replies) all() *Responses {
	return NewResponses(1024, func(i int) []byte { return r[i].Body }, nil).WithMeta(func(i int) (int, http.Header) {
		return r[i].Status, r[i].Header
	})
}

// problemsOf returns the details of a refused batch, one "key: reason: detail" string each.
func problemsOf(t *testing.T, body string, cfg Config) []string {
	t.Helper()
	var out []string
	for _, p := range refusal(t, body, cfg) {
		out = append(out, p.Key+": "+string(p.Reason)+": "+p.Detail)
	}
	return out
}

func TestPlaceholderGrammar(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want refSpec
		msg  string
	}{
		{in: "${A}", want: refSpec{key: "A"}},
		{in: "${A.result.0.id}", want: refSpec{key: "A", path: "result.0.id"}},
		{in: "${A:status}", want: refSpec{key: "A", meta: metaStatus}},
		{in: "${A:headers.location}", want: refSpec{key: "A", meta: metaHeader, header: "Location"}},
		{in: "${A:headers.X-Request-Id}", want: refSpec{key: "A", meta: metaHeader, header: "X-Request-Id"}},
		{in: "${item}", want: refSpec{key: "item"}},
		{in: "${item.name}", want: refSpec{key: "item", path: "name"}},
		{in: "${index}", want: refSpec{key: "index"}},
		{in: "${A:stat}", msg: `unknown selector "stat" after ':'; use ${A:status} or ${A:headers.Name}, and '.' to walk the body`},
		{in: "${A:headers.}", msg: `header name "" is not an HTTP token`},
		{in: "${A:headers.a b}", msg: `header name "a b" is not an HTTP token`},
		{in: "${A:status.x}", msg: `unknown selector "status.x"`},
		{in: "${item:status}", msg: "${item} has no status or headers"},
		{in: "${index.x}", msg: "${index} is a number: it has no members"},
		{in: "${L.result.*.id}", msg: `a "*" segment is not a path; to call once per element of a list, give the step "for_each": "${L.result}" and use ${item…} in it`},
		{in: "${L.*}", msg: `"for_each": "${L}"`},
		{in: "${A.}", msg: "empty segment"},
		{in: "${:status}", msg: "step key must match"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			spec, end, msg := scanPlaceholder(tc.in, 0)
			if tc.msg != "" {
				assert.Contains(t, msg, tc.msg)
				return
			}
			require.Empty(t, msg)
			assert.Equal(t, len(tc.in), end)
			tc.want.text = tc.in
			assert.Equal(t, tc.want, spec)
		})
	}
}

func TestRESTFieldsRefused(t *testing.T) {
	got := problemsOf(t, `{"requests": [
		{"key": "A", "path": "a"},
		{"key": "B", "path": "b", "payload": {"x": "${item.id}", "i": "${index}"}},
		{"key": "C", "path": "c", "for_each": "${A.result} and more"},
		{"key": "D", "path": "d", "for_each": "${A:status}"},
		{"key": "E", "path": "e", "when": "${A:status} ~= 4"},
		{"key": "F", "path": "f", "when": "${A:status} == {\"a\": 1}"},
		{"key": "G", "path": "g", "when": "status == 200"},
		{"key": "H", "path": "h", "ok_status": [404, 99, "x"], "capture_headers": ["ETag", "Set-Cookie", "a b"]},
		{"key": "I", "path": "i", "when": ""},
		{"key": "J", "path": "j", "for_each": ""},
		{"key": "item", "path": "i"}
	]}`, Config{})
	assert.Equal(t, []string{
		`B: placeholder: placeholder ${item.id} is only defined in a step with "for_each"`,
		`B: placeholder: placeholder ${index} is only defined in a step with "for_each"`,
		`C: invalid_for_each: "for_each" must be exactly one placeholder naming a list, e.g. "${L.result}", not "${A.result} and more"`,
		`D: invalid_for_each: "for_each": ${A:status} is a status or a header, not a list`,
		`E: invalid_when: "when": "${A:status} ~= 4": unknown operator in "~= 4"; use ==, !=, <, <=, >, >=`,
		`F: invalid_when: "when": "${A:status} == {\"a\": 1}": the right side must be a number, a string, true, false or null, not an object`,
		`G: invalid_when: "when": "status == 200": must start with a placeholder, "exists ${…}" or "not exists ${…}"`,
		`H: invalid_json: "ok_status": "99" is not an HTTP status (100 to 599)`,
		`H: invalid_json: "ok_status" must be an array of HTTP statuses, not a string`,
		`H: invalid_header: "capture_headers": Set-Cookie is never captured: a cookie must not reach the answer or another step`,
		`H: invalid_header: "capture_headers": "a b" is not an HTTP header name`,
		`I: invalid_when: "when" is empty: give a condition, e.g. "${A:status} == 404", or leave "when" out`,
		`J: invalid_for_each: "for_each" is empty: give the placeholder of a list, e.g. "${L.result}", or leave "for_each" out`,
		`#10: invalid_key: key "item" is reserved: ${item} means something else in a placeholder`,
	}, got)
}

func TestRESTFieldsCompiled(t *testing.T) {
	p := mustParse(t, `{"requests": [
		{"key": "L", "path": "list"},
		{"key": "C", "path": "create", "capture_headers": ["ETag", "etag", "X-Total"]},
		{"key": "F", "path": "users/${item.id}", "for_each": "${L.result}", "ok_status": [404, 409, 404],
		 "when": "exists ${L.result.0}", "payload": {"n": "${index}", "loc": "${C:headers.Location}"}},
		{"key": "D", "path": "done", "depends_on": ["F"], "headers": {"If-Match": "${C:headers.ETag}"}}
	]}`, Config{})
	l, c, f, d := p.Steps[0], p.Steps[1], p.Steps[2], p.Steps[3]
	assert.Equal(t, []string{"ETag", "X-Total"}, c.CaptureHeaders, "as written, each once")
	assert.Equal(t, []string{"Etag", "Location", "X-Total"}, c.Capture, "asked for, and read by F and D")
	assert.Nil(t, l.Capture)
	assert.Equal(t, "${L.result}", f.ForEach.String())
	assert.Equal(t, "exists ${L.result.0}", f.When.String())
	assert.Equal(t, []int{404, 409}, f.OKStatus)
	assert.Equal(t, []int{0, 1}, f.Deps)
	assert.Equal(t, []int{0, 1}, f.Reads)
	assert.Equal(t, []int{1, 2}, d.Deps)
	assert.Equal(t, []int{1}, d.Reads, "F is depends_on alone")

	r := replies{
		0: {Status: 200, Body: []byte(`{"result": [{"id": 7}, {"id": "a/b"}]}`)},
		1: {Status: 201, Header: http.Header{"Location": {"/users/9"}, "Etag": {`"v1"`}}},
	}.all()
	ok, err := f.When.Eval(r)
	require.NoError(t, err)
	assert.True(t, ok)
	elems, err := f.ForEach.Elements(r, -1)
	require.NoError(t, err)
	require.Len(t, elems, 2)
	for j, want := range []struct{ path, body string }{
		{"users/7", `{"n": 0, "loc": "/users/9"}`},
		{"users/a%2Fb", `{"n": 1, "loc": "/users/9"}`},
	} {
		ri := r.ForItem(elems[j], j)
		path, err := f.Path.Resolve(ri, 0)
		require.NoError(t, err)
		assert.Equal(t, want.path, path)
		body, err := f.Body.Resolve(ri, 0, nil)
		require.NoError(t, err)
		assert.Equal(t, want.body, string(body))
	}
	h, err := d.Headers[0].Resolve(r, 0)
	require.NoError(t, err)
	assert.Equal(t, `"v1"`, h)

	_, err = f.ForEach.Elements(r, 1)
	var tm *TooManyError
	require.True(t, errors.As(err, &tm), "%v", err)
	assert.Equal(t, `"for_each": ${L.result} has 2 elements; this batch may make 1 more calls`, tm.Error())

	notList := replies{0: {Status: 200, Body: []byte(`{"result": {"id": 7}}`)}}.all()
	_, err = f.ForEach.Elements(notList, -1)
	var re *ResolveError
	require.True(t, errors.As(err, &re))
	assert.Equal(t, `"for_each": ${L.result} is a object, not a list`, re.Detail)
}

func TestConditions(t *testing.T) {
	r := replies{0: {Status: 404, Body: []byte(`{"ok": true, "result": [{"n": 1.5, "s": "b", "t": true, "z": null}]}`),
		Header: http.Header{"X-Count": {"3"}}}}.all()
	for _, tc := range []struct {
		when string
		want bool
		err  string
	}{
		{when: "${A:status} == 404", want: true},
		{when: " ${A:status}!=404 ", want: false},
		{when: "${A:status} >= 400", want: true},
		{when: "${A:status} < 400", want: false},
		{when: "${A.result.0.n} > 1", want: true},
		{when: "${A.result.0.n} <= 1.5", want: true},
		{when: `${A.result.0.s} < "c"`, want: true},
		{when: `${A.result.0.s} == "b"`, want: true},
		{when: `${A:headers.X-Count} == "3"`, want: true},
		{when: `${A:headers.X-Count} == 3`, want: false},
		{when: "${A.result.0.t} == true", want: true},
		{when: "${A.result.0.z} == null", want: true},
		{when: "${A.result.0} != null", want: true},
		{when: "exists ${A.result.0}", want: true},
		{when: "exists ${A.result.1}", want: false},
		{when: "not exists ${A.result.1}", want: true},
		{when: "not exists ${A.result.0.z}", want: false},
		{when: "exists ${A:headers.X-Missing}", want: false},
		{when: `${A.result.0.s} < 3`, err: `cannot be evaluated: cannot order a string and a number`},
		{when: "${A.result.7} == 1", err: "index 7 out of range"},
	} {
		t.Run(tc.when, func(t *testing.T) {
			p := mustParse(t, `[{"key": "A", "path": "a"}, {"key": "B", "path": "b", "when": `+quote(tc.when)+`}]`, Config{})
			got, err := p.Steps[1].When.Eval(r)
			if tc.err != "" {
				var re *ResolveError
				require.True(t, errors.As(err, &re), "%v", err)
				assert.Contains(t, re.Detail, tc.err)
				assert.Equal(t, errcode.Unresolvable, re.Code)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestURLReferences(t *testing.T) {
	base, err := url.Parse("http://api.test:8080/api/v1")
	require.NoError(t, err)
	cfg := Config{Base: base, Blocked: []string{"Item/Import"}}
	p := mustParse(t, `[{"key": "A", "path": "a"}, {"key": "B", "path": "${A.next}"}, {"key": "C", "path": "/${A:headers.Location}"}]`, cfg)
	for _, tc := range []struct {
		ref, want, refused string
	}{
		{ref: "customers?page=2", want: "customers?page=2"},
		{ref: "/api/v1/customers?page=2&size=10", want: "customers?page=2&size=10"},
		{ref: "http://api.test:8080/api/v1/customers/26", want: "customers/26"},
		{ref: "HTTP://API.TEST:8080/api/v1/customers/26#top", want: "customers/26"},
		{ref: "../v1/orders/7", want: "orders/7"},
		{ref: "/api/orders/7", refused: `it is not under the upstream's base path "/api/v1/"`},
		{ref: "/api/v1/", refused: "not under the upstream's base path"},
		{ref: "http://evil.test/api/v1/x", refused: "it leaves the upstream's origin http://api.test:8080"},
		{ref: "https://api.test:8080/api/v1/x", refused: "leaves the upstream's origin"},
		{ref: "//evil.test/api/v1/x", refused: "leaves the upstream's origin"},
		{ref: "http://u:p@api.test:8080/api/v1/x", refused: "user info"},
		{ref: "/api/v1/Item/Import", refused: "the method is blocked"},
		{ref: "/api/v1/batch", refused: "batch endpoint"},
		{ref: "/api/v1/a b?q=x y", refused: `character " " in query must be percent-encoded`},
		{ref: "mailto:x@y", refused: "not a hierarchical URL"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			r := replies{0: {Status: 200, Body: []byte(`{"next": ` + quote(tc.ref) + `}`)}}.all()
			got, err := p.Steps[1].Path.Resolve(r, 0)
			if tc.refused != "" {
				var re *ResolveError
				require.True(t, errors.As(err, &re), "%v (%q)", err, got)
				assert.Equal(t, errcode.ResolvedPathRefused, re.Code)
				assert.Contains(t, re.Detail, tc.refused)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	r := replies{0: {Status: 201, Header: http.Header{"Location": {"/api/v1/customers/26"}}}}.all()
	got, err := p.Steps[2].Path.Resolve(r, 0)
	require.NoError(t, err, "a leading / before the placeholder is the same reference")
	assert.Equal(t, "customers/26", got)

	// Without a configured origin (the demo API), only references without scheme and host are taken.
	demo := mustParse(t, `[{"key": "A", "path": "a"}, {"key": "B", "path": "${A.next}"}]`, Config{Base: &url.URL{Path: "/v1/"}})
	r = replies{0: {Status: 200, Body: []byte(`{"next": "/v1/Demo/Page?page=2"}`)}}.all()
	got, err = demo.Steps[1].Path.Resolve(r, 0)
	require.NoError(t, err)
	assert.Equal(t, "Demo/Page?page=2", got)
	r = replies{0: {Status: 200, Body: []byte(`{"next": "http://x/v1/Demo/Page"}`)}}.all()
	_, err = demo.Steps[1].Path.Resolve(r, 0)
	assert.ErrorContains(t, err, "an absolute URL cannot be checked")
}

func TestTextPayload(t *testing.T) {
	p := mustParse(t, `[{"key": "A", "path": "a"},
		{"key": "F", "path": "form", "headers": {"Content-Type": "application/x-www-form-urlencoded"},
		 "payload": "name=${A.result.name}&n=${A.result.n}&lit=$${x}\n"},
		{"key": "J", "path": "json", "headers": {"Content-Type": "application/vnd.api+json"}, "payload": "${A.result.name}"},
		{"key": "O", "path": "other", "headers": {"Content-Type": "text/plain"}, "payload": {"a": 1}}]`, Config{})
	f, j, o := p.Steps[1], p.Steps[2], p.Steps[3]
	require.NotNil(t, f.Text)
	assert.Nil(t, f.Body)
	require.Nil(t, j.Text, "a JSON type keeps a JSON payload")
	require.Nil(t, o.Text, "only a string payload is text")
	r := responses{0: `{"result": {"name": "a&b\n", "n": 3}}`}.all()
	s, err := f.Text.Resolve(r, 0)
	require.NoError(t, err)
	assert.Equal(t, "name=a&b\n&n=3&lit=${x}\n", s, "interpolated as text, control characters and all")
	_, err = f.Text.Resolve(r, 10)
	var tl *TooLargeError
	require.True(t, errors.As(err, &tl))
	assert.Equal(t, "body", tl.Part)
}

func TestDryRunPlan(t *testing.T) {
	p := mustParse(t, `{"dry_run": true, "requests": [
		{"key": "A", "path": "a"}, {"key": "B", "path": "b", "payload": "${A.x}"},
		{"key": "C", "path": "c", "depends_on": ["A"]}, {"key": "D", "path": "d", "payload": {"v": "${C.x}", "w": "${B.x}"}},
		{"key": "E", "path": "e"}]}`, Config{})
	assert.True(t, p.DryRun)
	assert.Equal(t, []int{0, 1, 1, 2, 0}, p.Levels())
	assert.Equal(t, 3, p.Depth())
	assert.Equal(t, []int{0, 1, 3}, p.CriticalPath(), "the first deepest step, back through the first dependency one level up")
	one := mustParse(t, `[{"path": "a"}]`, Config{})
	assert.Equal(t, []int{0}, one.CriticalPath())
	assert.False(t, one.DryRun)
	assert.True(t, strings.HasPrefix(refusal(t, `{"dry_run": 1, "requests": [{"key": "a", "path": "a"}]}`, Config{})[0].Detail, `"dry_run" must be a boolean`))
}

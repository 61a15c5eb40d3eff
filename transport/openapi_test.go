package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/batchtest"
	"github.com/batchd/batchd/internal/ratelimit"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
	"github.com/batchd/batchd/transport/demoapi"
)

// spec is openapi.yaml loaded, validated and routed, with the filter options every check uses.
type spec struct {
	doc    *openapi3.T
	router routers.Router
	opts   *openapi3filter.Options
}

func loadSpec(t *testing.T) *spec {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(transport.OpenAPI())
	require.NoError(t, err, "openapi.yaml does not load")
	require.NoError(t, doc.Validate(t.Context()), "openapi.yaml is not a valid OpenAPI 3.0 document")
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return &spec{doc: doc, router: router, opts: &openapi3filter.Options{
		IncludeResponseStatus: true, // a status the spec does not list is a failure, not a pass
		MultiError:            true,
		SkipSettingDefaults:   true, // validate what was sent, never a body with defaults filled in
	}}
}

// checkRequest finds req's operation and validates req against it. A request the spec does not route at all fails
// the test; a request the spec routes but refuses is reported as the error.
func (s *spec) checkRequest(t *testing.T, req *http.Request) (*openapi3filter.RequestValidationInput, error) {
	t.Helper()
	route, params, err := s.router.FindRoute(req)
	require.NoError(t, err, "the spec has no operation for %s %s", req.Method, req.URL.Path)
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: s.opts}
	return in, openapi3filter.ValidateRequest(t.Context(), in)
}

func (s *spec) checkResponse(ctx context.Context, in *openapi3filter.RequestValidationInput, status int, h http.Header, body []byte) error {
	opts := s.opts
	if in.Options != nil {
		opts = in.Options // a stream's check leaves its body to the line schemas
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: h, Options: opts}
	out.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(ctx, out)
}

// checkSchema validates a JSON document against a component schema.
func (s *spec) checkSchema(t *testing.T, name string, doc []byte) error {
	t.Helper()
	ref := s.doc.Components.Schemas[name]
	require.NotNil(t, ref, "no component schema %q", name)
	var v any
	require.NoError(t, json.Unmarshal(doc, &v), "%s", doc)
	return ref.Value.VisitJSON(v, openapi3.MultiErrors())
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	s := loadSpec(t) // loads and validates the document, its examples included
	assert.Equal(t, "3.0.3", s.doc.OpenAPI)

	seen := map[string]bool{}
	for path, item := range s.doc.Paths.Map() {
		for method, op := range item.Operations() {
			assert.NotEmpty(t, op.OperationID, "%s %s: operationId", method, path)
			assert.NotEmpty(t, op.Summary, "%s %s: summary", method, path)
			assert.False(t, seen[op.OperationID], "operationId %s used twice", op.OperationID)
			seen[op.OperationID] = true
		}
	}
	for _, want := range []string{"runBatch", "getHealth", "getReady", "getMetrics", "getOpenAPI", "demoProducerAdd",
		"demoProducerGet", "demoProducerEdit", "demoProducerDelete", "demoEcho", "demoSleep", "demoFail", "demoUnknownMethod"} {
		assert.True(t, seen[want], "no operation %s", want)
	}

	// OpenAPI hands out copies: a caller that scribbles on its slice changes nobody else's.
	a := transport.OpenAPI()
	a[0] = '#'
	assert.NotEqual(t, a[0], transport.OpenAPI()[0])
}

// TestReadmeExamples checks every example of README.md that the spec describes:
//
//   - a curl to /v1/batch in a sh block: its headers and -d body must be a valid request of runBatch (so a README
//     that forgets the JSON Content-Type fails here, as batchd would answer 415);
//   - a json block that opens within a few lines of such a curl's block (with at most a line of prose between, such
//     as "answers (HTTP 200)") is that call's answer: 200 unless it is an ErrorResult, then the status its code
//     stands for;
//   - any other json block is classified by shape: a batch request, a batch answer, a refused batch (an ErrorResult
//     with result.details, validated as that status's answer), or a step's ErrorResult (the component schema).
//
// A json block that is not JSON fails. So does one of no known shape, so that a new example cannot go unchecked by
// accident: teach classify about it. A json block that is exactly one placeholder word in capitals (SEED_OUTPUT,
// ERROR_OUTPUT) stands for real output that is pasted in later; it is skipped, and logged, until then. Likewise a
// curl whose -d body is only an ellipsis ('…') shows headers, not a batch: it is skipped and logged.
func TestReadmeExamples(t *testing.T) {
	s := loadSpec(t)
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)

	const answerGap = 4 // most lines between a curl's closing fence and its answer's opening fence
	var (
		pending                      *openapi3filter.RequestValidationInput // a curl to /v1/batch waiting for its answer
		pendingLine, pendingEnd      int
		curls, answers, errorResults int
	)
	for _, b := range fencedBlocks(string(readme)) {
		where := fmt.Sprintf("README.md:%d", b.line)
		answerOf := pending
		if b.line-pendingEnd > answerGap {
			answerOf = nil
		}
		pending = nil
		switch b.lang {
		case "sh", "bash", "shell", "console":
			for _, args := range curlCommands(b.text) {
				req := curlRequest(t, args)
				if req == nil || req.URL.Path != "/v1/batch" {
					continue
				}
				in, err := s.checkRequest(t, req)
				assert.NoError(t, err, "%s: the curl example is not a valid /v1/batch request", where)
				pending, pendingLine, pendingEnd = in, b.line, b.end
				curls++
			}
			continue
		case "json":
		default:
			continue
		}

		text := strings.TrimSpace(b.text)
		if placeholder.MatchString(text) {
			t.Logf("%s: skipping placeholder %s until real output is pasted there", where, text)
			if answerOf != nil {
				answers++
			}
			continue
		}
		if !json.Valid([]byte(text)) {
			t.Errorf("%s: json block is not valid JSON:\n%s", where, text)
			continue
		}
		kind, status := classify([]byte(text))
		switch {
		case answerOf != nil:
			answers++
			if kind != exampleAnswer && kind != exampleBatchError {
				t.Errorf("%s: the block after the curl at line %d is not a batch answer", where, pendingLine)
				continue
			}
			if kind == exampleBatchError {
				errorResults++
			}
			assert.NoError(t, s.checkResponse(t.Context(), answerOf, status, exampleHeader(), []byte(text)),
				"%s: not a valid %d answer to the curl at line %d", where, status, pendingLine)
		case kind == exampleRequest:
			_, err := s.checkRequest(t, batchRequest(text))
			assert.NoError(t, err, "%s: not a valid /v1/batch request", where)
		case kind == exampleAnswer || kind == exampleBatchError:
			if kind == exampleBatchError {
				errorResults++
			}
			in, _ := s.checkRequest(t, batchRequest(`[{"path":"Demo/Echo"}]`))
			assert.NoError(t, s.checkResponse(t.Context(), in, status, exampleHeader(), []byte(text)),
				"%s: not a valid %d answer of /v1/batch", where, status)
		case kind == exampleErrorResult:
			errorResults++
			assert.NoError(t, s.checkSchema(t, "ErrorResult", []byte(text)), "%s: not an ErrorResult", where)
		default:
			t.Errorf("%s: json block of no known shape (batch request, batch answer, ErrorResult); teach classify "+
				"about it:\n%s", where, text)
		}
	}
	t.Logf("README.md: %d curl requests, %d answers to them, %d ErrorResults checked", curls, answers, errorResults)
	assert.Positive(t, curls, "README.md has no curl example of /v1/batch")
	assert.Positive(t, answers, "no curl example of /v1/batch is followed by its answer")
	assert.Positive(t, errorResults, "README.md has no ErrorResult example")
}

// placeholder is a json block that stands for output to be pasted later.
var placeholder = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

type block struct {
	lang, text string
	line, end  int // of the opening and closing fences, 1-based
}

// fencedBlocks returns markdown's ``` blocks in order.
func fencedBlocks(md string) []block {
	var (
		out  []block
		cur  *block
		body strings.Builder
	)
	for i, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), line: i + 1}
			body.Reset()
		case cur != nil && trimmed == "```":
			cur.text, cur.end = body.String(), i+1
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(line)
			body.WriteByte('\n')
		}
	}
	return out
}

// curlCommands splits a shell snippet into commands the way sh would for what READMEs use (single and double
// quotes, backslash escapes and line continuations, # comments, ; | & and newlines between commands) and returns
// those that run curl.
func curlCommands(script string) [][]string {
	var (
		cmds  [][]string
		words []string
		word  strings.Builder
		in    bool // inside a word
	)
	endWord := func() {
		if in {
			words = append(words, word.String())
			word.Reset()
			in = false
		}
	}
	endCmd := func() {
		endWord()
		if len(words) > 0 && words[0] == "curl" {
			cmds = append(cmds, words)
		}
		words = nil
	}
	r := []rune(script)
	for i := 0; i < len(r); i++ {
		switch c := r[i]; {
		case c == '\\' && i+1 < len(r):
			i++
			if r[i] != '\n' {
				word.WriteRune(r[i])
				in = true
			}
		case c == '\'':
			in = true
			for i++; i < len(r) && r[i] != '\''; i++ {
				word.WriteRune(r[i])
			}
		case c == '"':
			in = true
			for i++; i < len(r) && r[i] != '"'; i++ {
				if r[i] == '\\' && i+1 < len(r) && strings.ContainsRune(`"\$`+"`", r[i+1]) {
					i++
				}
				word.WriteRune(r[i])
			}
		case c == '#' && !in:
			for i < len(r) && r[i] != '\n' {
				i++
			}
			endCmd()
		case c == ' ' || c == '\t':
			endWord()
		case c == '\n' || c == ';' || c == '|' || c == '&':
			endCmd()
		default:
			word.WriteRune(c)
			in = true
		}
	}
	endCmd()
	return cmds
}

// curlRequest is the request that curl with args would send (for the options READMEs use); nil when it reads its
// body from a file.
func curlRequest(t *testing.T, args []string) *http.Request {
	t.Helper()
	valued := map[string]bool{"-H": true, "--header": true, "-d": true, "--data": true, "--data-raw": true,
		"--data-binary": true, "-X": true, "--request": true, "-o": true, "--output": true, "-w": true,
		"--write-out": true, "-u": true, "--user": true, "-A": true, "--user-agent": true, "--url": true}
	var (
		target, method string
		data           *string
		header         = http.Header{}
	)
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			target = a
			continue
		}
		if !valued[a] || i+1 >= len(args) {
			continue
		}
		i++
		switch v := args[i]; a {
		case "-H", "--header":
			name, value, _ := strings.Cut(v, ":")
			header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		case "-d", "--data", "--data-raw", "--data-binary":
			if strings.HasPrefix(v, "@") && a != "--data-raw" {
				t.Logf("curl reads its body from %s: not checked", v)
				return nil
			}
			if e := strings.TrimSpace(v); e == "…" || e == "..." {
				t.Logf("curl with an elided body (%s): not checked", e)
				return nil
			}
			data = &v
		case "-X", "--request":
			method = v
		case "--url":
			target = v
		}
	}
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	var body io.Reader = http.NoBody
	if data != nil {
		body = strings.NewReader(*data)
		if method == "" {
			method = http.MethodPost
		}
		if header.Get("Content-Type") == "" {
			header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
		}
	}
	if method == "" {
		method = http.MethodGet
	}
	req := httptest.NewRequest(method, target, body)
	req.Header = header
	return req
}

type exampleKind int

const (
	exampleUnknown     exampleKind = iota
	exampleRequest                 // a batch in any of its forms
	exampleAnswer                  // an accepted batch's answer
	exampleBatchError              // an ErrorResult with result.details: a refused batch
	exampleErrorResult             // an ErrorResult without details: a step's response, a route error
)

// classify tells what a README JSON example is by its shape, and the HTTP status it is an answer with.
func classify(doc []byte) (exampleKind, int) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(doc, &obj) == nil {
		switch {
		case obj["requests"] != nil || obj["batch"] != nil:
			return exampleRequest, 0
		case obj["responses"] != nil, obj["plan"] != nil:
			return exampleAnswer, http.StatusOK
		case string(obj["ok"]) == "false":
			var er struct {
				Result struct {
					Error   int
					Details json.RawMessage
				}
			}
			_ = json.Unmarshal(doc, &er)
			if er.Result.Details != nil {
				return exampleBatchError, er.Result.Error / 10
			}
			return exampleErrorResult, er.Result.Error / 10
		}
		return exampleUnknown, 0
	}
	var arr []map[string]json.RawMessage
	if json.Unmarshal(doc, &arr) == nil && len(arr) > 0 {
		switch {
		case arr[0]["status"] != nil && arr[0]["response"] != nil:
			return exampleAnswer, http.StatusOK
		case arr[0]["path"] != nil:
			return exampleRequest, 0
		}
	}
	return exampleUnknown, 0
}

func batchRequest(body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "http://localhost/v1/batch", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

// exampleHeader is the header of a README answer, which shows bodies only: the headers batchd always sends.
func exampleHeader() http.Header {
	return http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"4019fe76f2f42347"}}
}

// exchange is one request to a live batchd, checked against the spec both ways.
type exchange struct {
	name, method, path string
	header             http.Header
	body               string
	status             int  // 0: an opt-in extension still being built; any status the spec lists will do
	specAccepts        bool // whether the spec itself accepts the request (batchd refuses what it refuses)
	check              func(t *testing.T, h http.Header, body []byte)
}

// run sends x to base, then validates the request and the real answer against the spec.
func (s *spec) run(t *testing.T, client *http.Client, base string, x exchange) {
	t.Helper()
	send := func() *http.Request {
		req, err := http.NewRequestWithContext(t.Context(), x.method, base+x.path, strings.NewReader(x.body))
		require.NoError(t, err)
		for k, v := range x.header {
			req.Header[k] = v
		}
		if x.body != "" && req.Header.Get("Content-Type") == "" {
			req.Header.Set("Content-Type", "application/json")
		}
		return req
	}
	resp, err := client.Do(send())
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)

	in, reqErr := s.checkRequest(t, send())
	if x.specAccepts {
		assert.NoError(t, reqErr, "the spec refuses a request that batchd answered %d:\n%s", resp.StatusCode, body)
	} else {
		assert.Error(t, reqErr, "the spec accepts a request that batchd refuses")
	}
	if x.status != 0 {
		require.Equal(t, x.status, resp.StatusCode, "%s", body)
	} else {
		t.Logf("extension probe answered %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/x-ndjson") {
		// A stream: the spec's media type is a string; every line is checked against the line schemas instead.
		opts := *s.opts
		opts.ExcludeResponseBody = true
		in.Options = &opts
		declared := in.Route.Operation.Responses.Status(resp.StatusCode)
		require.NotNil(t, declared, "the spec does not list status %d", resp.StatusCode)
		require.NotNil(t, declared.Value.Content.Get(ct), "the spec does not list %s", ct)
		lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
		for i, line := range lines {
			schema := "StreamLine"
			if i == len(lines)-1 {
				schema = "StreamSummary"
			}
			assert.NoError(t, s.checkSchema(t, schema, []byte(line)), "line %d is not a %s: %s", i+1, schema, line)
		}
	}
	assert.NoError(t, s.checkResponse(t.Context(), in, resp.StatusCode, resp.Header, body),
		"batchd's answer (%d) is not what the spec says:\n%s", resp.StatusCode, body)
	if x.check != nil {
		x.check(t, resp.Header, body)
	}
}

const seed = `{
  "stop_on_error": false,
  "requests": [
    {"key": "ProducerAdd", "path": "Producer/Add", "payload": {"name": "Coca-Cola"}},
    {"key": "ProducerGet", "path": "Producer/Get", "payload": {"ids": ["${ProducerAdd.result.new_id}"]}}
  ]
}`

// TestLiveBinary builds cmd/batchd, runs it on loopback and checks real exchanges against the spec: the spec
// describes what batchd really answers, and batchd serves exactly the embedded document.
func TestLiveBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the batchd binary")
	}
	s := loadSpec(t)
	base := startBinary(t, "-max-body", "8KiB", "-step-timeout", "250ms")
	client := &http.Client{Timeout: 30 * time.Second}

	t.Run("GET /openapi.yaml is the embedded document", func(t *testing.T) {
		resp, err := client.Get(base + "/openapi.yaml")
		require.NoError(t, err)
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "application/yaml", resp.Header.Get("Content-Type"))
		assert.True(t, bytes.Equal(transport.OpenAPI(), got), "served %d bytes, embedded %d", len(got), len(transport.OpenAPI()))
	})

	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	hasRequestID := func(t *testing.T, h http.Header, _ []byte) { assert.NotEmpty(t, h.Get("X-Request-Id")) }
	big := `[{"path":"Demo/Echo","body":"` + strings.Repeat("x", 9<<10) + `"}]`
	for _, x := range []exchange{
		{name: "seed", method: "POST", path: "/v1/batch", body: seed, status: 200, specAccepts: true, check: hasRequestID},
		{name: "seed with X-Request-Id", method: "POST", path: "/v1/batch", body: seed, status: 200, specAccepts: true,
			header: hdr("X-Request-Id", "conformance-1"),
			check: func(t *testing.T, h http.Header, _ []byte) {
				assert.Equal(t, "conformance-1", h.Get("X-Request-Id"))
			}},
		{name: "bare array", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body:  `[{"path":"/Demo/Echo","body":{"a":1}},{"method":"POST","path":"Demo/Echo","body":{"b":"${0.result.a}"}}]`,
			check: func(t *testing.T, _ http.Header, b []byte) { assert.True(t, bytes.HasPrefix(b, []byte("["))) }},
		{name: "batch form, failures decided by batchd", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body: `{"stop_on_error": false, "batch": [
				{"key": "fail", "path": "Demo/Fail", "payload": {"status": 500}},
				{"key": "dependent", "path": "Demo/Echo", "depends_on": ["fail"]},
				{"key": "unknown", "path": "Nope/Nope", "headers": {"X-Tenant": "t1"}},
				{"key": "slow", "path": "Demo/Sleep", "body": {"ms": 5000}},
				{"key": "missing", "path": "Demo/Echo", "payload": {"x": "${unknown.result.0}"}},
				{"path": "Demo/Echo", "payload": null}]}`},
		{name: "stop_on_error", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body: `{"stop_on_error": true, "requests": [
				{"key": "a", "path": "Demo/Fail"}, {"key": "b", "path": "Demo/Echo", "depends_on": ["a"]},
				{"key": "c", "path": "Demo/Sleep", "payload": {"ms": 20}}, {"key": "d", "path": "Demo/Echo", "depends_on": ["c"]}]}`},
		{name: "refused: what a schema cannot see", method: "POST", path: "/v1/batch", status: 400, specAccepts: true,
			body: `{"requests": [{"key": "A", "path": "https://x/y"}, {"key": "A", "path": "Producer/Add", "payload": "${Nope.x}"},
				{"key": "B", "path": "Item/Import", "depends_on": ["B"]}, {"key": "C", "path": "Demo/Echo", "headers": {"Host": "x"}}]}`},
		{name: "REST helpers on the demo API's REST methods", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body: `{"requests": [
				{"key": "create", "path": "Demo/Create", "payload": {"name": "Acme"}},
				{"key": "read", "method": "GET", "path": "${create:headers.Location}", "capture_headers": ["ETag"]},
				{"key": "page", "method": "GET", "path": "Demo/Page?size=2", "depends_on": ["read"]},
				{"key": "each", "path": "Demo/Echo", "for_each": "${page.result}", "payload": {"i": "${index}", "name": "${item.name}"}},
				{"key": "gone", "method": "DELETE", "path": "Demo/Producer?id=999", "ok_status": [404]},
				{"key": "upsert", "path": "Demo/Create", "when": "${gone:status} == 200", "payload": {"name": "Acme 2"}},
				{"key": "form", "path": "Demo/Form", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "payload": "name=${read.result.name}"}]}`,
			check: func(t *testing.T, _ http.Header, b []byte) {
				var a struct {
					Responses []struct {
						Key     string
						Status  int
						Headers map[string]string
						Items   []json.RawMessage
					}
				}
				require.NoError(t, json.Unmarshal(b, &a))
				require.Len(t, a.Responses, 7)
				assert.Equal(t, []int{201, 200, 200, 200, 404, 204, 200}, []int{a.Responses[0].Status, a.Responses[1].Status,
					a.Responses[2].Status, a.Responses[3].Status, a.Responses[4].Status, a.Responses[5].Status, a.Responses[6].Status})
				assert.Contains(t, a.Responses[1].Headers, "ETag")
				assert.NotEmpty(t, a.Responses[3].Items)
			}},
		{name: "dry run", method: "POST", path: "/v1/batch?dry_run=true", body: seed, status: 200, specAccepts: true,
			check: func(t *testing.T, _ http.Header, b []byte) {
				assert.Contains(t, string(b), `"critical_path":["ProducerAdd","ProducerGet"]`)
			}},
		{name: "refused: an unknown query parameter", method: "POST", path: "/v1/batch?debug=1", body: seed, status: 400, specAccepts: true},
		{name: "refused: duplicate members", method: "POST", path: "/v1/batch", status: 400, specAccepts: true,
			body: `{"requests": [{"key": "A", "path": "Demo/Echo"}], "requests": [{"key": "B", "path": "Demo/Echo"}]}`},
		{name: "refused: missing path, bad key, reserved key", method: "POST", path: "/v1/batch", status: 400,
			body: `{"requests": [{"key": "a b"}, {"key": "self", "path": "Demo/Echo"}]}`},
		{name: "refused: payload and body", method: "POST", path: "/v1/batch", status: 400,
			body: `[{"path": "Demo/Echo", "payload": 1, "body": 2}]`},
		{name: "refused: unknown field", method: "POST", path: "/v1/batch", status: 400,
			body: `{"requests": [{"key": "a", "path": "Demo/Echo", "pathh": "x"}]}`},
		{name: "refused: no steps", method: "POST", path: "/v1/batch", status: 400, body: `{"requests": []}`},
		{name: "refused: malformed JSON", method: "POST", path: "/v1/batch", status: 400, body: `{"requests": [`},
		{name: "413", method: "POST", path: "/v1/batch", status: 413, specAccepts: true, body: big, check: hasRequestID},
		{name: "415", method: "POST", path: "/v1/batch", status: 415, body: `[{"path":"Demo/Echo"}]`,
			header: hdr("Content-Type", "text/plain")},
		{name: "healthz", method: "GET", path: "/healthz", status: 200, specAccepts: true},
		{name: "readyz", method: "GET", path: "/readyz", status: 200, specAccepts: true},
		{name: "metrics", method: "GET", path: "/metrics", status: 200, specAccepts: true},
		{name: "openapi.yaml", method: "GET", path: "/openapi.yaml", status: 200, specAccepts: true},
		{name: "Producer/Add", method: "POST", path: "/v1/Producer/Add", body: `{"name":"Fanta"}`, status: 200, specAccepts: true},
		{name: "Producer/Add invalid (1008)", method: "POST", path: "/v1/Producer/Add", body: `{}`, status: 200,
			check: func(t *testing.T, _ http.Header, b []byte) { assert.Contains(t, string(b), `"error":1008`) }},
		{name: "Producer/Get", method: "POST", path: "/v1/Producer/Get", body: `{"limit":1}`, status: 200, specAccepts: true},
		{name: "Producer/Get no body", method: "POST", path: "/v1/Producer/Get", status: 200, specAccepts: true},
		{name: "Producer/Get invalid (1008)", method: "POST", path: "/v1/Producer/Get", body: `{"limit":-1}`, status: 200},
		{name: "Producer/Edit", method: "POST", path: "/v1/Producer/Edit", body: `{"id":1,"name":"Fanta Zero"}`, status: 200, specAccepts: true},
		{name: "Producer/Delete", method: "POST", path: "/v1/Producer/Delete", body: `{"ids":[999]}`, status: 200, specAccepts: true},
		{name: "Demo/Echo", method: "POST", path: "/v1/Demo/Echo", body: `[1,"two",null]`, status: 200, specAccepts: true},
		{name: "Demo/Sleep", method: "POST", path: "/v1/Demo/Sleep", body: `{"ms":1}`, status: 200, specAccepts: true},
		{name: "Demo/Fail", method: "POST", path: "/v1/Demo/Fail", body: `{"status":503,"error":7,"description":"boom"}`,
			status: 503, specAccepts: true},
		{name: "unknown demo method", method: "POST", path: "/v1/Nope/Nope", body: `{}`, status: 404, specAccepts: true},

		// Opt-in extensions of README "Idempotent retries" to "Step timings".
		{name: "atomic with rollback and timings", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body: `{"atomic": true, "timings": true, "requests": [
				{"key": "add", "path": "Producer/Add", "payload": {"name": "Sprite"},
				 "rollback": {"path": "Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
				{"key": "rename", "path": "Producer/Edit", "payload": {"id": "${add.result.new_id}", "name": ""}}]}`,
			check: func(t *testing.T, _ http.Header, b []byte) {
				for _, want := range []string{`"rolled_back":true`, `"rollback_status":200`, `"committed":false`,
					`"critical_path_ms":`, `"timing":{"queued_ms":`} {
					assert.Contains(t, string(b), want)
				}
			}},
		{name: "atomic with a failed rollback", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body: `{"atomic": true, "requests": [
				{"key": "add", "path": "Producer/Add", "payload": {"name": "Sprite"},
				 "rollback": {"method": "post", "path": "Demo/Fail", "body": {"status": 409}, "headers": {"X-Undo": "${self.result.new_id}"}}},
				{"key": "fail", "path": "Demo/Fail", "depends_on": ["add"]}]}`,
			check: func(t *testing.T, _ http.Header, b []byte) {
				assert.Contains(t, string(b), `"rollback_failures":[{"key":"add","status":409,"response":{"ok":false`)
			}},
		{name: "atomic committed", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body: `{"atomic": true, "batch": [{"path": "Demo/Echo", "rollback": {"path": "Demo/Echo"}}]}`,
			check: func(t *testing.T, _ http.Header, b []byte) {
				assert.Contains(t, string(b), `"atomic":{"committed":true,"rollback_failures":[]}`)
			}},
		{name: "timings", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			body: `{"timings": true, "requests": [{"key": "a", "path": "Demo/Sleep", "payload": {"ms": 5}},
				{"key": "b", "path": "Demo/Echo", "depends_on": ["a"]}, {"key": "c", "path": "Demo/Echo", "depends_on": ["d"]},
				{"key": "d", "path": "Demo/Fail"}]}`},
		{name: "Idempotency-Key first", method: "POST", path: "/v1/batch", specAccepts: true, body: seed,
			header: hdr("Idempotency-Key", "conformance-key")},
		{name: "Idempotency-Key replay", method: "POST", path: "/v1/batch", specAccepts: true, body: seed,
			header: hdr("Idempotency-Key", "conformance-key")},
		{name: "Idempotency-Key reused with another body", method: "POST", path: "/v1/batch", specAccepts: true,
			body: `[{"path":"Demo/Echo"}]`, header: hdr("Idempotency-Key", "conformance-key")},
		{name: "Idempotency-Key too long", method: "POST", path: "/v1/batch", body: seed,
			header: hdr("Idempotency-Key", strings.Repeat("k", 256))},
		{name: "Accept ndjson", method: "POST", path: "/v1/batch", status: 200, specAccepts: true, body: seed,
			header: hdr("Accept", "application/x-ndjson"),
			check: func(t *testing.T, h http.Header, b []byte) {
				assert.Equal(t, "application/x-ndjson", h.Get("Content-Type"))
				assert.Equal(t, 3, strings.Count(string(b), "\n"), "%s", b)
			}},
		{name: "Accept ndjson, atomic with timings", method: "POST", path: "/v1/batch", status: 200, specAccepts: true,
			header: hdr("Accept", "application/json;q=0.5, application/x-ndjson"),
			body: `{"atomic": true, "timings": true, "requests": [
				{"key": "add", "path": "Producer/Add", "payload": {"name": "Sprite"},
				 "rollback": {"path": "Producer/Delete", "payload": {"ids": ["${self.result.new_id}"]}}},
				{"key": "fail", "path": "Demo/Fail", "depends_on": ["add"]}]}`,
			check: func(t *testing.T, _ http.Header, b []byte) {
				assert.Contains(t, string(b), `{"index":0,"key":"add","rolled_back":true,"rollback_status":200}`)
			}},
		{name: "Accept ndjson, refused", method: "POST", path: "/v1/batch", status: 400, specAccepts: true,
			header: hdr("Accept", "application/x-ndjson"), body: `{"requests": [{"key": "a", "path": "Demo/Echo", "payload": "${self.x}"}]}`},
	} {
		t.Run(x.name, func(t *testing.T) { s.run(t, client, base, x) })
	}

	t.Run("route errors are ErrorResults", func(t *testing.T) {
		for path, want := range map[string]string{"/nothing": `"error":4040`, "/v1/batch": `"error":4050`} {
			resp, err := client.Get(base + path)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Contains(t, string(b), want)
			assert.NoError(t, s.checkSchema(t, "ErrorResult", b), "%s", b)
		}
	})
}

// TestDrainingAnswersMatchSpec checks the 503 answers of a draining server, built in-process as cmd/batchd wires it
// (a draining binary closes its listener, so its 503s are seen only on connections already open).
func TestDrainingAnswersMatchSpec(t *testing.T) {
	s := loadSpec(t)
	api := demoapi.New(demoapi.Config{})
	rn := runner.New(transport.NewInProcessInvoker(api, 8<<20), runner.Config{})
	srv := transport.New(transport.Config{Runner: rn, Demo: api})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	srv.Drain()
	for _, x := range []exchange{
		{name: "readyz", method: "GET", path: "/readyz", status: 503, specAccepts: true},
		{name: "batch", method: "POST", path: "/v1/batch", body: seed, status: 503, specAccepts: true},
		{name: "healthz", method: "GET", path: "/healthz", status: 200, specAccepts: true},
	} {
		t.Run(x.name, func(t *testing.T) { s.run(t, ts.Client(), ts.URL, x) })
	}
}

// TestRateLimitedAnswersMatchSpec checks both 429 answers (with and without Retry-After) of a server wired with a
// rate limiter as cmd/batchd wires it for -rate-limit.
func TestRateLimitedAnswersMatchSpec(t *testing.T) {
	s := loadSpec(t)
	api := demoapi.New(demoapi.Config{})
	rn := runner.New(transport.NewInProcessInvoker(api, 8<<20), runner.Config{})
	rl, err := ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: 2}) // two steps, then (almost) never again
	require.NoError(t, err)
	srv := transport.New(transport.Config{Runner: rn, Demo: api, RateLimiter: rl})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	two := `[{"path":"Demo/Echo"},{"path":"Demo/Echo"}]`
	for _, x := range []exchange{
		{name: "over the burst", method: "POST", path: "/v1/batch", body: `[{"path":"Demo/Echo"},{"path":"Demo/Echo"},{"path":"Demo/Echo"}]`, status: 429, specAccepts: true,
			check: func(t *testing.T, h http.Header, _ []byte) { assert.Empty(t, h.Get("Retry-After")) }},
		{name: "within", method: "POST", path: "/v1/batch", body: two, status: 200, specAccepts: true},
		{name: "over the rate", method: "POST", path: "/v1/batch", body: two, status: 429, specAccepts: true,
			check: func(t *testing.T, h http.Header, _ []byte) { assert.NotEmpty(t, h.Get("Retry-After")) }},
	} {
		t.Run(x.name, func(t *testing.T) { s.run(t, ts.Client(), ts.URL, x) })
	}
}

// startBinary builds cmd/batchd from this module and runs it on a free loopback port with args; it is stopped with
// SIGTERM when the test ends and must then exit 0 (README "Configuration").
func startBinary(t *testing.T, args ...string) string {
	t.Helper()
	gomod, err := exec.CommandContext(t.Context(), "go", "env", "GOMOD").Output()
	require.NoError(t, err)
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(t.TempDir(), "batchd")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/batchd")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/batchd:\n%s", out)

	server, _ := batchtest.StartBinary(t, bin, args...)
	return server
}

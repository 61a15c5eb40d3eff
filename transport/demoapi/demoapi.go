// Package demoapi is batchd's embedded demo API: a small REGOS-style business API kept in memory, so that batches
// can run on a fresh machine with nothing else listening (README "The embedded demo API").
//
// Contract:
//   - Every method is POST /<Method> (e.g. POST /Producer/Add) with a JSON object payload; an empty body or null
//     counts as {}. Unknown payload fields are ignored, as REGOS does; a field of the wrong type is not.
//   - Success is HTTP 200 {"ok": true, "result": …}. A validation error (missing or empty name, wrong type,
//     malformed JSON, a payload that is not an object) is HTTP 200 {"ok": false, "result": {"error": 1008,
//     "description": "…"}}, as REGOS answers business errors.
//   - An unknown method is HTTP 404 and any other HTTP method than POST is 405, both as ErrorResult.
//   - Every answer with a body has Content-Type application/json.
//   - The REST methods (Demo/Create, Demo/Producer, Demo/Page, Demo/Form) show what the REST helpers of a batch are
//     for: they answer the way REST APIs do (201 with a Location and no body, 404, 204, links.next, a form body),
//     on the same producers (rest.go).
//   - The handler is safe for concurrent use: producer ids are unique and increase from 1, and each method sees a
//     consistent view of the store.
//   - Demo/Sleep honours the request's context: when it is cancelled the handler returns at once.
//
// The handler strips one leading "/" and nothing else, so it works mounted at "/" or behind
// http.StripPrefix("/v1", …).
package demoapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batchd/batchd/internal/errcode"
)

// Limits of the demo methods.
const (
	MaxPayloadBytes = 1 << 20 // a larger payload is a validation error
	DefaultLimit    = 100     // Producer/Get page size when limit is absent or 0
	MaxLimit        = 1000    // larger limits are clamped
	MaxSleep        = 60_000  // Demo/Sleep's ms is clamped to this
	DefaultFailCode = 1000    // Demo/Fail's error code when none is given
)

// Config configures the demo API. The zero value is ready to use.
type Config struct {
	// Now is the clock for last_update; default time.Now.
	Now func() time.Time
}

// API is the demo API's http.Handler.
type API struct {
	now func() time.Time

	mu        sync.RWMutex
	lastID    int64
	producers map[int64]producer
}

type producer struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	LastUpdate int64  `json:"last_update"`
}

// method is one demo method: the request's context and its payload in, an answer out.
type method func(a *API, ctx context.Context, payload []byte) answer

// methods is the route table, read-only; Methods lists its keys.
var methods = map[string]method{
	"Producer/Add":    (*API).producerAdd,
	"Producer/Get":    (*API).producerGet,
	"Producer/Edit":   (*API).producerEdit,
	"Producer/Delete": (*API).producerDelete,
	"Demo/Echo":       (*API).demoEcho,
	"Demo/Sleep":      (*API).demoSleep,
	"Demo/Fail":       (*API).demoFail,
}

// Methods returns the demo method paths, sorted: a bounded label set for metrics.
func Methods() []string {
	names := make([]string, 0, len(methods)+len(restMethods))
	for name := range methods {
		names = append(names, name)
	}
	for name := range restMethods {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// New returns an empty demo API.
func New(cfg Config) *API {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &API{now: now, producers: make(map[int64]producer)}
}

// answer is a method's HTTP status and JSON body, and the headers it sets besides Content-Type.
type answer struct {
	status int
	body   []byte
	header http.Header
}

func ok(result any) answer {
	return okWith(result, "")
}

// okWith marshals {"ok":true,"result":result} followed by extra, a JSON fragment of further top-level members
// (`,"total":3`).
func okWith(result any, extra string) answer {
	r, err := json.Marshal(result)
	if err != nil {
		// Only our own types are marshalled here; failing is a bug.
		panic(fmt.Sprintf("demoapi: marshal result: %v", err))
	}
	return okRaw(r, extra)
}

func okRaw(result []byte, extra string) answer {
	b := make([]byte, 0, len(`{"ok":true,"result":}`)+len(result)+len(extra))
	b = append(b, `{"ok":true,"result":`...)
	b = append(b, result...)
	b = append(b, extra...)
	b = append(b, '}')
	return answer{status: http.StatusOK, body: b}
}

func fail(c errcode.Code, description string) answer {
	return answer{status: c.Status(), body: errcode.Body(c, description)}
}

func invalid(format string, args ...any) answer {
	return fail(errcode.DemoValidation, fmt.Sprintf(format, args...))
}

// ServeHTTP dispatches POST /<Method>.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if rm, ok := restMethods[name]; ok {
		a.serveREST(w, r, name, rm)
		return
	}
	handle, ans, found := route(name, r.Method)
	if found {
		body, err := readPayload(r)
		switch {
		case errors.Is(err, errTooLarge):
			ans = tooLarge()
		case err != nil:
			ans = invalid("reading payload: %v", err)
		default:
			ans = handle(a, r.Context(), body)
		}
	}
	if ans.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	write(w, ans)
}

// write sends ans: its headers, Content-Type application/json when it has a body, its status and body.
func write(w http.ResponseWriter, ans answer) {
	for k, v := range ans.header {
		w.Header()[k] = v
	}
	if len(ans.body) > 0 {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(ans.status)
	_, _ = w.Write(ans.body)
}

// route finds the method name on HTTP method verb. found is false when the call is answered already: ans is then
// the 404 or 405 answer.
func route(name, verb string) (handle method, ans answer, found bool) {
	handle, known := methods[name]
	switch {
	case !known:
		return nil, fail(errcode.NotFound, "unknown method "+strconv.Quote(truncate(name, 100))), false
	case verb != http.MethodPost:
		return nil, fail(errcode.MethodNotAllowed, name+" accepts POST only"), false
	}
	return handle, answer{}, true
}

func tooLarge() answer { return invalid("payload larger than %d bytes", MaxPayloadBytes) }

var errTooLarge = errors.New("payload too large")

// readPayload reads at most MaxPayloadBytes of the body, in one allocation when the length is known.
func readPayload(r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxPayloadBytes {
		return nil, errTooLarge
	}
	size := int64(512)
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1 // +1: room to see EOF without growing
	}
	b := make([]byte, 0, size)
	for {
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > MaxPayloadBytes {
			return nil, errTooLarge
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// decode unmarshals a JSON object payload into v. Empty or null means {}. Unknown fields are ignored; a wrong type
// is an error naming the field.
func decode(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil
	}
	if trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return errors.New("malformed JSON payload")
		}
		return errors.New("payload must be a JSON object")
	}
	err := json.Unmarshal(trimmed, v)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "payload"
		}
		return fmt.Errorf("%s: expected %s, got %s", field, jsonTypeName(typeErr.Type), typeErr.Value)
	default:
		var syntaxErr *json.SyntaxError
		if errors.As(err, &syntaxErr) {
			return fmt.Errorf("malformed JSON payload at offset %d", syntaxErr.Offset)
		}
		return errors.New("malformed JSON payload")
	}
}

// jsonTypeName names a Go type the way a client of a JSON API thinks of it.
func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	default:
		return "object"
	}
}

// affected is the result of Producer/Edit and Producer/Delete.
type affected struct {
	RowAffected int     `json:"row_affected"`
	IDs         []int64 `json:"ids"`
}

func (a *API) producerAdd(_ context.Context, body []byte) answer {
	var in struct {
		Name *string `json:"name"`
	}
	if err := decode(body, &in); err != nil {
		return invalid("%v", err)
	}
	if in.Name == nil || *in.Name == "" {
		return invalid("name: required, a non-empty string")
	}
	a.mu.Lock()
	a.lastID++
	id := a.lastID
	a.producers[id] = producer{ID: id, Name: *in.Name, LastUpdate: a.now().Unix()}
	a.mu.Unlock()
	return ok(struct {
		NewID int64 `json:"new_id"`
	}{id})
}

func (a *API) producerGet(_ context.Context, body []byte) answer {
	var in struct {
		IDs    []int64 `json:"ids"`
		Limit  *int    `json:"limit"`
		Offset *int    `json:"offset"`
	}
	if err := decode(body, &in); err != nil {
		return invalid("%v", err)
	}
	limit, offset := DefaultLimit, 0
	if in.Limit != nil {
		switch {
		case *in.Limit < 0:
			return invalid("limit: must not be negative")
		case *in.Limit > MaxLimit:
			limit = MaxLimit
		case *in.Limit > 0:
			limit = *in.Limit
		}
	}
	if in.Offset != nil {
		if *in.Offset < 0 {
			return invalid("offset: must not be negative")
		}
		offset = *in.Offset
	}

	a.mu.RLock()
	var match []producer
	if in.IDs != nil {
		match = make([]producer, 0, len(in.IDs))
		for _, id := range in.IDs {
			if p, found := a.producers[id]; found {
				match = append(match, p)
			}
		}
	} else {
		match = make([]producer, 0, len(a.producers))
		for _, p := range a.producers {
			match = append(match, p)
		}
	}
	a.mu.RUnlock()

	slices.SortFunc(match, func(x, y producer) int { return cmp.Compare(x.ID, y.ID) })
	match = slices.CompactFunc(match, func(x, y producer) bool { return x.ID == y.ID }) // ids may repeat
	total := len(match)
	start := min(offset, total)
	end := start + min(limit, total-start) // not offset+limit: a client's huge offset must not overflow
	next := 0
	if end < total {
		next = end
	}
	page := match[start:end]
	return okWith(page, `,"next_offset":`+strconv.Itoa(next)+`,"total":`+strconv.Itoa(total))
}

func (a *API) producerEdit(_ context.Context, body []byte) answer {
	var in struct {
		ID   *int64  `json:"id"`
		Name *string `json:"name"`
	}
	if err := decode(body, &in); err != nil {
		return invalid("%v", err)
	}
	if in.ID == nil {
		return invalid("id: required, an integer")
	}
	if in.Name == nil || *in.Name == "" {
		return invalid("name: required, a non-empty string")
	}
	out := affected{IDs: []int64{}}
	a.mu.Lock()
	if p, found := a.producers[*in.ID]; found {
		p.Name, p.LastUpdate = *in.Name, a.now().Unix()
		a.producers[p.ID] = p
		out = affected{1, []int64{p.ID}}
	}
	a.mu.Unlock()
	return ok(out)
}

func (a *API) producerDelete(_ context.Context, body []byte) answer {
	var in struct {
		IDs []int64 `json:"ids"`
	}
	if err := decode(body, &in); err != nil {
		return invalid("%v", err)
	}
	if in.IDs == nil {
		return invalid("ids: required, an array of integers")
	}
	out := affected{IDs: []int64{}}
	a.mu.Lock()
	for _, id := range in.IDs {
		if _, found := a.producers[id]; found {
			delete(a.producers, id)
			out.IDs = append(out.IDs, id)
		}
	}
	a.mu.Unlock()
	out.RowAffected = len(out.IDs)
	return ok(out)
}

func (a *API) demoEcho(_ context.Context, body []byte) answer {
	if isBlank(body) {
		return okRaw([]byte("null"), "")
	}
	if !json.Valid(body) {
		return invalid("malformed JSON payload")
	}
	return okRaw(body, "")
}

func isBlank(b []byte) bool {
	return len(bytes.TrimSpace(b)) == 0
}

func (a *API) demoSleep(ctx context.Context, body []byte) answer {
	var in struct {
		MS *int `json:"ms"`
	}
	if err := decode(body, &in); err != nil {
		return invalid("%v", err)
	}
	ms := 0
	if in.MS != nil {
		if *in.MS < 0 {
			return invalid("ms: must not be negative")
		}
		ms = min(*in.MS, MaxSleep)
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return ok(struct {
			SleptMS int `json:"slept_ms"`
		}{ms})
	case <-ctx.Done():
		// The caller is gone; the answer is for the logs of whoever still reads it.
		return fail(errcode.Cancelled, "sleep cancelled")
	}
}

func (a *API) demoFail(_ context.Context, body []byte) answer {
	var in struct {
		Status      *int    `json:"status"`
		Error       *int    `json:"error"`
		Description *string `json:"description"`
	}
	if err := decode(body, &in); err != nil {
		return invalid("%v", err)
	}
	status, code, desc := http.StatusOK, DefaultFailCode, "Demo/Fail: failure on request"
	if in.Status != nil {
		status = min(max(*in.Status, 200), 599)
	}
	if in.Error != nil {
		code = *in.Error
	}
	if in.Description != nil {
		desc = *in.Description
	}
	return answer{status: status, body: errcode.Body(errcode.Code(code), desc)}
}

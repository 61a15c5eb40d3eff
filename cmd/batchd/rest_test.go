package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// restCall is one request the REST upstream received.
type restCall struct {
	Method, Path, Query, ContentType, IdempotencyKey, Body string
}

func (c restCall) String() string {
	s := c.Method + " " + c.Path
	if c.Query != "" {
		s += "?" + c.Query
	}
	return s
}

// restAPI is a REST-style upstream written the way json-server and most business APIs answer: POST /api/users is
// 201 Created with a Location and no body; GET, PATCH and DELETE /api/users/{id} (404 for an unknown id, 204 for a
// delete); GET /api/users?page=N, two users a page with links.next; GET /api/users/by-email?email=… an array of
// zero or one user; POST /api/forms a form body echoed as JSON. Every request is recorded.
type restAPI struct {
	srv *httptest.Server

	mu     sync.Mutex
	calls  []restCall
	users  map[int]map[string]any
	lastID int
}

func newRESTAPI(t *testing.T) *restAPI {
	a := &restAPI{users: map[int]map[string]any{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *restAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, restCall{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		ContentType: r.Header.Get("Content-Type"), IdempotencyKey: r.Header.Get("Idempotency-Key"), Body: string(body)})
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	rest, _ := strings.CutPrefix(r.URL.Path, "/api/")
	switch {
	case rest == "forms" && r.Method == http.MethodPost:
		q, err := url.ParseQuery(string(body))
		if err != nil || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			reply(415, map[string]string{"error": "send a form"})
			return
		}
		reply(200, map[string]any{"fields": q})
	case rest == "users" && r.Method == http.MethodPost:
		var u map[string]any
		if json.Unmarshal(body, &u) != nil {
			reply(422, map[string]string{"error": "bad json"})
			return
		}
		a.lastID++
		u["id"] = a.lastID
		a.users[a.lastID] = u
		w.Header().Set("Location", a.srv.URL+"/api/users/"+strconv.Itoa(a.lastID)) // absolute, as many frameworks write it
		w.WriteHeader(http.StatusCreated)
	case rest == "users" && r.Method == http.MethodGet:
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		page = max(page, 1)
		var list []map[string]any
		for id := 1; id <= a.lastID; id++ {
			if u, ok := a.users[id]; ok {
				list = append(list, u)
			}
		}
		from, to := min((page-1)*2, len(list)), min(page*2, len(list))
		links := map[string]any{"next": nil}
		if to < len(list) {
			links["next"] = "/api/users?page=" + strconv.Itoa(page+1)
		}
		reply(200, map[string]any{"data": list[from:to], "links": links})
	case rest == "users/by-email" && r.Method == http.MethodGet:
		found := []map[string]any{}
		for id := 1; id <= a.lastID; id++ {
			if u, ok := a.users[id]; ok && u["email"] == r.URL.Query().Get("email") {
				found = append(found, u)
			}
		}
		reply(200, found)
	case strings.HasPrefix(rest, "users/"):
		id, _ := strconv.Atoi(strings.TrimPrefix(rest, "users/"))
		u, ok := a.users[id]
		switch {
		case !ok:
			reply(404, map[string]string{"error": "no user " + strconv.Itoa(id)})
		case r.Method == http.MethodGet:
			reply(200, u)
		case r.Method == http.MethodPatch:
			var patch map[string]any
			_ = json.Unmarshal(body, &patch)
			for k, v := range patch {
				u[k] = v
			}
			reply(200, u)
		case r.Method == http.MethodDelete:
			delete(a.users, id)
			w.WriteHeader(http.StatusNoContent)
		}
	default:
		reply(404, map[string]string{"error": "no route"})
	}
}

// take returns the requests received since the last take.
func (a *restAPI) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, c := range a.calls {
		out = append(out, c.String())
	}
	a.calls = nil
	return out
}

func (a *restAPI) last() []restCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]restCall(nil), a.calls...)
}

// restAnswer is an answer with the REST helpers' members.
type restAnswer struct {
	Responses []struct {
		Key      string            `json:"key"`
		Status   int               `json:"status"`
		Response json.RawMessage   `json:"response"`
		Headers  map[string]string `json:"headers"`
		Items    []struct {
			Status   int             `json:"status"`
			Response json.RawMessage `json:"response"`
		} `json:"items"`
		RolledBack *bool `json:"rolled_back"`
	} `json:"responses"`
}

func (c *child) rest(t *testing.T, body string) restAnswer {
	t.Helper()
	status, _, b := c.post(t, "/v1/batch", body)
	require.Equal(t, http.StatusOK, status, "%s", b)
	var a restAnswer
	require.NoError(t, json.Unmarshal(b, &a), "%s", b)
	return a
}

func (c *child) post(t *testing.T, path, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(c.base+path, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

// TestRESTWorkflows runs each workflow of the REST helpers through the real binary in proxy mode against a
// REST-style upstream, and checks what the upstream received from its own records.
func TestRESTWorkflows(t *testing.T) {
	api := newRESTAPI(t)
	bin := buildBatchd(t)
	b := startChild(t, nil, bin, "-addr", "127.0.0.1:0", "-log-format", "json", "-upstream", api.srv.URL+"/api/")

	t.Run("create, then use what the Location names", func(t *testing.T) {
		a := b.rest(t, `{"requests": [
			{"key": "c", "path": "users", "payload": {"name": "Ada", "email": "ada@x"}},
			{"key": "g", "method": "GET", "path": "${c:headers.Location}", "capture_headers": ["Content-Type"]},
			{"key": "p", "method": "PATCH", "path": "${c:headers.Location}", "payload": {"created": "${c:status}", "name": "${g.name} L."}}
		]}`)
		assert.Equal(t, []string{"POST /api/users", "GET /api/users/1", "PATCH /api/users/1"}, api.take())
		assert.Equal(t, 201, a.Responses[0].Status)
		assert.Equal(t, "null", string(a.Responses[0].Response), "an empty body is null")
		assert.Equal(t, map[string]string{"Content-Type": "application/json"}, a.Responses[1].Headers)
		assert.JSONEq(t, `{"id": 1, "name": "Ada L.", "email": "ada@x", "created": 201}`, string(a.Responses[2].Response))
	})

	t.Run("atomic: a created resource is deleted through its Location", func(t *testing.T) {
		a := b.rest(t, `{"atomic": true, "requests": [
			{"key": "c", "path": "users", "payload": {"name": "Bob"}, "rollback": {"method": "DELETE", "path": "${self:headers.Location}"}},
			{"key": "bad", "method": "PATCH", "path": "users/999", "payload": {"x": 1}, "depends_on": ["c"]}
		]}`)
		assert.Equal(t, []string{"POST /api/users", "PATCH /api/users/999", "DELETE /api/users/2"}, api.take())
		require.NotNil(t, a.Responses[0].RolledBack)
		assert.True(t, *a.Responses[0].RolledBack)
	})

	t.Run("follow a next link", func(t *testing.T) {
		b.rest(t, `{"requests": [{"key": "c", "path": "users", "payload": {"name": "C"}}, {"key": "d", "path": "users", "payload": {"name": "D"}, "depends_on": ["c"]}]}`)
		api.take()
		a := b.rest(t, `{"requests": [
			{"key": "p1", "method": "GET", "path": "users?page=1"},
			{"key": "p2", "method": "GET", "path": "${p1.links.next}"},
			{"key": "p3", "method": "GET", "path": "${p2.links.next}", "when": "${p2.links.next} != null"}
		]}`)
		assert.Equal(t, []string{"GET /api/users?page=1", "GET /api/users?page=2"}, api.take(),
			"the link is a URL reference, not a segment: never /api/%2Fapi%2Fusers%3Fpage=2")
		assert.Equal(t, 204, a.Responses[2].Status, "no next page: the step was not run")
	})

	t.Run("404 is fine here", func(t *testing.T) {
		a := b.rest(t, `{"requests": [
			{"key": "gone", "method": "DELETE", "path": "users/999", "ok_status": [404]},
			{"key": "then", "method": "GET", "path": "users/1", "depends_on": ["gone"]},
			{"key": "strict", "method": "DELETE", "path": "users/998"},
			{"key": "after", "method": "GET", "path": "users/1", "depends_on": ["strict"]}
		]}`)
		assert.Equal(t, 404, a.Responses[0].Status, "the status it got")
		assert.Equal(t, 200, a.Responses[1].Status)
		assert.Equal(t, 404, a.Responses[2].Status)
		assert.Equal(t, 424, a.Responses[3].Status)
		assert.ElementsMatch(t, []string{"DELETE /api/users/999", "GET /api/users/1", "DELETE /api/users/998"}, api.take())
	})

	t.Run("upsert: create only if the look-up found nothing", func(t *testing.T) {
		upsert := `{"requests": [
			{"key": "look", "method": "GET", "path": "users/by-email?email=eve%40x"},
			{"key": "create", "path": "users", "when": "not exists ${look.0}", "payload": {"name": "Eve", "email": "eve@x"}},
			{"key": "update", "method": "PATCH", "path": "users/${look.0.id}", "when": "exists ${look.0}", "payload": {"name": "Eve 2"}}
		]}`
		a := b.rest(t, upsert)
		assert.Equal(t, []string{"GET /api/users/by-email?email=eve%40x", "POST /api/users"}, api.take())
		assert.Equal(t, []int{200, 201, 204}, []int{a.Responses[0].Status, a.Responses[1].Status, a.Responses[2].Status})
		a = b.rest(t, upsert)
		assert.Equal(t, []string{"GET /api/users/by-email?email=eve%40x", "PATCH /api/users/5"}, api.take())
		assert.Equal(t, []int{200, 204, 200}, []int{a.Responses[0].Status, a.Responses[1].Status, a.Responses[2].Status})
	})

	t.Run("for every item of a list", func(t *testing.T) {
		a := b.rest(t, `{"requests": [
			{"key": "list", "method": "GET", "path": "users?page=1"},
			{"key": "touch", "method": "PATCH", "path": "users/${item.id}", "for_each": "${list.data}", "payload": {"seen": "${index}", "was": "${item.name}"}},
			{"key": "n", "method": "GET", "path": "users/${touch.1.id}"}
		]}`)
		calls := api.last()
		api.take()
		var got []string
		for _, c := range calls {
			got = append(got, c.String()+" "+strings.TrimSpace(c.Body))
		}
		assert.ElementsMatch(t, []string{"GET /api/users?page=1 ",
			`PATCH /api/users/1 {"seen": 0, "was": "Ada L."}`, `PATCH /api/users/3 {"seen": 1, "was": "C"}`, "GET /api/users/3 "}, got)
		touch := a.Responses[1]
		assert.Equal(t, 200, touch.Status)
		require.Len(t, touch.Items, 2)
		assert.JSONEq(t, `{"id": 3, "name": "C", "seen": 1, "was": "C"}`, string(touch.Items[1].Response))
		var bodies []json.RawMessage
		require.NoError(t, json.Unmarshal(touch.Response, &bodies))
		assert.Len(t, bodies, 2)
	})

	t.Run("dry run sends nothing", func(t *testing.T) {
		for _, path := range []string{"/v1/batch?dry_run=true", "/v1/batch"} {
			body := `{"requests": [{"key": "a", "path": "users", "payload": {"name": "Z"}}, {"key": "b", "method": "GET", "path": "${a:headers.Location}"}]}`
			if path == "/v1/batch" {
				body = `{"dry_run": true, ` + body[1:]
			}
			status, _, out := b.post(t, path, body)
			require.Equal(t, 200, status, "%s", out)
			assert.JSONEq(t, `{"plan": {"steps": [
				{"key": "a", "method": "POST", "path": "users", "depends_on": [], "level": 0},
				{"key": "b", "method": "GET", "path": "${a:headers.Location}", "depends_on": ["a"], "level": 1}],
				"levels": 2, "critical_path": ["a", "b"]}}`, string(out))
		}
		assert.Empty(t, api.take(), "a dry run calls nothing")
		status, _, out := b.post(t, "/v1/batch?dry_run=true&debug=1", `[{"path": "users"}]`)
		assert.Equal(t, 400, status)
		assert.Contains(t, string(out), `unknown query parameter \"debug\" on POST /v1/batch; only dry_run is accepted`)
	})

	t.Run("form-encoded body", func(t *testing.T) {
		a := b.rest(t, `{"requests": [
			{"key": "u", "method": "GET", "path": "users/1"},
			{"key": "f", "path": "forms", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "payload": "id=${u.id}&name=Ada+L.&lit=$${x}"}
		]}`)
		calls := api.last()
		api.take()
		require.Len(t, calls, 2)
		assert.Equal(t, "application/x-www-form-urlencoded", calls[1].ContentType)
		assert.Equal(t, "id=1&name=Ada+L.&lit=${x}", calls[1].Body, "sent as is, not JSON-quoted")
		assert.JSONEq(t, `{"fields": {"id": ["1"], "name": ["Ada L."], "lit": ["${x}"]}}`, string(a.Responses[1].Response))
	})

	t.Run("errors that say what to fix", func(t *testing.T) {
		a := b.rest(t, `{"stop_on_error": true, "requests": [
			{"key": "bad", "method": "GET", "path": "users/404"},
			{"key": "next", "method": "GET", "path": "users/1", "depends_on": ["bad"]}
		]}`)
		assert.Contains(t, string(a.Responses[1].Response), "dependency bad failed")
		steps := make([]string, 51)
		for i := range steps {
			steps[i] = `{"path": "users"}`
		}
		status, _, out := b.post(t, "/v1/batch", "["+strings.Join(steps, ",")+"]")
		assert.Equal(t, 400, status)
		assert.Contains(t, string(out), "51 steps; at most 50 allowed (-max-steps): split the batch, raise -max-steps, or send the steps as a job (POST /v1/jobs)")
		api.take()
	})

	t.Run("an unreachable upstream is named", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		down := startChild(t, nil, bin, "-addr", "127.0.0.1:0", "-log-format", "json", "-upstream", "http://"+addr+"/api/")
		a := down.rest(t, `{"requests": [{"key": "x", "path": "users"}]}`)
		assert.Equal(t, 502, a.Responses[0].Status)
		assert.Contains(t, string(a.Responses[0].Response), "upstream unreachable: "+addr+": connection refused")
	})
}

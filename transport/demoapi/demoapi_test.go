package demoapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchd/batchd/transport/demoapi"
)

var clock = time.Unix(1758289402, 0)

func newAPI() *demoapi.API {
	return demoapi.New(demoapi.Config{Now: func() time.Time { return clock }})
}

// call sends one request to h and returns the status and the decoded body.
func call(t *testing.T, h http.Handler, method, path, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, rec.Body.String(), err)
	}
	return rec.Code, out
}

// mustAdd adds producers named names and returns their ids.
func mustAdd(t *testing.T, h http.Handler, names ...string) []int64 {
	t.Helper()
	var ids []int64
	for _, n := range names {
		b, _ := json.Marshal(map[string]string{"name": n})
		status, out := call(t, h, http.MethodPost, "/Producer/Add", string(b))
		if status != 200 || out["ok"] != true {
			t.Fatalf("Producer/Add %q: %d %v", n, status, out)
		}
		ids = append(ids, int64(out["result"].(map[string]any)["new_id"].(float64)))
	}
	return ids
}

// normalize turns a JSON text into the value encoding/json decodes, for comparison.
func normalize(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad want %q: %v", s, err)
	}
	return v
}

func TestMethods(t *testing.T) {
	// Every case starts from the same store: producers 1 "a", 2 "b", 3 "c", then 2 deleted (so ids are not dense).
	tests := []struct {
		name   string
		method string // HTTP method; default POST
		path   string
		body   string
		status int
		want   string // the whole answer, as JSON
	}{
		// Producer/Add
		{name: "add", path: "/Producer/Add", body: `{"name":"Coca-Cola"}`, status: 200,
			want: `{"ok":true,"result":{"new_id":4}}`},
		{name: "add ignores unknown fields", path: "/Producer/Add", body: `{"name":"x","extra":[1]}`, status: 200,
			want: `{"ok":true,"result":{"new_id":4}}`},
		{name: "add without name", path: "/Producer/Add", body: `{}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"name: required, a non-empty string"}}`},
		{name: "add empty name", path: "/Producer/Add", body: `{"name":""}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"name: required, a non-empty string"}}`},
		{name: "add null name", path: "/Producer/Add", body: `{"name":null}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"name: required, a non-empty string"}}`},
		{name: "add empty body", path: "/Producer/Add", body: ``, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"name: required, a non-empty string"}}`},
		{name: "add name of wrong type", path: "/Producer/Add", body: `{"name":5}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"name: expected string, got number"}}`},
		{name: "add malformed JSON", path: "/Producer/Add", body: `{"name":`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"malformed JSON payload at offset 8"}}`},
		{name: "add array payload", path: "/Producer/Add", body: `["x"]`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"payload must be a JSON object"}}`},
		{name: "add garbage", path: "/Producer/Add", body: `name=x`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"malformed JSON payload"}}`},

		// Producer/Get
		{name: "get all", path: "/Producer/Get", body: `{}`, status: 200,
			want: `{"ok":true,"result":[{"id":1,"name":"a","last_update":1758289402},{"id":3,"name":"c","last_update":1758289402}],"next_offset":0,"total":2}`},
		{name: "get empty body", path: "/Producer/Get", body: ``, status: 200,
			want: `{"ok":true,"result":[{"id":1,"name":"a","last_update":1758289402},{"id":3,"name":"c","last_update":1758289402}],"next_offset":0,"total":2}`},
		{name: "get by ids, sorted, repeated and unknown ids", path: "/Producer/Get", body: `{"ids":[3,2,1,3,99]}`, status: 200,
			want: `{"ok":true,"result":[{"id":1,"name":"a","last_update":1758289402},{"id":3,"name":"c","last_update":1758289402}],"next_offset":0,"total":2}`},
		{name: "get empty ids", path: "/Producer/Get", body: `{"ids":[]}`, status: 200,
			want: `{"ok":true,"result":[],"next_offset":0,"total":0}`},
		{name: "get first page", path: "/Producer/Get", body: `{"limit":1}`, status: 200,
			want: `{"ok":true,"result":[{"id":1,"name":"a","last_update":1758289402}],"next_offset":1,"total":2}`},
		{name: "get last page", path: "/Producer/Get", body: `{"limit":1,"offset":1}`, status: 200,
			want: `{"ok":true,"result":[{"id":3,"name":"c","last_update":1758289402}],"next_offset":0,"total":2}`},
		{name: "get past the end", path: "/Producer/Get", body: `{"offset":9223372036854775807,"limit":1000000}`, status: 200,
			want: `{"ok":true,"result":[],"next_offset":0,"total":2}`},
		{name: "get negative limit", path: "/Producer/Get", body: `{"limit":-1}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"limit: must not be negative"}}`},
		{name: "get negative offset", path: "/Producer/Get", body: `{"offset":-1}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"offset: must not be negative"}}`},
		{name: "get ids of strings", path: "/Producer/Get", body: `{"ids":["1"]}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"ids: expected integer, got string"}}`},
		{name: "get fractional limit", path: "/Producer/Get", body: `{"limit":1.5}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"limit: expected integer, got number 1.5"}}`},

		// Producer/Edit
		{name: "edit", path: "/Producer/Edit", body: `{"id":1,"name":"A"}`, status: 200,
			want: `{"ok":true,"result":{"row_affected":1,"ids":[1]}}`},
		{name: "edit absent", path: "/Producer/Edit", body: `{"id":2,"name":"B"}`, status: 200,
			want: `{"ok":true,"result":{"row_affected":0,"ids":[]}}`},
		{name: "edit without id", path: "/Producer/Edit", body: `{"name":"B"}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"id: required, an integer"}}`},
		{name: "edit without name", path: "/Producer/Edit", body: `{"id":1}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"name: required, a non-empty string"}}`},
		{name: "edit id as string", path: "/Producer/Edit", body: `{"id":"1","name":"B"}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"id: expected integer, got string"}}`},

		// Producer/Delete
		{name: "delete", path: "/Producer/Delete", body: `{"ids":[3,2,1,1]}`, status: 200,
			want: `{"ok":true,"result":{"row_affected":2,"ids":[3,1]}}`},
		{name: "delete none", path: "/Producer/Delete", body: `{"ids":[]}`, status: 200,
			want: `{"ok":true,"result":{"row_affected":0,"ids":[]}}`},
		{name: "delete without ids", path: "/Producer/Delete", body: `{}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"ids: required, an array of integers"}}`},
		{name: "delete ids not an array", path: "/Producer/Delete", body: `{"ids":1}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"ids: expected array, got number"}}`},

		// Demo/Echo
		{name: "echo object", path: "/Demo/Echo", body: `{"a":[1,"x",null],"b":{"c":true}}`, status: 200,
			want: `{"ok":true,"result":{"a":[1,"x",null],"b":{"c":true}}}`},
		{name: "echo empty", path: "/Demo/Echo", body: ``, status: 200,
			want: `{"ok":true,"result":null}`},
		{name: "echo malformed", path: "/Demo/Echo", body: `{"a"`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"malformed JSON payload"}}`},

		// Demo/Sleep
		{name: "sleep", path: "/Demo/Sleep", body: `{"ms":1}`, status: 200,
			want: `{"ok":true,"result":{"slept_ms":1}}`},
		{name: "sleep default", path: "/Demo/Sleep", body: `{}`, status: 200,
			want: `{"ok":true,"result":{"slept_ms":0}}`},
		{name: "sleep negative", path: "/Demo/Sleep", body: `{"ms":-5}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"ms: must not be negative"}}`},
		{name: "sleep ms as string", path: "/Demo/Sleep", body: `{"ms":"5"}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"ms: expected integer, got string"}}`},

		// Demo/Fail
		{name: "fail default", path: "/Demo/Fail", body: ``, status: 200,
			want: `{"ok":false,"result":{"error":1000,"description":"Demo/Fail: failure on request"}}`},
		{name: "fail as asked", path: "/Demo/Fail", body: `{"status":503,"error":7,"description":"down"}`, status: 503,
			want: `{"ok":false,"result":{"error":7,"description":"down"}}`},
		{name: "fail status clamped low", path: "/Demo/Fail", body: `{"status":42}`, status: 200,
			want: `{"ok":false,"result":{"error":1000,"description":"Demo/Fail: failure on request"}}`},
		{name: "fail status clamped high", path: "/Demo/Fail", body: `{"status":1000}`, status: 599,
			want: `{"ok":false,"result":{"error":1000,"description":"Demo/Fail: failure on request"}}`},
		{name: "fail status of wrong type", path: "/Demo/Fail", body: `{"status":"500"}`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"status: expected integer, got string"}}`},

		// Routing
		{name: "unknown method", path: "/Producer/Nope", body: `{}`, status: 404,
			want: `{"ok":false,"result":{"error":4040,"description":"unknown method \"Producer/Nope\""}}`},
		{name: "root", path: "/", body: `{}`, status: 404,
			want: `{"ok":false,"result":{"error":4040,"description":"unknown method \"\""}}`},
		{name: "trailing slash is another method", path: "/Producer/Add/", body: `{}`, status: 404,
			want: `{"ok":false,"result":{"error":4040,"description":"unknown method \"Producer/Add/\""}}`},
		{name: "case matters", path: "/producer/add", body: `{}`, status: 404,
			want: `{"ok":false,"result":{"error":4040,"description":"unknown method \"producer/add\""}}`},
		{name: "GET", method: http.MethodGet, path: "/Producer/Get", status: 405,
			want: `{"ok":false,"result":{"error":4050,"description":"Producer/Get accepts POST only"}}`},
		{name: "GET unknown", method: http.MethodGet, path: "/nope", status: 404,
			want: `{"ok":false,"result":{"error":4040,"description":"unknown method \"nope\""}}`},
		{name: "payload too large", path: "/Demo/Echo", body: `"` + strings.Repeat("x", demoapi.MaxPayloadBytes) + `"`, status: 200,
			want: `{"ok":false,"result":{"error":1008,"description":"payload larger than 1048576 bytes"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newAPI()
			mustAdd(t, api, "a", "b", "c")
			if status, _ := call(t, api, http.MethodPost, "/Producer/Delete", `{"ids":[2]}`); status != 200 {
				t.Fatal("setup: delete failed")
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			status, got := call(t, api, method, tt.path, tt.body)
			if status != tt.status {
				t.Errorf("status %d, want %d", status, tt.status)
			}
			if want := normalize(t, tt.want); !reflect.DeepEqual(got, want) {
				gj, _ := json.Marshal(got)
				t.Errorf("got  %s\nwant %s", gj, tt.want)
			}
		})
	}
}

func TestMethodNotAllowedSetsAllow(t *testing.T) {
	rec := httptest.NewRecorder()
	newAPI().ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/Producer/Add", nil))
	if rec.Code != 405 || rec.Header().Get("Allow") != "POST" {
		t.Fatalf("got %d, Allow %q; want 405, POST", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestEditUpdatesLastUpdate(t *testing.T) {
	now := clock
	var mu sync.Mutex
	api := demoapi.New(demoapi.Config{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	ids := mustAdd(t, api, "a")
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	call(t, api, http.MethodPost, "/Producer/Edit", `{"id":1,"name":"z"}`)
	_, out := call(t, api, http.MethodPost, "/Producer/Get", `{"ids":[1]}`)
	want := normalize(t, `{"ok":true,"result":[{"id":1,"name":"z","last_update":1758293002}],"next_offset":0,"total":1}`)
	if ids[0] != 1 || !reflect.DeepEqual(out, want) {
		t.Fatalf("got %v, want %v", out, want)
	}
}

func TestMountedUnderV1(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/v1/", http.StripPrefix("/v1", newAPI()))
	status, out := call(t, mux, http.MethodPost, "/v1/Demo/Echo", `{"x":1}`)
	if status != 200 || !reflect.DeepEqual(out, normalize(t, `{"ok":true,"result":{"x":1}}`)) {
		t.Fatalf("got %d %v", status, out)
	}
}

func TestSleepHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/Demo/Sleep", strings.NewReader(`{"ms":60000}`))
	rec := httptest.NewRecorder()
	start := time.Now()
	newAPI().ServeHTTP(rec, req)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Demo/Sleep returned after %v, want promptly after cancellation", d)
	}
	if strings.Contains(rec.Body.String(), `"ok":true`) {
		t.Fatalf("cancelled sleep answered %s", rec.Body.String())
	}
}

func TestSleepIsCapped(t *testing.T) {
	// A sleep over the cap is clamped, not refused; cancel it right away and read nothing more than that it started.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/Demo/Sleep", strings.NewReader(`{"ms":99999999999}`))
	rec := httptest.NewRecorder()
	newAPI().ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), `"error":4990`) {
		t.Fatalf("got %s", rec.Body.String())
	}
}

func TestMethodsList(t *testing.T) {
	got := demoapi.Methods()
	want := []string{"Demo/Create", "Demo/Echo", "Demo/Fail", "Demo/Form", "Demo/Page", "Demo/Producer", "Demo/Sleep", "Producer/Add", "Producer/Delete", "Producer/Edit", "Producer/Get"}
	if !slices.Equal(got, want) {
		t.Fatalf("Methods() = %v, want %v", got, want)
	}
	api := newAPI()
	for _, m := range got {
		if status, _ := call(t, api, http.MethodPost, "/"+m, `{}`); status == 404 {
			t.Errorf("listed method %s is not served", m)
		}
	}
}

func TestConcurrentAddsGetUniqueIDs(t *testing.T) {
	const workers, perWorker = 16, 50
	api := newAPI()
	var wg sync.WaitGroup
	ids := make([][]int64, workers)
	for w := range workers {
		wg.Go(func() {
			for range perWorker {
				req := httptest.NewRequest(http.MethodPost, "/Producer/Add", strings.NewReader(`{"name":"p"}`))
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, req)
				var out struct {
					Result struct {
						NewID int64 `json:"new_id"`
					} `json:"result"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
					t.Error(err)
					return
				}
				ids[w] = append(ids[w], out.Result.NewID)
				// Readers run alongside writers.
				api.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/Producer/Get", strings.NewReader(`{"limit":5}`)))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(ids...)
	slices.Sort(all)
	for i, id := range all {
		if id != int64(i+1) {
			t.Fatalf("ids are not 1..%d without gaps or repeats: at %d got %d", len(all), i, id)
		}
	}
	_, out := call(t, api, http.MethodPost, "/Producer/Get", `{}`)
	if out["total"] != float64(workers*perWorker) {
		t.Fatalf("total %v, want %d", out["total"], workers*perWorker)
	}
}

func TestPayloadOfUnknownLength(t *testing.T) {
	for _, tt := range []struct {
		size int
		want string
	}{
		{10, `"ok":true`},
		{demoapi.MaxPayloadBytes + 1, `payload larger than`},
	} {
		body := io.MultiReader(strings.NewReader(`"`), strings.NewReader(strings.Repeat("x", tt.size-2)), strings.NewReader(`"`))
		req := httptest.NewRequest(http.MethodPost, "/Demo/Echo", body)
		if req.ContentLength != -1 {
			t.Fatalf("ContentLength %d: the test needs an unknown length", req.ContentLength)
		}
		rec := httptest.NewRecorder()
		newAPI().ServeHTTP(rec, req)
		if !strings.Contains(rec.Body.String(), tt.want) {
			t.Errorf("size %d: got %.100s, want %s", tt.size, rec.Body.String(), tt.want)
		}
	}
}

func BenchmarkEcho(b *testing.B) {
	api := newAPI()
	payload := []byte(`{"name":"Coca-Cola","ids":[1,2,3]}`)
	b.Run("ServeHTTP", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/Demo/Echo", bytes.NewReader(payload))
			api.ServeHTTP(httptest.NewRecorder(), req)
		}
	})
}

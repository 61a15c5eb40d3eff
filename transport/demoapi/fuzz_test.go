package demoapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzServeHTTP: whatever payload a client sends to any demo method, the API answers without panicking, with a
// status it may use, and with a JSON object carrying a boolean "ok", or no body at all for 201 and 204 (the REST
// methods' Created and No Content).
func FuzzServeHTTP(f *testing.F) {
	for _, s := range []struct{ m, body string }{
		{"Producer/Add", `{"name":"Coca-Cola"}`}, {"Producer/Add", `{"name":""}`}, {"Producer/Add", `{"name":1}`},
		{"Producer/Get", `{"ids":[1,2],"limit":10,"offset":0}`}, {"Producer/Get", `{"limit":-1}`},
		{"Producer/Edit", `{"id":1,"name":"x"}`}, {"Producer/Delete", `{"ids":[1]}`}, {"Demo/Echo", `[1,{"a":null}]`},
		{"Demo/Sleep", `{"ms":0}`}, {"Demo/Fail", `{"status":503,"error":7,"description":"d"}`}, {"Demo/Fail", `{"status":99}`},
		{"Nope/Nope", `{}`}, {"Producer/Add", `{`}, {"Producer/Add", ""}, {"Demo/Echo", "\xff"},
	} {
		f.Add(s.m, []byte(s.body))
	}
	methods := Methods()
	f.Fuzz(func(t *testing.T, method string, body []byte) {
		api := New(Config{})
		for _, m := range append(methods, method) {
			if m == "Demo/Sleep" { // a fuzzer must not sleep (up to a minute); its payload handling is tested apart
				continue
			}
			w := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			req.URL.Path = "/" + m // set, not parsed: any method name a client may write
			api.ServeHTTP(w, req)
			status, out := w.Code, w.Body.Bytes()
			if status < 200 || status > 599 {
				t.Fatalf("%s: status %d", m, status)
			}
			if len(out) == 0 && (status == http.StatusCreated || status == http.StatusNoContent) {
				continue
			}
			var ans struct {
				OK *bool `json:"ok"`
			}
			if err := json.Unmarshal(out, &ans); err != nil || ans.OK == nil {
				t.Fatalf("%s %q: answer %q is not a JSON object with a boolean ok (%v)", m, body, out, err)
			}
		}
	})
}

package ui_test

import (
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/transport"
)

// get fetches base+p without following redirects.
func get(t *testing.T, base, p string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+p, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

// references are the files a page or script loads: src and href attributes, and the modules a script imports.
var references = regexp.MustCompile(`(?:src|href)="([^"#]+)"|from '\./([^']+)'`)

// TestPagesServeEveryFileTheyLoad crawls the pages from /ui/ and /ui/jobs through batchd's routes: every file a
// page or script loads is served with its type and the security headers; every embedded file is reached; nothing
// is loaded from another origin.
func TestPagesServeEveryFileTheyLoad(t *testing.T) {
	base := startBatchd(t)
	seen := map[string]bool{}
	queue := []string{"/ui/", "/ui/jobs"}
	wantType := map[string]string{".js": "javascript", ".css": "text/css", "": "text/html"}
	for len(queue) > 0 && len(seen) < 50 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		resp, body := get(t, base, p, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", p, body)
		assert.Contains(t, resp.Header.Get("Content-Type"), wantType[path.Ext(p)], p)
		assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'", p)
		assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'", p)
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), p)
		assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"), p)
		require.NotEmpty(t, resp.Header.Get("ETag"), p)

		again, _ := get(t, base, p, http.Header{"If-None-Match": {resp.Header.Get("ETag")}})
		assert.Equal(t, http.StatusNotModified, again.StatusCode, "%s: revalidation by ETag", p)

		for _, m := range references.FindAllStringSubmatch(string(body), -1) {
			ref := m[1] + m[2]
			if ref == "data:," || ref == "./" || ref == "jobs" {
				continue // the empty icon, and the links between the two pages (crawled already)
			}
			require.NotContains(t, ref, "//", "%s loads %s from another origin", p, ref)
			dir := "/ui/"
			if strings.HasPrefix(p, "/ui/assets/") {
				dir = "/ui/assets/"
			}
			queue = append(queue, path.Join(dir, ref))
		}
	}
	entries, err := os.ReadDir("assets")
	require.NoError(t, err)
	for _, e := range entries {
		name := "/ui/assets/" + e.Name()
		switch e.Name() {
		case "index.html":
			name = "/ui/"
		case "jobs.html":
			name = "/ui/jobs"
		}
		assert.True(t, seen[name], "%s is embedded but no page loads it", e.Name())
	}
}

// TestAssetsLoadNothingFromElsewhere: no file of the pages names another origin (the SVG namespace is a name, not
// a load), and no script turns text into markup or code, so that a step's response is always shown as text.
func TestAssetsLoadNothingFromElsewhere(t *testing.T) {
	files, err := filepath.Glob("assets/*")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range url.FindAllString(string(b), -1) {
			assert.Equal(t, "http://www.w3.org", m, "%s names another origin", f)
		}
		if filepath.Ext(f) == ".js" {
			for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
				assert.NotContains(t, string(b), sink, "%s", f)
			}
		}
	}
}

func TestRedirectAndNotFound(t *testing.T) {
	base := startBatchd(t)
	for p, want := range map[string]string{"/ui": "ui/", "/ui?id=job-1": "ui/?id=job-1"} {
		resp, _ := get(t, base, p, nil)
		assert.Equal(t, http.StatusMovedPermanently, resp.StatusCode, p)
		assert.Equal(t, want, resp.Header.Get("Location"), p)
	}
	for _, p := range []string{"/ui/nope", "/ui/assets/", "/ui/assets/nope.js", "/ui/assets/index.html", "/ui/jobs/x"} {
		resp, body := get(t, base, p, nil)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, p)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"), p)
		assert.Contains(t, string(body), `"error":4040`, p)
	}
}

// TestAnswersMatchTheSpec checks batchd's real answers under /ui against the OpenAPI document it serves.
func TestAnswersMatchTheSpec(t *testing.T) {
	for _, mt := range []string{"text/html", "text/javascript", "text/css"} { // this test binary's, read as text
		openapi3filter.RegisterBodyDecoder(mt, openapi3filter.PlainBodyDecoder)
	}
	doc, err := openapi3.NewLoader().LoadFromData(transport.OpenAPI())
	require.NoError(t, err)
	require.NoError(t, doc.Validate(t.Context()))
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	base := startBatchd(t)
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	for _, p := range []string{"/ui", "/ui/", "/ui/jobs", "/ui/assets/inspector.js", "/ui/assets/style.css", "/ui/assets/nope.js"} {
		resp, body := get(t, base, p, nil)
		req, err := http.NewRequest(http.MethodGet, "http://localhost"+p, nil)
		require.NoError(t, err)
		route, params, err := router.FindRoute(req)
		require.NoError(t, err, "the spec has no operation for GET %s", p)
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
		require.NoError(t, openapi3filter.ValidateRequest(t.Context(), in), p)
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
			Header: resp.Header, Options: opts}
		out.SetBodyBytes(body)
		assert.NoError(t, openapi3filter.ValidateResponse(t.Context(), out), "GET %s answered %d", p, resp.StatusCode)
	}
}

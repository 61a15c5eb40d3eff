// Package ui is the batch inspector: the browser pages batchd serves under /ui/, for a person trying a batch out.
//
//   - GET /ui/ is the inspector: paste or load a batch, draw its dry-run plan as a graph by level (its critical path
//     marked), run it with timings, and see each step's status on the graph, its response on click and a timeline
//     of when each step was queued, started and ended; a refused batch lists its problems.
//   - GET /ui/jobs is the jobs page: a job's progress, rate and per-line failures, read from the jobs API.
//   - GET /ui/assets/<file> are their scripts and style sheet.
//
// The pages are static files embedded in the binary: no CDN, no build step. They call batchd's public endpoints
// (POST /v1/batch, GET /v1/jobs/…) from the browser, relative to their own address, so they hold no privilege of
// their own and keep working behind a proxy that mounts batchd under a prefix. Every answer carries a
// Content-Security-Policy that allows only these files and requests to the same origin: a step's response is data,
// shown as text, never markup or script.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/batchd/batchd/internal/errcode"
)

//go:embed assets
var assets embed.FS

// securityPolicy allows the pages' own files and requests to their own origin, nothing inline, no framing.
const securityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one embedded file as served.
type file struct {
	name        string // for http.ServeContent's range and content type logic
	body        []byte
	contentType string
	etag        string
}

// Handler serves the pages relative to where it is mounted: "/" the inspector, "/jobs" the jobs page,
// "/assets/<file>" their files, and "" (the mount point without its slash) a redirect to "/". batchd mounts it at
// /ui with http.StripPrefix("/ui", Handler()). Anything else is a 404 ErrorResult, as on every other route.
func Handler() http.Handler {
	files := map[string]*file{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		files["/"+p] = &file{name: path.Base(p), body: body, contentType: ct,
			etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("ui: embedded assets unreadable: " + err.Error()) // the embed is part of the binary: a build defect
	}
	// The pages are served at clean addresses; their files keep the names they have in assets/.
	files["/"] = files["/assets/index.html"]
	files["/jobs"] = files["/assets/jobs.html"]
	delete(files, "/assets/index.html")
	delete(files, "/assets/jobs.html")
	return handler(files)
}

type handler map[string]*file

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "" {
		// "/ui" → "/ui/", written relative so that it holds under any prefix a proxy adds.
		target := "ui/"
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		// Set by hand: http.Redirect would make the target absolute.
		w.Header().Set("Location", target)
		w.WriteHeader(http.StatusMovedPermanently)
		return
	}
	f := h[r.URL.Path]
	if f == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write(errcode.Body(errcode.NotFound, "no such page: "+strings.TrimPrefix(r.URL.Path, "/")+
			"; the inspector is at /ui/ and the jobs page at /ui/jobs"))
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", f.contentType)
	hd.Set("Content-Security-Policy", securityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	// Revalidated on every load (a cheap 304 by ETag), so a new batchd's pages are never mixed with old scripts.
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Etag", f.etag)
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}

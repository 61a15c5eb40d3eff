package transport

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/batchd/batchd/planner"
)

// FuzzClientHeaders: the Accept and Content-Type parsers never panic on what a client sends, and their answers
// keep the rules of content negotiation whatever the header holds:
//   - an Accept streams only when it names application/x-ndjson;
//   - an Accept split over several header lines means what the same values joined by commas mean, and a value
//     repeated changes nothing;
//   - naming application/json as well never makes an answer stream that did not, and naming application/x-ndjson
//     as well never stops one that did;
//   - a Content-Type is JSON only when it is absent or its media type is application/json or application/…+json.
func FuzzClientHeaders(f *testing.F) {
	for _, s := range []string{"", "application/x-ndjson", "application/json, application/x-ndjson;q=0.5",
		"application/x-ndjson;q=0", "*/*;q=0.1, application/x-ndjson", "text/html;;q=", "application/vnd.x+json; charset=utf-8",
		"application/x-ndjson;q=2", "APPLICATION/JSON"} {
		f.Add(s)
	}
	const json, ndjson = "application/json", MIMENDJSON
	f.Fuzz(func(t *testing.T, h string) {
		stream := WantsStream([]string{h})
		if stream && !strings.Contains(strings.ToLower(h), ndjson) {
			t.Fatalf("Accept %q streams without naming %s", h, ndjson)
		}
		if got := WantsStream([]string{h, h}); got != stream {
			t.Fatalf("Accept %q streams %v, twice %v", h, stream, got)
		}
		if split, joined := WantsStream([]string{h, json}), WantsStream([]string{h + "," + json}); split != joined {
			t.Fatalf("Accept %q and %q on two lines streams %v, joined %v", h, json, split, joined)
		}
		if WantsStream([]string{h, json}) && !stream {
			t.Fatalf("Accept %q does not stream, but does with %q added", h, json)
		}
		if stream && !WantsStream([]string{h, ndjson}) {
			t.Fatalf("Accept %q streams, but not with %q added", h, ndjson)
		}

		if planner.JSONMediaType(h) && strings.TrimSpace(h) != "" {
			mt, _, _ := strings.Cut(h, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			if mt != json && (!strings.HasPrefix(mt, "application/") || !strings.HasSuffix(mt, "+json")) {
				t.Fatalf("Content-Type %q taken for JSON (media type %q)", h, mt)
			}
		}
	})
}

// FuzzDryRunQuery: whatever query string a client sends to POST /v1/batch, it is accepted only when every parameter
// is dry_run, given once, with a boolean value, and then its value is that boolean; anything else is refused with a
// problem that says what to fix. flagQuery reads the wait of GET /v1/jobs/{id}/results the same way.
func FuzzDryRunQuery(f *testing.F) {
	for _, s := range []string{"", "dry_run=true", "dry_run=1", "dry_run=false", "dry_run=yes", "dry_run", "x=1",
		"dry_run=true&dry_run=false", "dry_run=true&x", "%zz", "dry%5Frun=true", ";", "&&", "dry_run=TRUE"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		dry, problem := flagQuery(raw, "dry_run", "POST /v1/batch")
		q, err := url.ParseQuery(raw)
		want := err == nil
		for name, vs := range q {
			if name != "dry_run" || len(vs) != 1 {
				want = false
				continue
			}
			if _, perr := strconv.ParseBool(vs[0]); perr != nil {
				want = false
			}
		}
		if (problem == "") != want {
			t.Fatalf("flagQuery(%q) = %v, %q; want accepted=%v", raw, dry, problem, want)
		}
		if problem == "" && dry {
			if v, _ := strconv.ParseBool(q.Get("dry_run")); !v {
				t.Fatalf("flagQuery(%q) says dry run", raw)
			}
		}
	})
}

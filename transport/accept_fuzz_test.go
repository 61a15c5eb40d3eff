package transport

import "testing"

// FuzzClientHeaders: the Accept and Content-Type parsers never panic on what a client sends, and an Accept that
// names only application/x-ndjson always streams.
func FuzzClientHeaders(f *testing.F) {
	for _, s := range []string{"", "application/x-ndjson", "application/json, application/x-ndjson;q=0.5",
		"application/x-ndjson;q=0", "*/*;q=0.1, application/x-ndjson", "text/html;;q=", "application/vnd.x+json; charset=utf-8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		WantsStream([]string{h})
		WantsStream([]string{h, h})
		isJSON(h)
		if !WantsStream([]string{"application/x-ndjson"}) {
			t.Fatal("a bare application/x-ndjson must stream")
		}
	})
}

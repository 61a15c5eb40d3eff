package transport

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/batchd/batchd/errcode"
)

// NormalizeBody turns an API's response body into the JSON value a step result carries (CONTRACT.md §6):
//
//   - a body that is empty or only whitespace becomes null;
//   - a body whose content type is JSON (application/json, any +json type) or absent, and that parses as JSON, is
//     returned as is — except that invalid UTF-8 inside its strings is replaced by U+FFFD, so that every consumer
//     (including strict decoders) can read it;
//   - anything else (HTML, text, invalid JSON, JSON sent as text/plain) becomes a JSON string holding the body,
//     with invalid UTF-8 replaced.
//
// The result is always valid JSON. It may share memory with body.
func NormalizeBody(contentType string, body []byte) []byte {
	if isBlank(body) {
		return []byte("null")
	}
	if isJSONType(contentType) && json.Valid(body) {
		if !utf8.Valid(body) {
			// Outside strings JSON is ASCII, so invalid bytes can only sit inside strings: replacing them keeps
			// the document valid.
			return bytes.ToValidUTF8(body, []byte("\uFFFD"))
		}
		return body
	}
	return errcode.AppendString(make([]byte, 0, len(body)+2), string(body))
}

func isBlank(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	return true
}

// isJSONType reports whether a Content-Type header names JSON, or is absent. It does not allocate: it runs for
// every step.
func isJSONType(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	if ct == "" {
		return true
	}
	slash := strings.IndexByte(ct, '/')
	if slash < 0 {
		return false
	}
	typ, sub := ct[:slash], ct[slash+1:]
	if strings.EqualFold(typ, "application") && strings.EqualFold(sub, "json") {
		return true
	}
	// RFC 6839 structured syntax suffix: application/problem+json, application/vnd.api+json, …
	const suffix = "+json"
	return len(sub) > len(suffix) && strings.EqualFold(sub[len(sub)-len(suffix):], suffix)
}
